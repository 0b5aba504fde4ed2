"""Eigenfaces in the SIDE/PIN authors' image space, and the subspace projection both use.

Both defenses work on one-channel 112x112 faces in [-1, 1]: resize, ITU-R 601 luma, then
``(v - 0.5) / 0.5`` (the authors' torchvision ``Resize -> Grayscale -> Normalize(0.5, 0.5)``).
Choices the papers leave open, made here:

* Resizing is bilinear with antialiasing (``F.interpolate(antialias=True)``), which
  reproduces PIL's bilinear filter, the default of torchvision's ``Resize`` on PIL images.
  Luma is taken before the resize; both are linear, so the order only changes rounding.
* The basis is exact and deterministic: float64, a symmetric eigensolver (``eigh``) on the
  N x N Gram matrix when N <= d (the eigenvectors of X^T X are X^T v / sqrt(lambda)), else
  on the d x d scatter matrix accumulated in chunks. No randomised SVD. Columns are sorted
  by eigenvalue, descending (the authors' ``torch.eig`` did not sort), and each column's
  sign is fixed so that its largest-magnitude entry (first one on ties) is positive.
  Eigenvalues are those of the centred scatter X^T X, not divided by N (as in the code).
* The basis is cached as a dict of tensors (``torch.save``; loaded with
  ``weights_only=True``) under ``user_cache_dir("facebench")/eigen/``, keyed by a hash of
  the image list (paths, crop geometry, root) and K.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facebench.errors import FacebenchError
from facebench.fileio import load_torch_file
from facebench.fileio import save_torch_atomic as save_atomic  # noqa: F401 (re-exported)

FACE_SIZE = 112
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, PIL's convert("L")
FORMAT = "facebench-eigen/1"


# --- image space ------------------------------------------------------------------------
def resize(x: torch.Tensor, size) -> torch.Tensor:
    """PIL-style bilinear resize of NCHW ``x`` (antialiased when shrinking)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def rgb_to_face(x: torch.Tensor, size: int = FACE_SIZE) -> torch.Tensor:
    """RGB [0,1] NCHW at any size -> gray ``size`` x ``size`` in [-1,1], N x 1 x size x size."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise FacebenchError(f"expected N x 3 x H x W RGB images, got shape {tuple(x.shape)}")
    if x.shape[1] == 3:
        w = x.new_tensor(LUMA).view(1, 3, 1, 1)
        x = (x * w).sum(dim=1, keepdim=True)
    return (resize(x, (size, size)) - 0.5) / 0.5


def face_to_rgb(y: torch.Tensor, size) -> torch.Tensor:
    """Gray [-1,1] N x 1 x h x w -> RGB [0,1] N x 3 x size with three identical channels.

    Values are not clamped: neither codebase clamps the reconstruction (digest default 25).
    """
    return resize(y * 0.5 + 0.5, size).expand(-1, 3, -1, -1)


def faces_from_uint8(images_u8: np.ndarray, size: int = FACE_SIZE,
                     batch: int = 256) -> Iterable[torch.Tensor]:
    """Yield flattened faces (float32, b x size^2) of a uint8 N x H x W x 3 stack, in order."""
    for start in range(0, len(images_u8), batch):
        chunk = torch.from_numpy(np.ascontiguousarray(images_u8[start:start + batch]))
        rgb = chunk.permute(0, 3, 1, 2).float().div_(255.0)
        yield rgb_to_face(rgb, size).flatten(1)


# --- projection -------------------------------------------------------------------------
def project(x: torch.Tensor, mask: torch.Tensor | None, vectors: torch.Tensor,
            mean: torch.Tensor) -> torch.Tensor:
    """``E diag(m) E^T (x - mu) + mu`` per sample.

    ``x``: N x ... (flattened to N x d); ``mask``: N x K (0/1, bool or float), or
    N x c x K for c masks per sample (then the result is N x c x ...), or None (all K).
    The result keeps ``x``'s per-sample shape; it is linear in ``x`` for a fixed mask, so
    gradients w.r.t. ``x`` flow through the projection only.
    """
    shape = x.shape[1:]
    coef = (x.flatten(1) - mean) @ vectors  # N x K
    if mask is None:
        return (coef @ vectors.T + mean).view(x.shape)
    mask = mask.to(coef.dtype)
    if mask.dim() == 2:
        return ((coef * mask) @ vectors.T + mean).view(x.shape)
    n, c, _ = mask.shape
    out = (coef.unsqueeze(1) * mask) @ vectors.T + mean  # N x c x d
    return out.view(n, c, *shape)


class EigenBasis(nn.Module):
    """Top-K eigenfaces (columns of ``vectors``, d x K, orthonormal) and the mean face."""

    def __init__(self, vectors: torch.Tensor, mean: torch.Tensor,
                 eigvals: torch.Tensor | None = None, size: int = FACE_SIZE):
        super().__init__()
        d, k = vectors.shape
        if d != size * size or mean.shape != (d,):
            raise FacebenchError(f"eigenbasis of shape {tuple(vectors.shape)} and mean "
                                 f"{tuple(mean.shape)} does not fit {size}x{size} faces")
        self.size = size
        self.register_buffer("vectors", vectors.float().contiguous())
        self.register_buffer("mean", mean.float().contiguous())
        ev = eigvals if eigvals is not None else torch.full((k,), float("nan"))
        self.register_buffer("eigvals", ev.double())

    @property
    def k(self) -> int:
        return self.vectors.shape[1]

    def truncate(self, k: int) -> "EigenBasis":
        if k > self.k:
            raise FacebenchError(f"eigenbasis has {self.k} components, {k} were asked for")
        return EigenBasis(self.vectors[:, :k], self.mean, self.eigvals[:k], self.size)

    def project(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return project(x, mask, self.vectors, self.mean)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "vectors": self.vectors.cpu(), "mean": self.mean.cpu(),
                "eigvals": self.eigvals.cpu(), "size": self.size}

    @classmethod
    def from_dict(cls, data: dict, source="eigenbasis") -> "EigenBasis":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise FacebenchError(f"{source} is not a facebench eigenbasis file")
        return cls(data["vectors"], data["mean"], data.get("eigvals"), int(data["size"]))


# --- computation ------------------------------------------------------------------------
def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Make each column's largest-|.| entry (first on ties) positive."""
    idx = vectors.abs().argmax(dim=0)  # argmax returns the first maximal index
    signs = torch.sign(vectors[idx, torch.arange(vectors.shape[1])])
    signs[signs == 0] = 1
    return vectors * signs


