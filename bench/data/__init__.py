"""Face-pair datasets: one entry point that turns (dataset, protocol) into pairs and crops.

Everything downstream (recognizers, attacks, metrics) works on a :class:`PairList` plus a
uint8 image stack, so datasets differ only in how those two are produced here.
"""
from __future__ import annotations

from typing import List, NamedTuple

import numpy as np

from .align import Aligner, FixedCrop, ResizeOnly, get_aligner, recognizer_aligner
from .download import resolve_data_home
from .images import NoFaceError, default_cache_dir, load_aligned, load_aligned_faces, load_image
from .pairs import PairList
from .pairs_csv import csv_pairs

__all__ = [
    "Aligner", "FacesFound", "FixedCrop", "NoFaceError", "PairList", "ResizeOnly", "aligner_for",
    "csv_pairs", "default_cache_dir", "get_aligner", "load_aligned", "load_image",
    "load_pairs", "pair_images", "pair_images_with_faces", "recognizer_aligner",
    "resolve_data_home",
]


def load_pairs(dataset: str, protocol: str | None = None, data_home=None, pairs_file=None,
               image_root=None, download: bool = True) -> PairList:
    """The pair list of registered ``dataset`` (``protocol=None``: its default protocol)."""
    from ..dataset import load_dataset

    ds = load_dataset(dataset)
    return ds.pairs(ds.check_protocol(protocol), data_home=data_home, pairs_file=pairs_file,
                    image_root=image_root, download=download)


def aligner_for(dataset: str, recognizer) -> Aligner:
    """The crop ``recognizer`` gets from registered ``dataset``'s images."""
    from ..dataset import load_dataset

    return load_dataset(dataset).aligner(recognizer)


def pair_images(
    pairlist: PairList,
    aligner: Aligner,
    cache_dir=None,
    progress: bool = True,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned crops of every distinct image, with the index of each pair's two images.

    Returns ``(images uint8 MxHxWx3, idx_a, idx_b)`` with ``images[idx_a[i]]`` the first
    image of pair ``i``; images shared by several pairs are decoded and attacked once.
    ``cache_dir=None`` uses :func:`default_cache_dir`.
    """
    unique = pairlist.unique_paths()
    position = {p: i for i, p in enumerate(unique)}
    idx_a = np.array([position[p] for p in pairlist.paths_a], dtype=np.int64)
    idx_b = np.array([position[p] for p in pairlist.paths_b], dtype=np.int64)
    images = load_aligned(
        unique,
        aligner,
        cache_dir if cache_dir is not None else default_cache_dir(),
        cache_key=pairlist.name,
        progress=progress,
        root=pairlist.root,
        workers=workers,
    )
    return images, idx_a, idx_b


class FacesFound(NamedTuple):
    """:func:`pair_images_with_faces`: the pairs kept, their crops and what was left out."""

    pairs: PairList
    images: np.ndarray
    idx_a: np.ndarray
    idx_b: np.ndarray
    no_face: List[str]  # images (as the pair list names them) with no face found
    excluded: int  # pairs left out because one of their images has no face


def pair_images_with_faces(pairlist: PairList, aligner: Aligner, cache_dir=None,
                           progress: bool = True, workers: int | None = None) -> FacesFound:
    """:func:`pair_images` for photos a strict detecting aligner may find no face in: every
    pair holding such an image is left out (and counted) instead of stopping the run, so
    one bad photo of a user's folder costs its pairs, not the evaluation."""
    unique = pairlist.unique_paths()
    images, missing = load_aligned_faces(
        unique, aligner, cache_dir if cache_dir is not None else default_cache_dir(),
        cache_key=pairlist.name, progress=progress, root=pairlist.root, workers=workers)
    lost = {unique[i] for i in missing}
    keep = [k for k, (a, b) in enumerate(zip(pairlist.paths_a, pairlist.paths_b))
            if a not in lost and b not in lost]
    kept = pairlist.select(keep) if len(keep) < len(pairlist) else pairlist
    position = {p: i for i, p in enumerate(unique)}
    used = kept.unique_paths()
    rows = np.array([position[p] for p in used], dtype=np.int64)
    images = images[rows] if len(used) < len(unique) else images
    where = {p: i for i, p in enumerate(used)}
    idx_a = np.array([where[p] for p in kept.paths_a], dtype=np.int64)
    idx_b = np.array([where[p] for p in kept.paths_b], dtype=np.int64)
    return FacesFound(kept, images, idx_a, idx_b, [unique[i] for i in missing],
                      len(pairlist) - len(keep))
