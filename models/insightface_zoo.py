"""``insightface:<pack>/<model>``: the recognizers of insightface's official model packs.

A pack is downloaded from insightface's GitHub release once (sha256-pinned, with pooch); only
the recognizer's ``.onnx`` is kept, under ``<models root>/insightface/<pack>/``
(``FACEBENCH_MODELS`` moves that root), and the zip is deleted. It then runs like any
``onnx:`` file (:mod:`.onnx_zoo`). The insightface packs are for non-commercial research only.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict

from facebench.errors import FacebenchError
from facebench.registry import RECOGNIZERS

from .onnx_zoo import OnnxRecognizer, _subclass, sha256_matches

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
