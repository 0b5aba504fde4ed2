"""Committed SIDE/PIN weights: the eigen-specific half of exporting and loading them.

A training folder holds ``model.pt`` in fp32 (about 100 MB for SIDE) and ``eigen.pt`` (75 MB).
The committed copy under ``weights/<defense>/`` (made by
:func:`facebench.trainable.export_weights`) keeps only the network in fp16 and the run's
manifest and log, so ``facebench run --defense side`` works on a fresh checkout without
training. The eigenbasis is not committed: it is recomputed, deterministically, from the
LFW training images the manifest names (then cached like any other basis), and the sha256
of that image list must match the one recorded at training time.
"""
from __future__ import annotations

import json
from pathlib import Path

from facebench.errors import FacebenchError
from facebench.trainable import MANIFEST

from .faces import EigenBasis, cached_eigenbasis, load_basis_file

# eigen manifest entries that describe the training machine, not the model
_MACHINE_KEYS = (("eigen", "cache_file"), ("files", "eigen"))


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


def export_manifest(run_dir, manifest: dict) -> None:
    """Manifest of a committed copy: no basis file or cache path, but the basis's
    fingerprint, so the one rebuilt from LFW can be checked against it."""
    from .purifier import EIGEN_FILE

    manifest["eigen"]["K"]  # must be there
    for section, key in _MACHINE_KEYS:
        manifest.get(section, {}).pop(key, None)
    manifest["eigen"]["source"] = "recomputed from the training images named in data"
    manifest["eigen"]["fingerprint"] = basis_fingerprint(
        load_basis_file(Path(run_dir) / EIGEN_FILE))


def rebuild_basis(model_dir, data_home=None, progress: bool = True, *, recognizer=None,
                  image_cache_dir=None, eigen_cache_dir=None) -> EigenBasis:
    """The eigenbasis a committed model was trained with, recomputed from LFW (or the cache).

    The crops are aligned for the recognizer the manifest names (or ``recognizer``, a
    module). Raises FacebenchError when the local training split differs from the recorded
    one."""
    from facebench.registry import RECOGNIZERS
    from facebench.trainer import load_training_images

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
        data_home, protocol, recognizer, max_images, progress, cache_dir=image_cache_dir,
        dataset=data.get("dataset"))
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
