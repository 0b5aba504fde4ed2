"""Decode and align images once, then serve them from an on-disk uint8 cache.

Decoding 13k JPEGs costs far more than one attack step, and every benchmark run needs the
same crops, so the aligned stack is saved as one ``.npy`` keyed by dataset, aligner, the
source of the code that aligns, and the exact path list. The file ends with an index of
every image's fingerprint, so a cache hit is trusted only while the images on disk are the
ones it was made from: a warm run re-checks each file with one stat and an 8 KB read, and
re-decodes only the images whose bytes really changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..errors import FacebenchError
from ..fileio import atomic_write
from ..fingerprint import defining_modules, file_fingerprint, file_sha256, source_hash
from ..paths import cache_dir
from .align import Aligner
from .pairs import outside_root

#: images above this many pixels are refused before decoding (a 50 MP RGB frame is 150 MB)
MAX_PIXELS = 50_000_000
#: files above this many bytes are refused before PIL opens them
MAX_FILE_BYTES = 100_000_000

_INDEX_VERSION = 1
_INDEX_MAGIC = b"FBINDEX1"
_FOOTER = struct.Struct("<Q8s")  # index length, magic: the last 16 bytes of a cache file
_CHUNK = 64  # files per thread-pool task when only fingerprinting or hashing them


def default_cache_dir() -> Path:
    """Per-user folder for aligned-crop caches."""
    return cache_dir("aligned")


# ---------------------------------------------------------------- decoding one image

class ImageError(FacebenchError):
    """A bad image file; :meth:`named` says it again with the path as the user wrote it."""

    def __init__(self, path, before: str, after: str = ""):
        super().__init__(f"{before}{path}{after}")
        self.before, self.after = before, after

    def named(self, name: str) -> "ImageError":
        return ImageError(name, self.before, self.after)


class NoFaceError(ImageError):
    """A detecting aligner found no face and has no fallback geometry: the loader either
    names the file in this error or, asked to, leaves the image out and reports it."""

    def named(self, name: str) -> "NoFaceError":
        return NoFaceError(name, self.before, self.after)


def _mega(n: int) -> str:
    return f"{round(n / 1e6, 1):g}"


def _reason(err: OSError) -> str:
    """The OS's words without the full path it repeats (the message already names the file)."""
    return err.strerror if err.filename and err.strerror else str(err)


def _check_file(path) -> None:
    """Refuse a missing, empty, non-regular or oversized file before PIL opens it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(path, "image not found: ") from None
    except OSError as err:
        raise ImageError(path, "cannot read image ", f": {_reason(err)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(path, "image ", " is not a regular file")
    if st.st_size == 0:
        raise ImageError(path, "image ", " is empty (0 bytes)")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageError(path, "image ", f" is {_mega(st.st_size)} MB on disk, above "
                         f"facebench's limit of {_mega(MAX_FILE_BYTES)} MB; downscale it")


def _check_pixels(path, size) -> None:
    """Refuse a header promising too many pixels, before anything is decoded."""
    w, h = size
    if w * h > MAX_PIXELS:
        raise ImageError(path, "image ", f" is {w}x{h} pixels ({_mega(w * h)} MP), above "
                         f"facebench's limit of {_mega(MAX_PIXELS)} MP; downscale it")


def _bomb(path, err: Exception) -> ImageError:
    """PIL refused the header itself; its message gives the pixel count, not the size."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    size = (f"{_mega(int(found.group(1)))} MP" if found
            else f"over {_mega(2 * (Image.MAX_IMAGE_PIXELS or 0))} MP")
    return ImageError(path, "image ", f" is {size} (PIL refused it as a possible decompression "
                      f"bomb), above facebench's limit of {_mega(MAX_PIXELS)} MP; downscale it")


def load_image(path) -> np.ndarray:
    """Decode ``path`` to uint8 HxWx3 RGB; every bad file is one FacebenchError naming it.

    The limits are checked before decoding (file size by stat, pixel count from the header,
    which ``Image.open`` reads lazily), so a decompression bomb costs nothing. PIL's own
    DecompressionBombWarning (89-179 MP) is left as it is: turning it into an error needs
    the process-wide warnings filter, which is not thread-safe, and load_aligned decodes in
    threads; the explicit size check refuses those images anyway.
    """
    _check_file(path)
    try:
        with Image.open(path) as im:
            _check_pixels(path, im.size)
            im.load()  # decode now, inside the try, so truncated JPEGs fail here
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise ImageError(path, "image not found: ") from None
    except Image.DecompressionBombError as err:
        raise _bomb(path, err) from None
    except UnidentifiedImageError:
        raise ImageError(path, "cannot decode image ",
                         ": not in an image format PIL can read") from None
    except OSError as err:
        raise ImageError(path, "cannot decode image ", f": {_reason(err)}") from None
    except (SyntaxError, ValueError, EOFError, IndexError, struct.error) as err:
        raise ImageError(path, "cannot decode image ", f": {err}") from None
    return np.asarray(rgb, dtype=np.uint8)


