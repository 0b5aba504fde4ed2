"""Content fingerprints and code-version hashes: what every facebench cache key is made of.

A cache is only as trustworthy as its key. These helpers name what a cached result was made
from — the bytes it started from and the source of the code that made it — so an edit to
either writes a new entry instead of serving a stale one. Caches build their keys here, so
they all mean the same thing by "the same images" and "the same code".
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import os
import sys
import types

import numpy as np

#: bytes read from each end of a file by :func:`file_fingerprint`
EDGE_BYTES = 4096
_READ_BLOCK = 1 << 20


# ---------------------------------------------------------------- content

def images_digest(images) -> str:
    """sha256 (32 hex) of an array's dtype, shape and bytes: the exact pixels an attack
    starts from.

    Hashes the buffer in place (no copy for a C-contiguous stack); dtype and shape are part
    of it, so the same bytes read as another stack never collide. sha256 rather than
    blake2b: with the SHA CPU instructions of current x86 and ARM it is about twice as fast.
    """
    arr = np.ascontiguousarray(images)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}\n".encode())
    h.update(arr.reshape(-1).view(np.uint8))
    return h.hexdigest()[:32]


def file_fingerprint(path) -> tuple[int, int, str]:
    """(size, mtime_ns, sha256 of the first and last 4 KB): a change check for one stat and
    an 8 KB read, cheap enough to run on every image at every cache hit."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        h = hashlib.sha256(_read_at(fd, 0))
        if st.st_size > EDGE_BYTES:
            h.update(_read_at(fd, max(EDGE_BYTES, st.st_size - EDGE_BYTES)))
    finally:
        os.close(fd)
    return st.st_size, st.st_mtime_ns, h.hexdigest()[:32]


def _read_at(fd: int, offset: int) -> bytes:
    """Up to EDGE_BYTES at ``offset``: pread where the OS has it (no buffered file object,
    which costs more than the read itself on a warm page cache)."""
    if hasattr(os, "pread"):
        return os.pread(fd, EDGE_BYTES, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, EDGE_BYTES)


def file_sha256(path) -> str:
    """Full sha256 of a file: the content's identity, for when the cheap fingerprint moved."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_READ_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- code

def _as_module(obj):
    """A module for a module name or a module; None for anything else."""
    if isinstance(obj, types.ModuleType):
        return obj
    if isinstance(obj, str):
        try:
            return sys.modules.get(obj) or importlib.import_module(obj)
        except ImportError:
            return None  # hashed as a bare name: a random token, never a stale match
    return None


@functools.lru_cache(maxsize=None)
def _source(obj) -> bytes:
    """Source text of ``obj``, read once per process: the code that is loaded is the code
    that runs. Without source (a frozen app) a random token never matches a later run."""
    try:
        return inspect.getsource(obj).encode()
    except (OSError, TypeError):
        return os.urandom(16)


def source_hash(*objects) -> str:
    """sha256 (16 hex) over the source of modules, classes or functions, in order.

    Module names are accepted too (``source_hash(__name__)``), so one function serves every
    cache that must miss once the code producing its entries is edited.
    """
    h = hashlib.sha256()
    for obj in objects:
        target = _as_module(obj) or obj
        name = getattr(target, "__name__", repr(target))
        h.update(f"{name}\n".encode())
        h.update(_source(target))
    return h.hexdigest()[:16]


def _project(module_name: str, own: str) -> bool:
    return module_name.split(".")[0] in (own, "facebench")


def _helper_modules(module_name: str, own: str) -> set[str]:
    """Project modules whose functions ``module_name`` imports by name (``from ._iterative
    import ascend``): their code runs inside the class's methods too."""
    module = sys.modules.get(module_name)
    found = {getattr(v, "__module__", None) for v in vars(module).values()
             if isinstance(v, types.FunctionType)} if module else set()
    return {m for m in found if m and _project(m, own)}


def defining_modules(*objects) -> list[str]:
    """Names of the modules whose code an object runs.

    An instance counts as its class; a class brings the modules of the classes it derives
    from in facebench or in its own top-level package (not torch's, not builtins), and the
    project modules whose functions those import by name. Modules and module names are
    taken as they are. Sorted and without repeats, so the order in which callers list
    objects does not change a key.
    """
    names = set()
    for obj in objects:
        if obj is None:
            continue
        module = _as_module(obj)
        if module is not None:
            names.add(module.__name__)
            continue
        cls = obj if isinstance(obj, type) else type(obj)
        own = cls.__module__.split(".")[0]
        if own == "builtins":
            continue
        bases = {c.__module__ for c in cls.__mro__ if _project(c.__module__, own)}
        names |= bases.union(*(_helper_modules(m, own) for m in bases))
    return sorted(names)


def code_version(*objects) -> str:
    """facebench's version plus the source hash of the modules ``objects`` run."""
    from . import __version__

    return f"{__version__}+{source_hash(*defining_modules(*objects))}"
