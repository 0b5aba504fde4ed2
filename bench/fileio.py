"""Small shared helpers: atomic writes, safe checkpoint loads, device resolution."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, IO

import torch

from .errors import FacebenchError


def atomic_write(path, write: Callable[[IO], None], binary: bool = True) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over ``path``.

    Readers (and a run killed half-way) only ever see the old file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise FacebenchError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FacebenchError(f"device {name!r} requested but CUDA is not available here")
    return dev


def load_torch_file(path, what: str):
    """``torch.load(weights_only=True)`` on CPU, with one clear error naming ``what``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FacebenchError(f"{what} file not found: {path}") from None
    except Exception as err:  # unpickling errors come in many types
        raise FacebenchError(f"cannot read {what} file {path}: {err}") from None
