"""Detector-based 5-point alignment: ``arcface-5pt`` (ArcFace 112 template) and ``dlib-5pt``
(dlib's 150x150 face chip), both from YuNet detections.

``arcface-5pt``: ArcFace-family recognizers (SFace, insightface packs) were trained on crops
made by the least-squares similarity transform from five detected landmarks onto one fixed
template; any other geometry costs accuracy. So: YuNet through OpenCV, an Umeyama fit in
float64 (:mod:`._similarity`), and OpenCV's bilinear ``warpAffine`` with a constant-zero
border -- the same warp and border as OpenCV's ``FaceRecognizerSF.alignCrop``, which the
tests check it against pixel for pixel.

``dlib-5pt``: dlib's pipeline is detector box -> 5-point shape predictor -> face chip. The
predictor and the chip are dlib's own, ported (:mod:`._dlib_shape`, :mod:`._dlib_chip`); the
box comes from YuNet mapped onto the square boxes dlib's HOG detector gives, because HOG
itself lives in dlib's C++ source, not in a data file. The mapping (:data:`DLIB_BOX`) was
fitted to compiled dlib's chips of 50 LFW dev-train images (``tests/fixtures``) and checked
on the other 50.

Choices, each part of the aligner's ``key`` (with a version tag and the model files' sha256):

* **which face / no face**: see :mod:`._detect_align` (centre face for LFW; with no face the
  fixed fallback below, counted and warned once, or a :class:`NoFaceError` when strict).
* **arcface-5pt at other sizes**: the template is scaled uniformly by ``min(h, w) / 112`` and
  centred, so non-square crops keep the face undistorted. (insightface's own 128 px crop
  instead shifts the 112 template by 8 px unscaled; a recognizer wanting that declares its
  own geometry.) dlib chips are square; other sizes are dlib's chip at that size.
* **shrinking**: when the face must shrink by more than 2x (large photos), the image is first
  reduced by an integer factor with area averaging, so bilinear sampling does not alias.
  LFW frames never take that path (faces scale by about 0.9), so parity is unaffected.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from facebench.data import geometry as _geometry
from facebench.data.align import Aligner, _check_image, _size
from facebench.errors import FacebenchError
from facebench.registry import register_aligner

from . import _dlib_chip, _dlib_shape, _similarity
from ._detect_align import DetectingAligner
from ._yunet import YuNet, cached_sha256

#: bump when the geometry or the code that makes the crops changes (it names cache files)
VERSION = 1

#: ArcFace's 112x112 template: image-left eye, image-right eye, nose tip, image-left and
#: image-right mouth corner (insightface ``arcface_dst``; OpenCV's alignCrop uses the same)
ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
])
TEMPLATE_SIZE = 112
LFW_FRAME = 250

#: arcface-5pt's fallback: median YuNet landmarks (same order) of 400 LFW dev-train frames
#: (pairsDevTrain's images, shuffled with seed 0), rounded to 0.5 px, in the 250x250 frame;
#: scaled proportionally for frames of another size.
LFW_FALLBACK_LANDMARKS = np.array([
    [104.5, 112.5],
    [147.0, 112.5],
    [125.5, 136.5],
    [108.5, 155.0],
    [145.0, 154.5],
])

#: YuNet box (x, y, w, h) -> dlib-style square box: centre (x + w/2 + a*w, y + h/2 + b*w),
#: side k*w, as (a, b, k). Fitted by grid search on the mean chip difference to compiled
#: dlib's chips of the fixture's first 50 images.
DLIB_BOX = (0.0, 0.03, 1.15)
#: dlib-5pt's fallback: the median of those boxes over the 100 fixture (dev-train) frames,
#: (left, top, right, bottom) inclusive in the 250x250 frame, scaled for other frame sizes;
#: the shape predictor still runs inside it.
LFW_FALLBACK_BOX = (72.0, 78.0, 179.0, 184.0)
DLIB_PADDING = 0.25


def template_for(out_size) -> np.ndarray:
    """The ArcFace template for an ``(h, w)`` crop: uniform scale, centred."""
    h, w = _size(out_size)
    s = min(h, w) / TEMPLATE_SIZE
    return ARCFACE_TEMPLATE * s + [(w - TEMPLATE_SIZE * s) / 2, (h - TEMPLATE_SIZE * s) / 2]


def eyes_mouth_y(template: np.ndarray, out_size) -> Tuple[float, float]:
    """Where the template puts the eye line and the mouth line, as fractions of the crop's
    height (what a sticker or mask placed on the face needs to know of this geometry)."""
    h = _size(out_size)[0]
    return float(template[:2, 1].mean() / h), float(template[3:, 1].mean() / h)


def warp(img: np.ndarray, matrix: np.ndarray, out_size) -> np.ndarray:
    """``img`` through the 2x3 ``matrix`` (source -> crop pixels): bilinear, zero border, with
    an area-averaged integer pre-shrink when the map shrinks by more than 2x."""
    import cv2

    h, w = _size(out_size)
    small, m = shrink_plan(img.shape, matrix)
    if small is not None:
        img = cv2.resize(np.ascontiguousarray(img), small, interpolation=cv2.INTER_AREA)
    return cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def shrink_plan(shape, matrix) -> Tuple[Optional[Tuple[int, int]], np.ndarray]:
    """:func:`warp`'s pre-shrink: (the (w, h) the image is area-shrunk to, or None; the
    matrix from that image's pixels to the crop's)."""
    m = np.asarray(matrix, dtype=np.float64)
    scale = _similarity.scale_of(m)
    factor = int(1.0 / scale) if scale < 0.5 else 1
    if factor <= 1:
        return None, m
    src_h, src_w = shape[:2]
    small = (max(1, round(src_w / factor)), max(1, round(src_h / factor)))
    fx, fy = src_w / small[0], src_h / small[1]
    # a small pixel x' covers source x = fx * x' + (fx - 1) / 2 (pixel-centre convention)
    lin = m[:, :2] @ np.diag([fx, fy])
    return small, np.column_stack([lin, m[:, :2] @ [(fx - 1) / 2, (fy - 1) / 2] + m[:, 2]])


def warp_geometry(shape, matrix, out_size):
    """:func:`warp` of an image of ``shape`` as a linear map (pre-shrink included), for
    carrying perturbations between crop and photo."""
    small, m = shrink_plan(shape, matrix)
    return _geometry.warp_geometry(_geometry.invert_affine(m), _size(out_size), shape[:2],
                                   border="tap", shrink=small)


def dlib_chip_geometry(shape, landmarks, size: int, padding: float):
    """:func:`._dlib_chip.extract_chip` of an image of ``shape`` as a linear map: the same
    chip map and pre-shrink, dlib's border (a pixel whose 2x2 taps leave the image is 0)."""
    m = _dlib_chip.chip_to_image(landmarks, size, padding)
    step = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    factor = int(step) if step > 2 else 1
    small = None
    if factor > 1:  # the same arithmetic as extract_chip
        h, w = shape[:2]
        small = (max(1, round(w / factor)), max(1, round(h / factor)))
        fx, fy = w / small[0], h / small[1]
        back = np.array([[1 / fx, 0, -(fx - 1) / (2 * fx)], [0, 1 / fy, -(fy - 1) / (2 * fy)]])
        m = np.column_stack([back[:, :2] @ m[:, :2], back[:, :2] @ m[:, 2] + back[:, 2]])
    return _geometry.warp_geometry(m, (size, size), shape[:2], border="all", shrink=small)


