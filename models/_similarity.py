"""Least-squares similarity transforms between point sets (Umeyama 1991), in numpy.

Five facial landmarks never sit exactly on a template, so the aligning warp is the rotation,
uniform scale and translation that minimise the squared distance to it. Umeyama's closed form
gives that directly from one 2x2 SVD; its sign fix keeps the result a proper rotation (no
mirror image) even for noisy or degenerate landmarks.
"""
from __future__ import annotations

import numpy as np

from facebench.errors import FacebenchError


def umeyama(src, dst) -> np.ndarray:
    """The 2x3 matrix ``M`` minimising ``sum ||M @ [src_i, 1] - dst_i||^2`` over similarities.

    ``src`` and ``dst`` are (N, 2) with N >= 2. Raises FacebenchError when ``src`` has no
    spread (all points equal), where no scale can be fitted.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise FacebenchError(f"similarity fit needs two (N>=2, 2) point sets, got "
                             f"{src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = float((sc ** 2).sum()) / len(src)
    if var_s <= 1e-12:
        raise FacebenchError("similarity fit: the source points coincide")
    cov = dc.T @ sc / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:  # the best orthogonal map would be a reflection: flip one axis
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((s * d).sum()) / var_s
    out = np.empty((2, 3))
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


def apply(matrix, points) -> np.ndarray:
    """``points`` (N, 2) mapped by the 2x3 affine ``matrix``."""
    pts = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def scale_of(matrix) -> float:
    """The uniform scale of a similarity ``matrix`` (sqrt of its linear part's determinant)."""
    m = np.asarray(matrix, dtype=np.float64)
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
