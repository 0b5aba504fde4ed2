"""Small shared helpers: atomic writes, safe checkpoint loads, device resolution."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, IO

from .errors import FacebenchError

if TYPE_CHECKING:
    import torch


def current_umask() -> int:
    """The process umask, so new files get the same mode ``open()`` would give them."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # No /proc (macOS, old kernels): umask can only be read by setting it. Another thread
    # creating a file between these two calls would get mode 0o666; rare, and only a mode.
    old = os.umask(0)
    os.umask(old)
    return old


def _target_mode(path: Path) -> int:
    """Mode for the replacement file: the existing file's, else what a plain open() gives."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def atomic_write(path, write: Callable[[IO], None], binary: bool = True) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over ``path``.

    Readers (and a run killed half-way) only ever see the old file or the complete new one.
    The new file keeps the old one's permissions (mkstemp alone would make it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _target_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {
                "encoding": "utf-8", "newline": ""})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def resolve_device(name) -> torch.device:
    """A torch device, or one clear error when it is malformed or not available here."""
    import torch  # lazy: the CSV helpers import this module and must stay light

    try:
        dev = torch.device(name)
    except RuntimeError:
        raise FacebenchError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FacebenchError(f"device {name!r} requested but CUDA is not available here")
    return dev


def load_torch_file(path, what: str):
    """``torch.load(weights_only=True)`` on CPU, with one clear error naming ``what``."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FacebenchError(f"{what} file not found: {path}") from None
    except Exception as err:  # unpickling errors come in many types
        raise FacebenchError(f"cannot read {what} file {path}: {err}") from None


def save_torch_atomic(obj, path) -> None:
    """``torch.save`` next to the target, then rename: readers never see a partial file."""
    import torch

    atomic_write(path, lambda fh: torch.save(obj, fh))
