"""ONNX face recognizers as registry families: ``onnx:<path>`` and ``insightface:<pack>/<model>``.

Both run through :mod:`facebench.models.onnx_torch`, so they are PyTorch modules with
gradients to the input, like every other recognizer. The ArcFace convention is assumed: a
112x112 RGB chip aligned to the 5-point template, 0-255 pixels normalised as
(x - 127.5) / 127.5, unless the graph starts with its own Sub/Mul/Div/Add by constants (as
SFace's and old MXNet exports do), in which case it gets 0-255 pixels as they are.

``insightface:`` downloads an official model pack from insightface's GitHub release once
(sha256-pinned, with pooch), keeps only the recognizer's ``.onnx`` under
``<models root>/insightface/<pack>/`` (``FACEBENCH_MODELS`` moves that root) and deletes the
zip. The insightface packs are for non-commercial research only.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from facebench.errors import FacebenchError
from facebench.recognizer import Recognizer
from facebench.registry import RECOGNIZERS

from .onnx_torch import OnnxModule, Plan, load_plan

ARCFACE_SIZE = (112, 112)
ARCFACE_MEAN, ARCFACE_STD = 127.5, 127.5
_AFFINE_OPS = ("Sub", "Add", "Mul", "Div")


def graph_normalisation(plan: Plan) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(mean, std) on the 0-255 scale that the graph applies itself, or None.

    Follows the chain of Sub/Add/Mul/Div-by-a-constant (scalar or per-channel) nodes that
    start at the input and folds it into one ``(x - mean) / std``."""
    if len(plan.inputs) != 1:
        return None
    name, scale, shift, found = plan.inputs[0], np.ones(3), np.zeros(3), False
    while True:
        users = [s for s in plan.steps if name in s.inputs]
        if len(users) != 1 or users[0].op_type not in _AFFINE_OPS:
            break
        step = users[0]
        other = [i for i in step.inputs if i != name]
        if len(other) != 1 or other[0] not in plan.constants:
            break
        if step.op_type in ("Sub", "Div") and step.inputs[0] != name:
            break  # c - x or c / x: not a normalisation
        c = plan.constants[other[0]].detach().double()
        if c.numel() == 1:
            c = np.full(3, float(c.reshape(())))
        elif c.numel() == 3 and c.dim() >= 3 and tuple(c.shape[-3:]) == (3, 1, 1):
            c = c.reshape(3).numpy()
        else:
            break
        if step.op_type == "Sub":
            shift = shift - c
        elif step.op_type == "Add":
            shift = shift + c
        elif step.op_type == "Mul":
            scale, shift = scale * c, shift * c
        else:
            scale, shift = scale / c, shift / c
        name, found = step.outputs[0], True
    if not found:
        return None
    return -shift / scale, 1.0 / scale


def _per_channel(value, what: str) -> torch.Tensor:
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64)).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3:
        raise FacebenchError(f"{what} must be one value or three (R, G, B), got {arr.size}")
    return torch.tensor(arr, dtype=torch.float32).view(1, 3, 1, 1)


