"""ONNX face recognizers: the ``onnx:<path>`` registry family and the class others build on.

Both run through :mod:`facebench.models.onnx_torch`, so they are PyTorch modules with
gradients to the input, like every other recognizer. The ArcFace convention is assumed: a
112x112 RGB chip aligned to the 5-point template, 0-255 pixels normalised as
(x - 127.5) / 127.5, unless the graph starts with its own Sub/Mul/Div/Add by constants (as
SFace's and old MXNet exports do), in which case it gets 0-255 pixels as they are.

``insightface:`` (the model packs, downloaded) lives in :mod:`.insightface_zoo`.
"""
from __future__ import annotations

import functools
import hashlib
import re
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
