"""Committed purifier weights: an fp16 copy of a training run that ships with the code.

A training folder holds ``model.pt`` in fp32 (about 100 MB for SIDE) and ``eigen.pt`` (75 MB).
The committed copy under ``weights/<defense>/`` keeps only the network in fp16 and the run's
manifest and log, so ``facebench run --defense side`` works on a fresh checkout without
training. The eigenbasis is not committed: it is recomputed, deterministically, from the
LFW training images the manifest names (then cached like any other basis), and the sha256
of that image list must match the one recorded at training time.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path

import torch

from .eigenfaces import EigenBasis, save_atomic
from .errors import FacebenchError

WEIGHTS_PACKAGE = "facebench.weights"
MANIFEST = "manifest.json"
# run-manifest entries that describe the training machine, not the model
_MACHINE_KEYS = (("eigen", "cache_file"), ("data", "lfw_home"), ("files", "checkpoint"),
                 ("files", "eigen"))


def committed_dir(defense: str) -> Path | None:
    """``weights/<defense>/`` of this installation when it holds a model, else None."""
    try:
        root = Path(str(resources.files(WEIGHTS_PACKAGE)))
    except (ModuleNotFoundError, TypeError):
        return None
    folder = root / defense
    return folder if (folder / "model.pt").is_file() else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_weights(run_dir, dest, dtype: torch.dtype = torch.float16) -> Path:
    """Copy the trained model of ``run_dir`` to ``dest`` in ``dtype``, with its manifest
    (machine paths removed) and training log. Refuses an unfinished run."""
    from .eigen_purifier import MODEL_FILE, load_model_file

    run_dir, dest = Path(run_dir), Path(dest)
    manifest = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("status") != "complete":
        raise FacebenchError(f"{run_dir} is a {manifest.get('status')!r} training run; only "
                             f"finished runs are exported")
    data = load_model_file(run_dir / MODEL_FILE, manifest["defense"])
    data["state_dict"] = {k: v.to(dtype) if v.is_floating_point() else v
                          for k, v in data["state_dict"].items()}
    data["meta"] = {**data.get("meta", {}), "dtype": str(dtype).replace("torch.", "")}
    dest.mkdir(parents=True, exist_ok=True)
    save_atomic(data, dest / MODEL_FILE)
    for section, key in _MACHINE_KEYS:
        manifest.get(section, {}).pop(key, None)
    manifest["eigen"]["source"] = "recomputed from the training images named in data"
    manifest["export"] = {"dtype": data["meta"]["dtype"],
                          "model_sha256": _sha256(dest / MODEL_FILE)}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                 encoding="utf-8")
    if (run_dir / "log.jsonl").is_file():
        shutil.copyfile(run_dir / "log.jsonl", dest / "log.jsonl")
    return dest


def rebuild_basis(model_dir, data_home=None, progress: bool = True, *, recognizer=None,
                  image_cache_dir=None, eigen_cache_dir=None) -> EigenBasis:
    """The eigenbasis a committed model was trained with, recomputed from LFW (or the cache).

    The crops are aligned for the recognizer the manifest names (or ``recognizer``, a
    module). Raises FacebenchError when the local training split differs from the recorded
    one."""
    from .registry import RECOGNIZERS
    from .eigenfaces import cached_eigenbasis
    from .trainer import load_training_images

    path = Path(model_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        data, eigen = manifest["data"], manifest["eigen"]
        if recognizer is None:
            recognizer = RECOGNIZERS.get(manifest["recognizer"])()
    except (OSError, ValueError, KeyError) as exc:
        raise FacebenchError(f"cannot rebuild the eigenbasis of {model_dir}: its manifest is "
                             f"missing or incomplete ({exc})") from None
    images, key_lines, info = load_training_images(
        data_home, data["protocol"], recognizer, data["max_images"], progress,
        cache_dir=image_cache_dir)
    if info["image_list_sha256"] != data["image_list_sha256"]:
        raise FacebenchError(
            f"the LFW training split here differs from the one {model_dir} was trained on "
            f"(image-list sha256 {info['image_list_sha256'][:12]} vs "
            f"{data['image_list_sha256'][:12]}); its eigenbasis cannot be rebuilt")
    basis, _ = cached_eigenbasis(images, key_lines, int(eigen["K"]), eigen_cache_dir,
                                 int(eigen["face_size"]))
    return basis