# ---------------------------------------------------------------- the cache file

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.,=+-]+", "_", text).strip("_") or "data"


def _code_version(aligner: Aligner) -> str:
    """Source of this module and the aligner's, plus its key: other code, other crops."""
    return f"{source_hash(__name__, *defining_modules(aligner))}:{aligner.key}"


def cache_file(paths, aligner: Aligner, cache_dir, cache_key: str, root=None) -> Path:
    """Cache path: readable dataset and aligner keys plus a hash of the code, root and list.

    The images' content is checked against the index inside the file, not named here, so
    an edited image updates its cache entry instead of orphaning a 100 MB file.
    """
    digest = hashlib.sha256()
    digest.update(f"{_code_version(aligner)}\n{Path(root).resolve() if root else ''}\n".encode())
    for p in paths:
        digest.update(str(p).encode("utf-8", "surrogateescape") + b"\n")
    name = f"{_slug(cache_key)}--{_slug(aligner.key)}--{len(paths)}-{digest.hexdigest()[:16]}.npy"
    return Path(cache_dir) / name


def _valid_index(index, n: int) -> bool:
    if not isinstance(index, dict) or index.get("version") != _INDEX_VERSION:
        return False
    files = index.get("files")
    return (isinstance(files, list) and len(files) == n
            and all(isinstance(e, list) and len(e) == 5 for e in files))


def _read_cache(path: Path, expected_shape):
    """(crops, file index), or None for a missing, damaged, foreign or index-less file."""
    try:
        with open(path, "rb") as fh:
            fh.seek(-_FOOTER.size, os.SEEK_END)
            length, magic = _FOOTER.unpack(fh.read(_FOOTER.size))
            if magic != _INDEX_MAGIC:
                return None
            fh.seek(-_FOOTER.size - length, os.SEEK_END)
            index = json.loads(fh.read(length))
            fh.seek(0)
            arr = np.load(fh, allow_pickle=False)
    except (OSError, ValueError, EOFError, struct.error):
        return None  # absent, half-written or foreign file: rebuild it
    if arr.dtype != np.uint8 or arr.shape != expected_shape:
        return None
    if not _valid_index(index, len(arr)):
        return None
    no_face = index.get("no_face", [])
    if not (isinstance(no_face, list) and all(isinstance(i, int) and 0 <= i < len(arr)
                                              for i in no_face)):
        return None
    return arr, index["files"], set(no_face)


def _write_cache(path: Path, arr: np.ndarray, files: list, no_face=()) -> None:
    """The crops as ``.npy`` (``np.load`` still reads it), then the file index as JSON (with
    the images a strict detecting aligner found no face in) and a 16-byte footer, in one
    atomic write: crops and index can never disagree."""
    blob = json.dumps({"version": _INDEX_VERSION, "files": files,
                       "no_face": sorted(int(i) for i in no_face)},
                      separators=(",", ":")).encode()

    def write(fh) -> None:
        np.save(fh, arr, allow_pickle=False)
        fh.write(blob)
        fh.write(_FOOTER.pack(len(blob), _INDEX_MAGIC))

    try:
        atomic_write(path, write)
    except OSError as err:
        raise FacebenchError(f"cannot write image cache in {path.parent}: {err}") from None


# ---------------------------------------------------------------- many images

def _on_disk(path: str, root) -> str:
    """Where ``path`` is read: under ``root`` when one is given, and never outside it.
    Plain strings, not Paths: pathlib costs more than the fingerprint of a warm file."""
    if root is None:
        return path
    problem = outside_root(path)
    if problem:
        raise FacebenchError(f"image path {path!r} {problem}; paths must be relative to the "
                             f"image root {root}")
    return os.path.join(root, path)


def _each(pool, fn, indices, names, bar=None, chunk: int = 1) -> list:
    """``fn(i)`` for each index in the pool, ``chunk`` indices per task (cheap calls such as
    fingerprints would otherwise cost more in hand-offs than in work). A bad image's error
    names it as the user wrote it. Results come back in order; the first failure stops the
    rest."""
    def run(part: list) -> list:
        out = []
        for i in part:
            try:
                out.append(fn(i))
            except ImageError as err:
                raise err.named(names[i]) from None
            except FileNotFoundError:
                raise ImageError(names[i], "image not found: ") from None
            except OSError as err:
                raise ImageError(names[i], "cannot read image ", f": {_reason(err)}") from None
        return out

    indices = list(indices)
    parts = [indices[k:k + chunk] for k in range(0, len(indices), chunk)]
    results = []
    for done in pool.map(run, parts):
        results.extend(done)
        if bar is not None:
            bar.update(len(done))
    return results


