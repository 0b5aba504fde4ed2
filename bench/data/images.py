"""Decode and align images once, then serve them from an on-disk uint8 cache.

Decoding 13k JPEGs costs far more than one attack step, and every benchmark run needs the
same crops, so the aligned stack is saved as one ``.npy`` keyed by dataset, aligner and the
exact path list; a second run loads it without touching a JPEG.
"""
from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..errors import FacebenchError
from ..fileio import atomic_write
from ..paths import cache_dir
from .align import Aligner


def default_cache_dir() -> Path:
    """Per-user folder for aligned-crop caches."""
    return cache_dir("aligned")


def load_image(path) -> np.ndarray:
    """Decode ``path`` to uint8 HxWx3 RGB; a missing or unreadable file names the path."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now, inside the try, so truncated JPEGs fail here
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise FacebenchError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise FacebenchError(f"cannot decode image {path}: {err}") from None
    return np.asarray(rgb, dtype=np.uint8)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.,=+-]+", "_", text).strip("_") or "data"


def cache_file(paths, aligner: Aligner, cache_dir, cache_key: str, root=None) -> Path:
    """Cache path: readable dataset and aligner keys plus a hash of the full image list."""
    digest = hashlib.sha256()
    digest.update(f"{aligner.key}\n{Path(root).resolve() if root else ''}\n".encode())
    for p in paths:
        digest.update(str(p).encode("utf-8", "surrogateescape") + b"\n")
    name = f"{_slug(cache_key)}--{_slug(aligner.key)}--{len(paths)}-{digest.hexdigest()[:16]}.npy"
    return Path(cache_dir) / name


def _read_cache(path: Path, expected_shape) -> np.ndarray | None:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError):
        return None  # half-written or foreign file: rebuild it
    if arr.dtype != np.uint8 or arr.shape != expected_shape:
        return None
    return arr


def _write_cache(path: Path, arr: np.ndarray) -> None:
    """Write next to the target and rename, so readers never see a partial file."""
    try:
        atomic_write(path, lambda fh: np.save(fh, arr, allow_pickle=False))
    except OSError as err:
        raise FacebenchError(f"cannot write image cache in {path.parent}: {err}") from None


def load_aligned(
    paths,
    aligner: Aligner,
    cache_dir,
    cache_key: str,
    progress: bool = True,
    root=None,
    workers: int | None = None,
) -> np.ndarray:
    """Aligned crops of ``paths`` as uint8 NxHxWx3, cached under ``cache_dir``.

    Relative paths are taken under ``root``. Decoding runs in a thread pool (PIL releases
    the GIL while decoding and resizing). ``cache_dir=None`` disables the cache.
    """
    paths = [str(p) for p in paths]
    h, w = aligner.out_size
    shape = (len(paths), h, w, 3)
    target = cache_file(paths, aligner, cache_dir, cache_key, root) if cache_dir else None
    if target is not None:
        cached = _read_cache(target, shape)
        if cached is not None:
            return cached
    out = np.empty(shape, dtype=np.uint8)
    base = Path(root) if root is not None else None

    def work(i: int) -> int:
        p = Path(paths[i])
        crop = aligner(load_image(base / p if base is not None and not p.is_absolute() else p))
        if crop.shape != (h, w, 3) or crop.dtype != np.uint8:
            raise FacebenchError(
                f"aligner {aligner.key} returned {crop.dtype} {crop.shape} for {paths[i]}, "
                f"expected uint8 {(h, w, 3)}"
            )
        out[i] = crop
        return i

    n_workers = workers or min(8, (os.cpu_count() or 1) + 1)
    pool = ThreadPoolExecutor(max_workers=n_workers)
    try:
        with tqdm(total=len(paths), desc=f"aligning {cache_key}", unit="img",
                  disable=not progress) as bar:
            for _ in pool.map(work, range(len(paths))):
                bar.update(1)
    finally:  # on the first bad image, drop the queued work instead of decoding it all
        pool.shutdown(wait=True, cancel_futures=True)
    if target is not None:
        _write_cache(target, out)
    return out