def _top(evals: torch.Tensor, evecs: torch.Tensor, k: int, n_images: int):
    order = torch.argsort(evals, descending=True, stable=True)[:k]
    evals, evecs = evals[order], evecs[:, order]
    tol = max(float(evals[0]), 0.0) * 1e-10
    rank = int((evals > tol).sum())
    if rank < k:
        raise FacebenchError(
            f"{k} eigenfaces asked for, but the {n_images} training images span only {rank} "
            f"directions; use more images (at least {k + 1}) or a smaller K")
    return evals, evecs


def compute_eigenbasis(faces, k: int, size: int = FACE_SIZE) -> EigenBasis:
    """Exact top-``k`` eigenfaces of ``faces`` (N x d tensor or a list of chunks).

    Chunks stay in their dtype and are widened to float64 one at a time, so the peak is
    about one float64 copy of the data plus the N x N (or d x d) matrix.
    """
    chunks = [faces] if torch.is_tensor(faces) else list(faces)
    chunks = [c.reshape(c.shape[0], -1) for c in chunks if len(c)]
    if not chunks:
        raise FacebenchError("no images to compute eigenfaces from")
    n = sum(len(c) for c in chunks)
    d = chunks[0].shape[1]
    if k < 1 or k > min(n - 1, d):
        raise FacebenchError(f"K must be in 1..{min(n - 1, d)} for {n} images of {d} pixels, "
                             f"got {k}")
    mean = sum(c.double().sum(0) for c in chunks) / n
    if n <= d:  # Gram trick: N x N
        x = torch.empty(n, d, dtype=torch.float64)
        row = 0
        for c in chunks:
            x[row:row + len(c)] = c.double() - mean
            row += len(c)
        evals, v = torch.linalg.eigh(x @ x.T)
        evals, v = _top(evals, v, k, n)
        vectors = x.T @ v / evals.sqrt()
        del x
    else:  # d x d scatter, accumulated chunk by chunk
        scatter = torch.zeros(d, d, dtype=torch.float64)
        for c in chunks:
            xc = c.double() - mean
            scatter.addmm_(xc.T, xc)
        evals, vectors = torch.linalg.eigh(scatter)
        del scatter
        evals, vectors = _top(evals, vectors, k, n)
    vectors = vectors / vectors.norm(dim=0, keepdim=True)
    return EigenBasis(_fix_signs(vectors), mean, evals, size)


def default_eigen_dir() -> Path:
    from facebench.paths import cache_dir

    return cache_dir("eigen")


def basis_key(key_lines: Sequence[str]) -> str:
    """Hash of the exact image list (and anything else that changes the pixels)."""
    digest = hashlib.sha256(f"{FORMAT}\n{FACE_SIZE}\n".encode())
    for line in key_lines:
        digest.update(str(line).encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def load_basis_file(path) -> EigenBasis:
    data = load_torch_file(path, "eigenbasis")
    return EigenBasis.from_dict(data, str(path))


def cached_eigenbasis(images_u8: np.ndarray, key_lines: Sequence[str], k: int,
                      cache_dir=None, size: int = FACE_SIZE, announce: str | None = None
                      ) -> tuple[EigenBasis, Path]:
    """The top-``k`` eigenfaces of ``images_u8`` (uint8 N x H x W x 3), from the cache if
    a basis of the same image list and ``k`` is there; returns it and its cache file.
    ``announce`` is printed (stderr) only when the basis has to be computed."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_eigen_dir()
    key = basis_key(list(key_lines) + [f"n={len(images_u8)}", f"size={size}"])
    path = cache_dir / f"eigen-{len(images_u8)}img-{key[:16]}-K{k}.pt"
    if path.is_file():
        try:
            basis = load_basis_file(path)
            if basis.k == k and basis.size == size:
                return basis, path
        except FacebenchError:
            pass  # half-written or foreign file: rebuild it
    if announce:
        print(announce, file=sys.stderr)
    basis = compute_eigenbasis(list(faces_from_uint8(images_u8, size)), k, size)
    save_atomic({**basis.to_dict(), "key": key, "n_images": len(images_u8)}, path)
    return basis, path
