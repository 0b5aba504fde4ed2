"""Face-pair datasets: one entry point that turns (dataset, protocol) into pairs and crops.

Everything downstream (recognizers, attacks, metrics) works on a :class:`PairList` plus a
uint8 image stack, so datasets differ only in how those two are produced here.
"""
from __future__ import annotations

import numpy as np

from ..errors import FacebenchError
from .align import (
    ALIGNERS, DLIB_CHIP_BOX, Aligner, FixedCrop, ResizeOnly, aligner_for, get_aligner,
)
from .download import ensure_lfw, resolve_data_home
from .images import default_cache_dir, load_aligned, load_image
from .lfw import PROTOCOLS, lfw_pairs, lfw_people, training_split
from .pairs import PairList
from .pairs_csv import csv_pairs

DATASETS = ("lfw", "pairs")

__all__ = [
    "ALIGNERS", "DATASETS", "DLIB_CHIP_BOX", "PROTOCOLS", "Aligner", "FixedCrop", "PairList",
    "ResizeOnly", "aligner_for", "csv_pairs", "default_aligner", "default_cache_dir", "ensure_lfw",
    "get_aligner", "lfw_pairs", "lfw_people", "load_aligned", "load_image", "load_pairs",
    "pair_images", "resolve_data_home", "training_split",
]


def load_pairs(
    dataset: str,
    protocol: str = "10-fold",
    data_home=None,
    pairs_file=None,
    image_root=None,
    download: bool = True,
) -> PairList:
    """The pair list of ``dataset``: ``lfw`` (by protocol) or ``pairs`` (a user CSV).

    ``protocol`` only applies to LFW; ``data_home=None`` resolves ``$FACEBENCH_DATA`` or the
    user cache folder, downloading LFW there when allowed.
    """
    if dataset == "lfw":
        if protocol not in PROTOCOLS:
            raise FacebenchError(
                f"unknown LFW protocol {protocol!r}; choose from: {', '.join(PROTOCOLS)}"
            )
        home = ensure_lfw(resolve_data_home(data_home), protocol, download=download)
        return lfw_pairs(home, protocol)
    if dataset == "pairs":
        if pairs_file is None:
            raise FacebenchError("dataset 'pairs' needs a CSV pairs file (--pairs-file)")
        return csv_pairs(pairs_file, image_root)
    raise FacebenchError(f"unknown dataset {dataset!r}; choose from: {', '.join(DATASETS)}")


def default_aligner(dataset: str, out_size=(150, 150), name: str | None = None) -> Aligner:
    """LFW frames get the dlib-chip crop; user CSV crops are already aligned, so only resized."""
    if name is not None:
        return get_aligner(name, out_size)
    return get_aligner("dlib-chip" if dataset == "lfw" else "resize", out_size)


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