def _frame_scale(frame) -> np.ndarray:
    """(x, y) scale from the 250 px LFW frame to ``frame`` (an image or its shape)."""
    shape = frame.shape if hasattr(frame, "shape") else tuple(frame)
    return np.array([shape[1] / LFW_FRAME, shape[0] / LFW_FRAME])


class FivePointAligner(DetectingAligner):
    """YuNet's 5 landmarks similarity-warped onto the (scaled) ArcFace template."""

    fallback_what = "the fixed LFW-median landmarks"

    def __init__(self, out_size=(112, 112), pick: str = "center", fallback: bool = True,
                 detector: Optional[YuNet] = None):
        super().__init__(out_size, pick, fallback, detector)
        self.template = template_for(self.out_size)
        self.eyes_mouth_y = eyes_mouth_y(self.template, self.out_size)
        h, w = self.out_size
        self.key = f"arcface5pt.v{VERSION}-{self.key_part()}-{h}x{w}-bilinear-zero"

    def landmarks(self, img: np.ndarray) -> Tuple[Optional[np.ndarray], Optional[float]]:
        """The chosen face's (5, 2) landmarks and score, or ``(None, None)`` for no face."""
        face = self.face(img)
        return (None, None) if face is None else (face[4:14].reshape(5, 2), float(face[14]))

    def matrix(self, img: np.ndarray) -> Tuple[np.ndarray, bool]:
        """(the 2x3 image -> crop matrix, whether a face was found); fallback or error
        exactly as a call would, but nothing is counted."""
        face = self.face(img)
        if face is None and not self.fallback:
            raise self.no_face()
        return self._matrix(img, face), face is not None

    def _matrix(self, img: np.ndarray, face) -> np.ndarray:
        points = (LFW_FALLBACK_LANDMARKS * _frame_scale(img) if face is None
                  else face[4:14].reshape(5, 2))
        return _similarity.umeyama(points, self.template)

    def crop(self, img: np.ndarray, face) -> np.ndarray:
        return warp(img, self._matrix(img, face), self.out_size)

    def crop_geometry(self, img: np.ndarray, face):
        return warp_geometry(img.shape, self._matrix(img, face), self.out_size)


