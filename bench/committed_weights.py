"""Committed purifier weights: an fp16 copy of a training run that ships with the code.

A training folder holds ``model.pt`` in fp32 (about 100 MB for SIDE) and ``eigen.pt`` (75 MB).
The committed copy under ``weights/<defense>/`` keeps only the network in fp16 and the run's
manifest and log, so ``facebench run --defense side`` works on a fresh checkout without
training. The eigenbasis is not committed: it is recomputed, deterministically, from the
LFW training images the manifest names (then cached like any other basis), and the sha256
of that image list must match the one recorded at training time.
"""
from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import pooch
import torch

from .eigenfaces import EigenBasis, save_atomic
from .errors import FacebenchError

WEIGHTS_PACKAGE = "facebench.weights"
MANIFEST = "manifest.json"
# run-manifest entries that describe the training machine, not the model
_MACHINE_KEYS = (("eigen", "cache_file"), ("data", "lfw_home"), ("files", "checkpoint"),
                 ("files", "eigen"))


def committed_dir(defense: str) -> Path | None:
    """``weights/<defense>/`` of this installation when it holds a model, else None.

    Looks in the ``facebench.weights`` package, then beside the source tree (a checkout, or
    an editable install made before that package existed)."""
    roots = [Path(__file__).resolve().parent.parent / "weights"]
    try:
        roots.insert(0, Path(str(resources.files(WEIGHTS_PACKAGE))))
    except (ModuleNotFoundError, TypeError):
        pass
    for root in roots:
        if (root / defense / "model.pt").is_file():
            return root / defense
    return None


_VERIFIED: dict = {}


def verify_model_hash(model_path) -> None:
    """Refuse a committed model file whose sha256 differs from its manifest's record (a
    corrupt checkout, a bad LFS smudge, an edited file). Checked once per file and process."""
    path = Path(model_path)
    try:
        want = json.loads((path.parent / MANIFEST).read_text(encoding="utf-8"))["export"][
            "model_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # not a committed export (a training folder): nothing recorded to check
    stat = path.stat()
    token = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if _VERIFIED.get(token) == want:
        return
    got = pooch.file_hash(str(path))
    if got != want:
        raise FacebenchError(f"{path} has sha256 {got[:16]}…, but its manifest records "
                             f"{want[:16]}…; the committed weights are corrupt (reinstall or "
                             f"`git checkout -- {path.parent.name}/{path.name}`)")
    _VERIFIED[token] = want


def basis_fingerprint(basis: EigenBasis) -> dict:
    """Numbers that pin an eigenbasis down without shipping it: its top eigenvalues and their
    total (a rebuilt basis must reproduce them)."""
    ev = basis.eigvals.double()
    return {"top_eigvals": [float(v) for v in ev[:8]], "eigval_sum": float(ev.sum())}


def _check_fingerprint(basis: EigenBasis, want: dict, where) -> None:
    got = basis_fingerprint(basis)
    pairs = list(zip(got["top_eigvals"], want["top_eigvals"]))
    pairs.append((got["eigval_sum"], want["eigval_sum"]))
    if any(abs(a - b) > 1e-3 * abs(b) + 1e-9 for a, b in pairs):
        raise FacebenchError(
            f"the eigenbasis rebuilt for {where} does not match the one it was trained with "
            f"(eigenvalue sum {got['eigval_sum']:.6g} vs {want['eigval_sum']:.6g}); the "
            f"local LFW images differ from the training machine's")


def export_weights(run_dir, dest, dtype: torch.dtype = torch.float16) -> Path:
    """Copy the trained model of ``run_dir`` to ``dest`` in ``dtype``, with its manifest
    (machine paths removed) and training log. Refuses an unfinished run."""
    from .eigen_purifier import MODEL_FILE, load_model_file

    from .eigen_purifier import EIGEN_FILE
    from .eigenfaces import load_basis_file

    run_dir, dest = Path(run_dir), Path(dest)
    try:
        manifest = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
        defense, status = manifest["defense"], manifest.get("status")
        manifest["eigen"]["K"], manifest["data"]["image_list_sha256"]  # must be there
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FacebenchError(f"{run_dir} has no usable training manifest ({exc})") from None
    if status != "complete":
        raise FacebenchError(f"{run_dir} is a {status!r} training run; only finished runs "
                             f"are exported")
    data = load_model_file(run_dir / MODEL_FILE, defense)
    state, kept = {}, []
    for key, value in data["state_dict"].items():
        small = value.to(dtype) if value.is_floating_point() else value
        if value.is_floating_point() and not torch.isfinite(small).all():
            small = value  # e.g. a BatchNorm running variance beyond fp16's 65504
            kept.append(key)
        state[key] = small
    data["state_dict"] = state
    data["meta"] = {**data.get("meta", {}), "dtype": str(dtype).replace("torch.", ""),
                    "kept_float32": kept}
    dest.mkdir(parents=True, exist_ok=True)
    save_atomic(data, dest / MODEL_FILE)
    for section, key in _MACHINE_KEYS:
        manifest.get(section, {}).pop(key, None)
    manifest["eigen"]["source"] = "recomputed from the training images named in data"
    manifest["eigen"]["fingerprint"] = basis_fingerprint(load_basis_file(run_dir / EIGEN_FILE))
    manifest["export"] = {"dtype": data["meta"]["dtype"],
                          "model_sha256": pooch.file_hash(str(dest / MODEL_FILE))}
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
        protocol, max_images, want_sha = (data["protocol"], data["max_images"],
                                          data["image_list_sha256"])
        k, size, defense = int(eigen["K"]), int(eigen["face_size"]), manifest["defense"]
        fingerprint = eigen.get("fingerprint")
        if recognizer is None:
            recognizer = RECOGNIZERS.get(manifest["recognizer"])()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FacebenchError(f"cannot rebuild the eigenbasis of {model_dir}: its manifest is "
                             f"missing or incomplete ({exc})") from None
    images, key_lines, info = load_training_images(
        data_home, protocol, recognizer, max_images, progress, cache_dir=image_cache_dir)
    if info["image_list_sha256"] != want_sha:
        raise FacebenchError(
            f"the LFW training split here differs from the one {model_dir} was trained on "
            f"(image-list sha256 {info['image_list_sha256'][:12]} vs {want_sha[:12]}); its "
            f"eigenbasis cannot be rebuilt")
    announce = (f"eigenbasis of the committed {defense} model: top {k} eigenfaces of "
                f"{len(images)} training images (computed once, then cached)"
                if progress else None)
    basis, _ = cached_eigenbasis(images, key_lines, k, eigen_cache_dir, size, announce)
    if fingerprint:
        _check_fingerprint(basis, fingerprint, model_dir)
    return basis