def _align(pool, files, names, indices, out, aligner, desc, progress,
           skip_no_face: bool = False) -> set:
    """Decode and align ``files[i]`` into ``out[i]`` for each index; with ``skip_no_face``,
    an image without a face gets a zero crop and its index is returned instead of raising."""
    if not indices:
        return set()
    h, w = aligner.out_size
    no_face = set()

    def work(i: int) -> None:
        try:
            crop = aligner(load_image(files[i]))
        except NoFaceError:
            if not skip_no_face:
                raise
            out[i] = 0
            no_face.add(i)  # set.add is atomic under the GIL
            return
        if crop.shape != (h, w, 3) or crop.dtype != np.uint8:
            raise FacebenchError(
                f"aligner {aligner.key} returned {crop.dtype} {crop.shape} for {names[i]}, "
                f"expected uint8 {(h, w, 3)}"
            )
        out[i] = crop

    with tqdm(total=len(indices), desc=desc, unit="img", disable=not progress) as bar:
        _each(pool, work, indices, names, bar)
    return no_face


def _cached(pool, paths, files, names, target, shape, align):
    """Serve ``target`` while every file's fingerprint matches its index; re-decode only
    files whose bytes changed (a moved fingerprint with equal sha256 keeps its crop).
    Returns (crops, indices of images with no face)."""
    prints = _each(pool, lambda i: list(file_fingerprint(files[i])), range(len(paths)), names,
                   chunk=_CHUNK)
    found = _read_cache(target, shape)
    crops, index, no_face = found if found else (np.empty(shape, dtype=np.uint8), None, set())
    moved = [i for i in range(len(paths))
             if index is None or index[i][:4] != [paths[i], *prints[i]]]
    if not moved:
        return crops, no_face
    shas = _each(pool, lambda i: file_sha256(files[i]), moved, names, chunk=_CHUNK)
    changed = [i for i, sha in zip(moved, shas) if index is None or sha != index[i][4]]
    no_face = (no_face - set(changed)) | align(changed, crops)
    index = index or [None] * len(paths)
    for i, sha in zip(moved, shas):
        index[i] = [paths[i], *prints[i], sha]
    _write_cache(target, crops, index, no_face)
    return crops, no_face


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

    Paths are taken under ``root`` (and must stay inside it) when one is given. Decoding
    runs in a thread pool (PIL releases the GIL while decoding and resizing). A bad image's
    error names it as written, with its root. ``cache_dir=None`` disables the cache.
    """
    crops, _ = load_aligned_faces(paths, aligner, cache_dir, cache_key, progress, root,
                                  workers, skip_no_face=False)
    return crops


def load_aligned_faces(paths, aligner: Aligner, cache_dir, cache_key: str,
                       progress: bool = True, root=None, workers: int | None = None,
                       skip_no_face: bool = True):
    """:func:`load_aligned` that, with ``skip_no_face``, keeps going past images a strict
    detecting aligner finds no face in: returns (crops, sorted indices of those images,
    whose crops are zero). Without it, the first such image is a :class:`NoFaceError`."""
    paths = [str(p) for p in paths]
    files = [_on_disk(p, None if root is None else os.fspath(root)) for p in paths]
    names = [p if root is None else f"{p} (in image root {root})" for p in paths]
    shape = (len(paths), *aligner.out_size, 3)
    pool = ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) + 1))

    def align(indices, out) -> set:
        return _align(pool, files, names, indices, out, aligner, f"aligning {cache_key}",
                      progress, skip_no_face)

    try:
        if cache_dir is None:
            crops = np.empty(shape, dtype=np.uint8)
            no_face = align(list(range(len(paths))), crops)
        else:
            target = cache_file(paths, aligner, cache_dir, cache_key, root)
            crops, no_face = _cached(pool, paths, files, names, target, shape, align)
        if no_face and not skip_no_face:  # a cache written by a skipping run: say it now
            first = min(no_face)
            raise NoFaceError(names[first], "no face found in image ",
                              f" (and {len(no_face) - 1} more)" if len(no_face) > 1 else "")
        return crops, sorted(no_face)
    finally:  # on the first bad image, drop the queued work instead of decoding it all
        pool.shutdown(wait=True, cancel_futures=True)