class OnnxRecognizer(Recognizer):
    """An ArcFace-convention ONNX recognizer run as PyTorch: [0, 1] RGB in, embedding out.

    ``forward`` scales to 0-255, optionally swaps to BGR, applies ``(x - mean) / std`` (on
    the 0-255 scale; skipped when the graph normalises itself and no override was given)
    and runs the graph. Subclasses say where the file is by overriding :meth:`locate`.
    """

    #: images per pass through the graph (a batch is split; results are per image anyway)
    forward_chunk = 8
    alignment = "arcface-5pt"
    detect_alignment = "arcface-5pt"
    fixed_alignment = "arcface-fixed"
    input_size = ARCFACE_SIZE
    #: file used when no path is given (the ``onnx:`` family sets it per name)
    onnx_path: Optional[str] = None
    #: defaults of the constructor's keyword arguments (the ``onnx:`` family sets them)
    onnx_options: Dict[str, object] = {}

    def __init__(self, path=None, *, input_size=None, mean=None, std=None, bgr=None):
        super().__init__()
        opts = dict(self.onnx_options)
        for key, value in (("input_size", input_size), ("mean", mean), ("std", std),
                           ("bgr", bgr)):
            if value is not None:
                opts[key] = value
        path = Path(path) if path is not None else self.locate()
        plan = load_plan(path)
        if len(plan.inputs) != 1:
            raise FacebenchError(f"{path}: a recognizer graph takes one image input, this one "
                                 f"takes {len(plan.inputs)} ({', '.join(plan.inputs)})")
        self.input_size = self._input_size(plan, opts.get("input_size"), path)
        self.graph_norm = graph_normalisation(plan)
        if "mean" in opts or "std" in opts or self.graph_norm is None:
            self.register_buffer("mean", _per_channel(opts.get("mean", ARCFACE_MEAN), "mean"))
            self.register_buffer("std", _per_channel(opts.get("std", ARCFACE_STD), "std"))
        else:  # the graph normalises 0-255 pixels itself
            self.mean = self.std = None
        self.bgr = bool(opts.get("bgr", False))
        self.graph = OnnxModule(plan)
        self.embedding_dim = self._embedding_dim(plan)
        self.eval()

    @classmethod
    def locate(cls) -> Path:
        """The ONNX file to load when no path is given."""
        if cls.onnx_path is None:
            raise FacebenchError(f"{cls.__name__} needs the path of an ONNX file")
        return Path(cls.onnx_path)

    @staticmethod
    def _input_size(plan: Plan, wanted, path) -> Tuple[int, int]:
        shape = plan.input_shapes[0]
        if len(shape) not in (0, 4) or (len(shape) == 4 and shape[1] not in (3, None)):
            raise FacebenchError(f"{path}: input {plan.inputs[0]!r} has shape {shape}, "
                                 "expected N x 3 x H x W")
        fixed = tuple(shape[2:]) if len(shape) == 4 and None not in shape[2:] else None
        if wanted is not None:
            wanted = tuple(int(v) for v in wanted)
            if fixed is not None and wanted != fixed:
                raise FacebenchError(f"{path} takes {fixed[0]}x{fixed[1]} inputs; "
                                     f"cannot run it at {wanted[0]}x{wanted[1]}")
            return wanted
        return fixed or ARCFACE_SIZE

    def _embedding_dim(self, plan: Plan) -> int:
        shape = plan.output_shapes[0] if plan.output_shapes else ()
        if len(shape) == 2 and shape[1]:
            return int(shape[1])
        with torch.no_grad():  # symbolic output size: ask the graph once
            return int(self(torch.zeros(1, 3, *self.input_size)).shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != tuple(self.input_size):
            h, w = self.input_size
            raise FacebenchError(f"{getattr(self, 'registry_name', type(self).__name__)} "
                                 f"expects N x 3 x {h} x {w} RGB in [0, 1]; got shape "
                                 f"{tuple(x.shape)}")
        x = x * 255.0
        if self.bgr:
            x = x.flip(1)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        if x.shape[0] <= self.forward_chunk:
            return self.graph(x)
        # ArcFace-style nets at 112 px carry wide full-resolution activations through
        # batch norm and PReLU, which are memory-bound: in small chunks they stay in cache
        # (SFace, one thread: 32 at once 0.21 s/img forward+backward, chunks of 4-8 ~0.07)
        return torch.cat([self.graph(part) for part in x.split(self.forward_chunk)])


def _subclass(base: type, name: str, description: str, attrs: dict) -> type:
    """A registry member class made at lookup; cache keys hash ``base``'s source."""
    slug = re.sub(r"\W", "_", name)
    cls = type(f"{base.__name__}_{slug}", (base,),
               {"__module__": base.__module__, "__qualname__": base.__qualname__, **attrs})
    cls.registry_name = name
    cls.registry_description = description
    return cls


# ---------------------------------------------------------------- onnx:<path>[?options]

_OPTION_KEYS = ("size", "mean", "std", "bgr", "align")


def parse_onnx_name(rest: str) -> Tuple[Path, Dict[str, object]]:
    """``<path>[?size=112x112&mean=127.5&std=127.5&bgr=0&align=arcface-5pt]`` -> path, opts."""
    path, _, query = rest.partition("?")
    if not path:
        raise FacebenchError("onnx:<path> needs the path of an .onnx file")
    opts: Dict[str, object] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or key not in _OPTION_KEYS:
            raise FacebenchError(f"onnx: option {item!r} is not one of "
                                 f"{', '.join(k + '=' for k in _OPTION_KEYS)}")
        try:
            if key == "size":
                h, _, w = value.lower().partition("x")
                opts["input_size"] = (int(h), int(w or h))
            elif key in ("mean", "std"):
                opts[key] = [float(v) for v in value.split(",")]
            elif key == "bgr":
                if value.lower() not in ("0", "1", "true", "false"):
                    raise ValueError(value)
                opts["bgr"] = value.lower() in ("1", "true")
            else:
                opts["alignment"] = value
        except ValueError:
            raise FacebenchError(f"onnx: option {item!r} has a bad value") from None
    return Path(path).expanduser(), opts


_ONNX_CLASSES: Dict[str, type] = {}


def onnx_family(rest: str) -> type:
    """``onnx:<path>`` -> an :class:`OnnxRecognizer` class for that file (graph read now,
    so a bad path or an unsupported op fails at lookup, before any image is decoded)."""
    if rest in _ONNX_CLASSES:
        return _ONNX_CLASSES[rest]
    path, opts = parse_onnx_name(rest)
    if not path.is_file():
        raise FacebenchError(f"recognizer onnx:{rest}: ONNX file {path} not found")
    plan = load_plan(path)
    alignment = opts.pop("alignment", OnnxRecognizer.alignment)
    size = OnnxRecognizer._input_size(plan, opts.get("input_size"), path)
    out = plan.output_shapes[0] if plan.output_shapes else ()
    attrs = {"onnx_path": str(path.resolve()), "onnx_options": opts, "input_size": size,
             "alignment": alignment}
    if len(out) == 2 and out[1]:
        attrs["embedding_dim"] = int(out[1])
    cls = _subclass(OnnxRecognizer, f"onnx:{rest}", f"ONNX recognizer {path.name}", attrs)
    _ONNX_CLASSES[rest] = cls
    return cls


RECOGNIZERS.register_prefix(
    "onnx", onnx_family,
    "any ArcFace-convention ONNX recognizer file, run as PyTorch (licence: the file's own): "
    "onnx:<path>[?size=112x112&mean=127.5&std=127.5&bgr=0&align=arcface-5pt]")


# ---------------------------------------------------------------- insightface:<pack>/<model>

RELEASE = "https://github.com/deepinsight/insightface/releases/download/v0.7"


@dataclass(frozen=True)
class Pack:
    """An insightface model pack: the zip's sha256 and its recognizers' .onnx sha256s."""

    sha256: str
    recognizers: Dict[str, str] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"{RELEASE}/{name}.zip"


# The digests were NOT computed here (this project was written offline). They are the values
# that several unrelated public projects pin for these exact v0.7 release assets (found by
# code search, all agreeing); pooch refuses a download that does not match, and a wrong pin
# would show up as that one clear error on the first download.
PACKS: Dict[str, Pack] = {
    "buffalo_l": Pack(
        "80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f",
        {"w600k_r50": "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43"}),
    "buffalo_sc": Pack(
        "57d31b56b6ffa911c8a73cfc1707c73cab76efe7f13b675a05223bf42de47c72",
        {"w600k_mbf": "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f"}),
    "antelopev2": Pack(
        "8e182f14fc6e80b3bfa375b33eb6cff7ee05d8ef7633e738d1c89021dcf0c5c5",
        {"glintr100": "4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf"}),
}
INSIGHTFACE_LICENCE = "insightface's pretrained models: non-commercial research use only"
MAX_MODEL_BYTES = 1 << 30  # no recognizer in a pack comes near 1 GB: a bigger member is refused


def insightface_dir() -> Path:
    """``<models root>/insightface``, where packs' recognizers are kept."""
    from facebench.paths import models_root

    return models_root() / "insightface"


@functools.lru_cache(maxsize=8)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_matches(path: Path, sha256: str) -> bool:
    st = path.stat()
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns) == sha256


