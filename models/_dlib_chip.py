"""dlib's face chip (``get_face_chip_details`` + ``extract_image_chip``) from 5 landmarks.

dlib's face recognition ResNet was trained on these chips, so reproducing them -- down to
dlib's half-pixel conventions -- is what makes a port's descriptors match compiled dlib's.
The chip is the similarity transform that best maps dlib's 5-point mean face (padded by
``padding`` on every side) onto the landmarks; dlib then samples it as a rectangle centred on
the image of the chip point ``(size/2, size/2)``, ``size * scale`` wide, whose *first and last*
pixel centres span ``size * scale - 1`` image pixels (its inclusive rectangle convention), with
bilinear interpolation truncated to integers and black wherever the 2x2 neighbourhood leaves
the image.

dlib samples faces larger than twice the chip from an image pyramid; that case uses an
area-averaged integer pre-shrink here instead, so only there the chip is close to, not
bit-equal to, dlib's (LFW faces never take that path).
"""
from __future__ import annotations

import numpy as np

from . import _similarity

#: dlib's 5-point mean face in the unpadded [0, 1] chip frame, in the shape predictor's part
#: order: image-right eye outer and inner corner, image-left eye outer and inner, nose base
MEAN_FACE_5 = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])


def chip_to_image(landmarks, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """2x3 matrix mapping chip pixel (col, row) to image (x, y), as dlib samples the chip."""
    chip_pts = (padding + MEAN_FACE_5) / (2 * padding + 1) * size
    tform = _similarity.umeyama(chip_pts, np.asarray(landmarks, dtype=np.float64))
    lin = tform[:, :2]
    scale = float(np.hypot(*lin[:, 0]))
    rot = lin / scale
    centre = lin @ [size / 2, size / 2] + tform[:, 2]
    extent = size * scale - 1  # centred_drect: the rectangle spans width - 1 between centres
    step = extent / (size - 1)
    out = np.empty((2, 3))
    out[:, :2] = rot * step
    out[:, 2] = centre - rot @ [extent / 2, extent / 2]
    return out


def _bilinear(img: np.ndarray, mapping: np.ndarray, size: int) -> np.ndarray:
    """dlib's ``interpolate_bilinear`` over a (size, size) grid, truncating, black outside."""
    h, w = img.shape[:2]
    cols, rows = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    x = mapping[0, 0] * cols + mapping[0, 1] * rows + mapping[0, 2]
    y = mapping[1, 0] * cols + mapping[1, 1] * rows + mapping[1, 2]
    left, top = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    ok = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    left, top = np.where(ok, left, 0), np.where(ok, top, 0)
    lr, tb = (x - left)[..., None], (y - top)[..., None]
    src = img.astype(np.float64)
    tl, tr = src[top, left], src[top, left + 1]
    bl, br = src[top + 1, left], src[top + 1, left + 1]
    value = (1 - tb) * ((1 - lr) * tl + lr * tr) + tb * ((1 - lr) * bl + lr * br)
    out = np.clip(value, 0, 255).astype(np.uint8)  # the cast truncates, as dlib's does
    out[~ok] = 0
    return out


def extract_chip(img: np.ndarray, landmarks, size: int = 150,
                 padding: float = 0.25) -> np.ndarray:
    """The (size, size, 3) uint8 face chip of ``img`` for dlib's 5 ``landmarks``."""
    m = chip_to_image(landmarks, size, padding)
    step = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    factor = int(step) if step > 2 else 1
    if factor > 1:
        import cv2

        h, w = img.shape[:2]
        small = (max(1, round(w / factor)), max(1, round(h / factor)))
        img = cv2.resize(np.ascontiguousarray(img), small, interpolation=cv2.INTER_AREA)
        fx, fy = w / small[0], h / small[1]
        # image x = fx * x' + (fx - 1) / 2, so x' = (x - (fx - 1) / 2) / fx
        back = np.array([[1 / fx, 0, -(fx - 1) / (2 * fx)], [0, 1 / fy, -(fy - 1) / (2 * fy)]])
        m = np.column_stack([back[:, :2] @ m[:, :2], back[:, :2] @ m[:, 2] + back[:, 2]])
    return _bilinear(img, m, size)