class DlibChipAligner(DetectingAligner):
    """dlib's face chip: YuNet box -> dlib-style box -> dlib's 5-point predictor -> chip."""

    fallback_what = "the fixed LFW-median face box"

    def __init__(self, out_size=(150, 150), pick: str = "center", fallback: bool = True,
                 detector: Optional[YuNet] = None, predictor_path=None):
        super().__init__(out_size, pick, fallback, detector)
        h, w = self.out_size
        if h != w:
            raise FacebenchError(f"dlib-5pt makes square chips; asked for {h}x{w}")
        path = str(predictor_path or _dlib_shape.default_path())
        self.predictor = _dlib_shape.load_shape_predictor(path)
        a, b, k = DLIB_BOX
        self.key = (f"dlib5pt.v{VERSION}-{self.key_part()}-sp5.{cached_sha256(path)[:12]}"
                    f"-box{a:g},{b:g},{k:g}-{h}-pad{DLIB_PADDING:g}")

    @staticmethod
    def box(img: np.ndarray, face) -> Tuple[int, int, int, int]:
        """dlib-style (left, top, right, bottom) box for a YuNet row, or the fallback box."""
        if face is None:
            sx, sy = _frame_scale(img)
            left, top, right, bottom = LFW_FALLBACK_BOX
            return (round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))
        x, y, w, h = face[:4]
        a, b, k = DLIB_BOX
        cx, cy, side = x + w / 2 + a * w, y + h / 2 + b * w, k * w
        return (round(cx - side / 2), round(cy - side / 2),
                round(cx + side / 2), round(cy + side / 2))

    def landmarks(self, img: np.ndarray, face=None) -> np.ndarray:
        """dlib's 5 integer landmarks for ``face`` (a YuNet row; None: the fallback box)."""
        return _dlib_shape.predict(self.predictor, _check_image(img), self.box(img, face))

    def crop(self, img: np.ndarray, face) -> np.ndarray:
        return _dlib_chip.extract_chip(img, self.landmarks(img, face), self.out_size[0],
                                       DLIB_PADDING)

    def crop_geometry(self, img: np.ndarray, face):
        return dlib_chip_geometry(img.shape, self.landmarks(img, face), self.out_size[0],
                                  DLIB_PADDING)


class FixedFivePoint(Aligner):
    """The ArcFace warp of the LFW-median landmarks, with no detector: ``arcface-5pt``'s
    fallback geometry used for every frame (the fixed-crop baseline of LFW's centred faces).
    """

    def __init__(self, out_size=(112, 112)):
        self.out_size = _size(out_size)
        self.template = template_for(self.out_size)
        self.eyes_mouth_y = eyes_mouth_y(self.template, self.out_size)
        h, w = self.out_size
        self.key = f"arcfacefixed.v{VERSION}-lfwmedian-{h}x{w}-bilinear-zero"

    def _matrix(self, shape) -> np.ndarray:
        return _similarity.umeyama(LFW_FALLBACK_LANDMARKS * _frame_scale(shape), self.template)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        img = _check_image(img)
        return warp(img, self._matrix(img.shape), self.out_size)

    def geometry(self, frame):
        shape = frame.shape if hasattr(frame, "shape") else tuple(frame)
        return warp_geometry(shape, self._matrix(shape), self.out_size)


@register_aligner("arcface-5pt")
def arcface_5pt(out_size=(112, 112), pick: str = "center", fallback: bool = True) -> Aligner:
    """YuNet 5 landmarks -> ArcFace 112 template (similarity); LFW: centre face, photos: largest"""
    return FivePointAligner(out_size, pick, fallback)


@register_aligner("arcface-fixed")
def arcface_fixed(out_size=(112, 112)) -> Aligner:
    """the ArcFace warp of the LFW-median landmarks (dev-train), no detector"""
    return FixedFivePoint(out_size)


@register_aligner("dlib-5pt")
def dlib_5pt(out_size=(150, 150), pick: str = "center", fallback: bool = True) -> Aligner:
    """dlib's 150 px face chip (ported 5-point predictor) from a YuNet box (face as arcface-5pt)"""
    return DlibChipAligner(out_size, pick, fallback)
