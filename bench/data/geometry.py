"""Aligners as linear maps of the photo: a float crop, and the way back for a perturbation.

Every aligner facebench ships samples the photo linearly (PIL's bilinear resize of a box,
OpenCV's bilinear affine warp, dlib's bilinear chip), so for one photo its crop is a fixed
matrix ``C`` (crop pixels x photo pixels, the same for each colour channel). That makes two
things exact that cross-model transfer needs:

* the **float crop** ``C x`` of a float photo, without the uint8 rounding of the cached crops
  (which differ from it by at most about one grey level);
* the **way back**: a crop-space perturbation ``delta`` becomes the photo perturbation
  ``d = argmin ||C d - delta||^2 + ridge ||d||^2``, the Tikhonov-regularised least-squares
  inverse of the crop. It is zero wherever the crop reads nothing (outside the box or the
  warped quadrilateral). Where the crop shrinks the photo (``C`` has full row rank) the round
  trip ``C d`` reproduces ``delta`` up to the ridge; where it enlarges the photo (dlib's
  150 px chip is cut from a 122 px box of an LFW frame) only the part of ``delta`` a photo can
  hold survives -- the projection onto the crop's range, the nearest crop any photo edit can
  produce. ``ridge`` bounds the gain on nearly unreachable components (at most
  ``1 / (2 sqrt(ridge))``).

Two concrete maps: :class:`SeparableGeometry` (a box resized: one row and one column matrix,
the Tikhonov inverse through their SVDs) and :class:`SparseGeometry` (any bilinear warp, as a
sparse matrix; the inverse by one sparse factorisation). Arrays are ``H x W x C`` floats.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..errors import FacebenchError

#: default Tikhonov weight of the way back, relative to the crop's per-pixel weight (rows of
#: a bilinear map sum to 1): components with singular value s are kept by s^2 / (s^2 + ridge)
RIDGE = 1e-3


def _as_float(frame) -> np.ndarray:
    """uint8 images become [0, 1] floats; float arrays are taken as they are."""
    arr = np.asarray(frame)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    return arr.astype(np.float64, copy=False)


def _hwc(arr: np.ndarray, shape, what: str) -> Tuple[np.ndarray, bool]:
    """``arr`` as H x W x C (a 2-D array gets one channel, dropped again on return)."""
    arr = np.asarray(arr, dtype=np.float64)
    flat = arr.ndim == 2
    if flat:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[:2] != tuple(shape):
        raise FacebenchError(f"{what} must be {shape[0]}x{shape[1]}(xC), got {np.shape(arr)}")
    return arr, flat


class CropGeometry:
    """One photo's crop as a linear map: ``crop`` (photo -> crop) and ``to_frame`` (back)."""

    frame_shape: Tuple[int, int] = (0, 0)
    out_size: Tuple[int, int] = (0, 0)

    def crop(self, frame) -> np.ndarray:
        """The float crop of ``frame`` (H x W[x C]; uint8 is read as [0, 1])."""
        x, flat = _hwc(_as_float(frame), self.frame_shape, "frame")
        out = self._apply(x)
        return out[..., 0] if flat else out

    def to_frame(self, delta) -> np.ndarray:
        """The photo perturbation whose crop is nearest ``delta`` (h x w[x C]); zero outside
        the pixels the crop reads."""
        d, flat = _hwc(delta, self.out_size, "crop perturbation")
        out = self._back(d)
        return out[..., 0] if flat else out

    def roundtrip(self, delta) -> np.ndarray:
        """``crop(to_frame(delta))``: the part of ``delta`` a photo can hold."""
        return self.crop(self.to_frame(delta))

    def support(self) -> np.ndarray:
        """Bool H x W mask of the photo pixels the crop reads."""
        raise NotImplementedError  # pragma: no cover - interface

    def _apply(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _back(self, d: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


# ---------------------------------------------------------------- a resized box (PIL)

def pil_bilinear(in_size: int, lo: float, hi: float, out_size: int) -> np.ndarray:
    """The (out_size, in_size) weights PIL's BILINEAR resize gives the span [lo, hi).

    Pillow's ``precompute_coeffs``: output pixel ``i`` is centred at ``lo + (i + 0.5) s``
    (``s = (hi - lo) / out_size``); the triangle filter is widened by ``max(s, 1)`` (so
    shrinking is antialiased); taps run over the input pixels whose centres lie within
    the support, clipped to the image, and are normalised to sum to 1.
    """
    scale = (hi - lo) / out_size
    filterscale = max(scale, 1.0)
    support = filterscale  # bilinear: support 1, widened
    out = np.zeros((out_size, in_size))
    for i in range(out_size):
        centre = lo + (i + 0.5) * scale
        xmin = max(int(centre - support + 0.5), 0)  # C's (int) truncates toward zero
        xmax = min(int(centre + support + 0.5), in_size)
        taps = np.arange(xmin, xmax)
        w = np.clip(1.0 - np.abs((taps - centre + 0.5) / filterscale), 0.0, None)
        if w.sum() != 0.0:
            w = w / w.sum()
        out[i, xmin:xmax] = w
    return out


def area_weights(in_size: int, out_size: int) -> np.ndarray:
    """The (out_size, in_size) weights of OpenCV's INTER_AREA shrink: output pixel ``i``
    averages the input span ``[i s, (i + 1) s)``, ``s = in_size / out_size``, by overlap."""
    s = in_size / out_size
    out = np.zeros((out_size, in_size))
    for i in range(out_size):
        a, b = i * s, min((i + 1) * s, in_size)
        for j in range(int(np.floor(a)), int(np.ceil(b))):
            out[i, j] = min(b, j + 1) - max(a, j)
        out[i] /= out[i].sum()
    return out


def _tikhonov_factor(m: np.ndarray):
    """Thin SVD of ``m`` restricted to the columns it uses, and their indices."""
    used = np.flatnonzero(np.abs(m).sum(axis=0) > 0)
    u, s, vt = np.linalg.svd(m[:, used], full_matrices=False)
    return u, s, vt, used


class SeparableGeometry(CropGeometry):
    """``crop = R x C^T`` per channel: a box resized with separable weights."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, ridge: float = RIDGE):
        self.rows, self.cols = np.asarray(rows, float), np.asarray(cols, float)
        self.out_size = (self.rows.shape[0], self.cols.shape[0])
        self.frame_shape = (self.rows.shape[1], self.cols.shape[1])
        self.ridge = float(ridge)
        self._svd = None

    def _apply(self, x):
        return np.einsum("iI,IJc,jJ->ijc", self.rows, x, self.cols, optimize=True)

    def _back(self, d):
        # C = R (x) K: its SVD is the Kronecker product of the factors', so the Tikhonov
        # inverse filters each pair of singular values s_i t_j by s t / ((s t)^2 + ridge)
        # (on the photo rows and columns the crop reads: exactly zero elsewhere)
        if self._svd is None:
            self._svd = (_tikhonov_factor(self.rows), _tikhonov_factor(self.cols))
        (ur, sr, vr, used_r), (uc, sc, vc, used_c) = self._svd
        st = sr[:, None] * sc[None, :]
        gain = st / (st ** 2 + self.ridge)
        coef = np.einsum("Ii,IJc,Jj->ijc", ur, d, uc, optimize=True) * gain[..., None]
        out = np.zeros((*self.frame_shape, d.shape[2]))
        out[np.ix_(used_r, used_c)] = np.einsum("iI,ijc,jJ->IJc", vr, coef, vc, optimize=True)
        return out

    def support(self):
        return np.outer(np.abs(self.rows).sum(0) > 0, np.abs(self.cols).sum(0) > 0)


def resize_geometry(frame_shape, region, out_size, ridge: float = RIDGE) -> SeparableGeometry:
    """PIL's ``resize((w, h), BILINEAR, box=region)`` of an ``frame_shape`` image as a map;
    ``region`` is (left, top, right, bottom) in pixels."""
    (fh, fw), (h, w) = tuple(frame_shape)[:2], out_size
    left, top, right, bottom = (float(v) for v in region)
    if (left, top, right, bottom) == (0.0, 0.0, float(fw), float(fh)) and (h, w) == (fh, fw):
        return SeparableGeometry(np.eye(fh), np.eye(fw), ridge)  # PIL returns a copy
    return SeparableGeometry(pil_bilinear(fh, top, bottom, h), pil_bilinear(fw, left, right, w),
                             ridge)


# ---------------------------------------------------------------- any bilinear warp

class SparseGeometry(CropGeometry):
    """``crop = C x`` with ``C`` a sparse (h*w, H*W) matrix, rows and columns row-major."""

    def __init__(self, matrix, out_size, frame_shape, ridge: float = RIDGE):
        import scipy.sparse as sp

        self.matrix = sp.csr_matrix(matrix)
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        if self.matrix.shape != (self.out_size[0] * self.out_size[1],
                                 self.frame_shape[0] * self.frame_shape[1]):
            raise FacebenchError(f"crop matrix {self.matrix.shape} does not map a "
                                 f"{self.frame_shape} photo to a {self.out_size} crop")
        self.ridge = float(ridge)
        self._solve = None

    def _apply(self, x):
        flat = x.reshape(-1, x.shape[2])
        return np.asarray(self.matrix @ flat).reshape(*self.out_size, x.shape[2])

    def _back(self, d):
        import scipy.sparse as sp
        from scipy.sparse.linalg import factorized

        if self._solve is None:  # (C C^T + ridge I) y = delta, then d = C^T y
            gram = (self.matrix @ self.matrix.T + self.ridge * sp.identity(
                self.matrix.shape[0], format="csr")).tocsc()
            self._solve = factorized(gram)
        flat = d.reshape(-1, d.shape[2])
        y = np.column_stack([self._solve(np.ascontiguousarray(flat[:, c]))
                             for c in range(flat.shape[1])])
        return np.asarray(self.matrix.T @ y).reshape(*self.frame_shape, d.shape[2])

    def support(self):
        used = np.asarray(abs(self.matrix).sum(axis=0)).ravel() > 0
        return used.reshape(self.frame_shape)


def bilinear_warp_matrix(crop_to_frame, out_size, frame_shape, border: str = "tap"):
    """Sparse (h*w, H*W) bilinear sampling of the photo at ``crop_to_frame @ (col, row, 1)``
    for every crop pixel (pixel centres at integer coordinates, OpenCV's and dlib's
    convention). ``border="tap"``: taps outside the photo read 0 (OpenCV's BORDER_CONSTANT);
    ``"all"``: a crop pixel whose 2x2 neighbourhood leaves the photo is 0 (dlib's chips)."""
    import scipy.sparse as sp

    if border not in ("tap", "all"):
        raise FacebenchError(f"border must be 'tap' or 'all', got {border!r}")
    (h, w), (fh, fw) = out_size, tuple(frame_shape)[:2]
    m = np.asarray(crop_to_frame, dtype=np.float64)
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    x = m[0, 0] * cols + m[0, 1] * rows + m[0, 2]
    y = m[1, 0] * cols + m[1, 1] * rows + m[1, 2]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    inside_all = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < fw) & (y0 + 1 < fh)
    out_idx = np.arange(h * w).reshape(h, w)
    r, c, v = [], [], []
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                       (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xs, ys = x0 + dx, y0 + dy
        ok = (xs >= 0) & (xs < fw) & (ys >= 0) & (ys < fh) & (wt != 0)
        if border == "all":
            ok &= inside_all
        r.append(out_idx[ok])
        c.append(ys[ok] * fw + xs[ok])
        v.append(wt[ok])
    return sp.csr_matrix((np.concatenate(v), (np.concatenate(r), np.concatenate(c))),
                         shape=(h * w, fh * fw))


def area_shrink_matrix(frame_shape, small_size):
    """Sparse OpenCV INTER_AREA resize of an ``frame_shape`` photo to ``small_size``
    ``(w, h)`` (as ``cv2.resize`` takes it), rows and columns row-major."""
    import scipy.sparse as sp

    (fh, fw), (sw, sh) = tuple(frame_shape)[:2], small_size
    return sp.kron(sp.csr_matrix(area_weights(fh, sh)), sp.csr_matrix(area_weights(fw, sw)),
                   format="csr")


def warp_geometry(crop_to_frame, out_size, frame_shape, border: str = "tap",
                  shrink: Optional[Tuple[int, int]] = None,
                  ridge: float = RIDGE) -> SparseGeometry:
    """A bilinear warp as a map; ``shrink=(w, h)``: the photo is first area-shrunk to that
    size and ``crop_to_frame`` maps crop pixels into the shrunk photo."""
    frame_shape = tuple(frame_shape)[:2]
    if shrink is None:
        matrix = bilinear_warp_matrix(crop_to_frame, out_size, frame_shape, border)
    else:
        small = bilinear_warp_matrix(crop_to_frame, out_size, (shrink[1], shrink[0]), border)
        matrix = small @ area_shrink_matrix(frame_shape, shrink)
    return SparseGeometry(matrix, out_size, frame_shape, ridge)


def invert_affine(matrix) -> np.ndarray:
    """The inverse of a 2x3 affine map."""
    m = np.asarray(matrix, dtype=np.float64)
    lin = np.linalg.inv(m[:, :2])
    return np.column_stack([lin, -lin @ m[:, 2]])