def _copy_member(archive: Path, want: str, part: Path) -> None:
    """Write the archive's one file named ``want`` (in any folder) to ``part``, at most
    :data:`MAX_MODEL_BYTES` whatever its header claims."""
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()
                   and m.filename.replace("\\", "/").rsplit("/", 1)[-1] == want]
        if len(members) != 1:
            raise FacebenchError(f"{archive} holds {len(members)} files named {want}, "
                                 "expected one")
        member, copied = members[0], 0
        if member.file_size > MAX_MODEL_BYTES:
            raise FacebenchError(f"{archive}: {member.filename} claims {member.file_size} "
                                 "bytes; refusing it")
        with zf.open(member) as src, open(part, "wb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                copied += len(block)
                if copied > MAX_MODEL_BYTES:
                    raise FacebenchError(f"{archive}: {member.filename} is larger than it "
                                         "claims; refusing it")
                out.write(block)


def _extract_model(archive: Path, model: str, target: Path, sha256: str) -> None:
    """Copy the pack's ``<model>.onnx`` to ``target``: the member's own path is never used
    (so it cannot point outside), its size is capped, its sha256 is checked, and a failure
    leaves nothing behind."""
    want = f"{model}.onnx"
    part = target.with_name(target.name + ".part")
    try:
        _copy_member(archive, want, part)
        if not sha256_matches(part, sha256):
            raise FacebenchError(f"{want} in {archive} does not have the expected sha256 "
                                 f"{sha256}")
    except (zipfile.BadZipFile, OSError) as err:
        part.unlink(missing_ok=True)
        raise FacebenchError(f"cannot extract {want} from {archive}: {err}") from None
    except FacebenchError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)


