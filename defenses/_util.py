"""Helpers shared by the classical purifiers: parameter checks, pixel conversions, RNGs.

The underscore keeps the registry from importing this as a defense. Parameters arrive from
the command line as int/float/bool/str, so each check names the defense, the parameter and
the accepted range in one line.
"""
from __future__ import annotations

import inspect
import math
from typing import Optional

import numpy as np
import torch

from facebench.errors import FacebenchError


def defaults_of(init) -> dict:
    """``{name: default}`` of an ``__init__``'s keyword parameters (shown by ``facebench list``)."""
    params = inspect.signature(init).parameters.values()
    return {p.name: p.default for p in params
            if p.name != "self" and p.default is not inspect.Parameter.empty}


def int_param(defense: str, name: str, value, lo: int, hi: Optional[int] = None) -> int:
    """``value`` as an int in ``[lo, hi]``, else a one-line FacebenchError."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok or value < lo or (hi is not None and value > hi):
        span = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise FacebenchError(f"defense {defense!r}: {name} must be an integer {span}, "
                             f"got {value!r}")
    return int(value)


def float_param(defense: str, name: str, value, lo: float, hi: float,
                lo_open: bool = False) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise FacebenchError(f"defense {defense!r}: {name} must be a number in {span}, "
                             f"got {value!r}")
    return value


def seed_param(defense: str, value) -> Optional[int]:
    """``None`` (follow torch's global RNG, which the runner seeds) or a non-negative int."""
    if value is None:
        return None
    return int_param(defense, "seed", value, 0, 2**63 - 1)


def make_generator(seed: Optional[int]) -> Optional[torch.Generator]:
    """A private CPU generator for a fixed seed; ``None`` means torch's global RNG."""
    if seed is None:
        return None
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def check_images(defense: str, x: torch.Tensor) -> None:
    """Purifiers take float NCHW RGB batches in [0, 1]."""
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise FacebenchError(f"defense {defense!r} expects float N×3×H×W images, got {shape}")


def to_uint8_hwc(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [0, 1] -> uint8 N×H×W×3 (round to nearest, as an image file would)."""
    u8 = (x.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return u8.permute(0, 2, 3, 1).cpu().numpy()


def from_hwc(arr: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """N×H×W×3 array (uint8 0..255 or float 0..1) -> NCHW with ``like``'s dtype and device."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()
    return t.permute(0, 3, 1, 2).clamp_(0.0, 1.0).to(device=like.device, dtype=like.dtype)