def ensure_insightface_model(pack: str, model: str) -> Path:
    """The verified ``.onnx`` of ``pack``'s ``model``, downloading the pack if needed.

    Looked up in ``<models root>/insightface/<pack>/`` and insightface's own cache
    (``~/.insightface/models/<pack>/``) before any download."""
    from facebench.data.download import RemoteFile, fetch_file, make_dir

    info = PACKS[pack]
    sha = info.recognizers[model]
    root = insightface_dir()
    target = root / pack / f"{model}.onnx"
    for candidate in (target, Path.home() / ".insightface" / "models" / pack / target.name):
        if candidate.is_file():
            if sha256_matches(candidate, sha):
                return candidate
            if candidate == target:
                raise FacebenchError(f"{target} does not have the sha256 of insightface's "
                                     f"{pack} release ({sha}); delete it to download again")
    make_dir(root)
    hint = (f"offline, put {pack}.zip (sha256 {info.sha256}) in {root}, or its "
            f"{target.name} at {target} (FACEBENCH_MODELS moves {root.parent})")
    archive = fetch_file(RemoteFile(f"{pack}.zip", info.url(pack), info.sha256), root,
                         label=f"insightface:{pack}/{model}: model pack",
                         hint=hint)
    make_dir(target.parent)
    _extract_model(Path(archive), model, target, sha)
    Path(archive).unlink()  # only the recognizer is kept; the zip is ~5x its size
    return target


class InsightFaceRecognizer(OnnxRecognizer):
    """An insightface pack's recognizer (ArcFace convention, 512-D, 112x112)."""

    embedding_dim = 512
    pack: str = ""
    model: str = ""

    @classmethod
    def locate(cls) -> Path:
        return ensure_insightface_model(cls.pack, cls.model)


_INSIGHTFACE_CLASSES: Dict[str, type] = {}


def insightface_family(rest: str) -> type:
    """``insightface:<pack>/<model>`` -> its class; nothing is downloaded until it is built."""
    pack, _, model = rest.partition("/")
    model = model[:-5] if model.endswith(".onnx") else model
    if pack not in PACKS:
        raise FacebenchError(f"unknown insightface pack {pack!r}; facebench pins "
                             f"{', '.join(sorted(PACKS))} (or load any file with onnx:<path>)")
    models = PACKS[pack].recognizers
    if model not in models:
        raise FacebenchError(f"insightface:{rest}: {pack}'s recognizer is "
                             f"{' or '.join(pack + '/' + m for m in sorted(models))} "
                             "(its other files are detectors and landmark models)")
    name = f"insightface:{pack}/{model}"
    if name not in _INSIGHTFACE_CLASSES:
        _INSIGHTFACE_CLASSES[name] = _subclass(
            InsightFaceRecognizer, name,
            f"insightface {pack}/{model}, 512-D ArcFace ({INSIGHTFACE_LICENCE})",
            {"pack": pack, "model": model})
    return _INSIGHTFACE_CLASSES[name]


RECOGNIZERS.register_prefix(
    "insightface", insightface_family,
    f"insightface model-pack recognizers, downloaded once, sha256-pinned "
    f"({INSIGHTFACE_LICENCE}): insightface:<pack>/<model> for "
    f"{', '.join(f'{p}/{m}' for p in sorted(PACKS) for m in sorted(PACKS[p].recognizers))}")
