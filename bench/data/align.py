"""Aligners: turn a decoded photo into the crop a recognizer expects.

LFW images are 250x250 frames roughly centred on the face by the Viola-Jones detector, so a
fixed box reproduces a detector+landmark alignment closely without running a detector at
benchmark time (and keeps the attacked pixels identical across runs). Each aligner has a
``key`` that names it in cache files: change the geometry, and the cache key changes too.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
from PIL import Image

from ..errors import FacebenchError
from ..registry import ALIGNERS, register_aligner
from . import geometry as _geometry  # a module, so its code is not part of crop cache keys

LFW_FRAME = 250  # FixedCrop boxes are given in a 250x250 frame (LFW's, scaled to others)

# A plain centred square, for recognizers trained on loose centre crops.
CENTER_BOX: Tuple[float, float, float, float] = (50.0, 50.0, 150.0, 150.0)


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise FacebenchError(
            f"aligner input must be a uint8 HxWx3 RGB image, got {img.dtype} {img.shape}"
        )
    return img


def _frame_shape(frame) -> Tuple[int, int]:
    """(H, W) of an image, or of a shape tuple (fixed geometries need no pixels)."""
    shape = frame.shape if hasattr(frame, "shape") else tuple(frame)
    if len(shape) < 2 or min(int(shape[0]), int(shape[1])) < 1:
        raise FacebenchError(f"a photo frame needs a height and a width, got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def _size(out_size) -> Tuple[int, int]:
    if isinstance(out_size, (int, np.integer)):
        out_size = (out_size, out_size)
    h, w = (int(v) for v in out_size)
    if h < 1 or w < 1:
        raise FacebenchError(f"aligned crop size must be positive, got {h}x{w}")
    return h, w


class Aligner:
    """Base class: ``aligner(img uint8 HxWx3) -> uint8 hxwx3`` with ``out_size == (h, w)``."""

    key: str = "aligner"
    out_size: Tuple[int, int] = (0, 0)

    def __call__(self, img: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    # -- the crop as a linear map of the photo (cross-geometry transfer) ----------------
    def geometry(self, frame) -> "_geometry.CropGeometry":
        """This aligner's crop of ``frame`` (an image; fixed geometries also take its
        shape) as a linear map: see :mod:`facebench.data.geometry`. Aligners that cannot
        say it raise FacebenchError."""
        raise FacebenchError(f"aligner {self.key} cannot map its crop to a linear map of the "
                             f"photo, so perturbations cannot be carried through it")

    def crop_float(self, frame) -> np.ndarray:
        """The crop of a float ``frame`` (H x W x 3, [0, 1]; uint8 is divided by 255), by
        the same weights as :meth:`__call__` but without rounding to uint8."""
        return self.geometry(frame).crop(frame)

    def to_frame(self, delta_crop, frame) -> np.ndarray:
        """A crop-space perturbation (h x w x 3) as the photo perturbation whose crop is
        nearest it (least squares, lightly regularised); zero where the crop reads nothing.
        ``frame``: the photo (or, for fixed geometries, its shape)."""
        return self.geometry(frame).to_frame(delta_crop)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key})"


class FixedCrop(Aligner):
    """Crop a fixed, possibly fractional, box of the LFW frame and resize it.

    ``box`` is ``(left, top, width, height)`` in a 250x250 frame; images of another size get
    the box scaled proportionally. Resizing is PIL's bilinear filter over the sub-pixel box,
    which widens its support when shrinking, so downscaling is antialiased.
    """

    def __init__(self, box, out_size=(150, 150)):
        left, top, width, height = (float(v) for v in box)
        if width <= 0 or height <= 0 or left < 0 or top < 0 or \
                left + width > LFW_FRAME or top + height > LFW_FRAME:
            raise FacebenchError(
                f"crop box {tuple(box)} (left, top, width, height) must lie inside the "
                f"{LFW_FRAME}x{LFW_FRAME} LFW frame"
            )
        self.box = (left, top, width, height)
        self.out_size = _size(out_size)
        coords = ",".join(f"{v:g}" for v in self.box)
        self.key = f"crop{coords}-{self.out_size[0]}x{self.out_size[1]}-bilinear"

    def region(self, h_img: int, w_img: int) -> Tuple[float, float, float, float]:
        """The box as (left, top, right, bottom) pixels of an ``h_img x w_img`` image."""
        sx, sy = w_img / LFW_FRAME, h_img / LFW_FRAME
        left, top, width, height = self.box
        return (left * sx, top * sy, (left + width) * sx, (top + height) * sy)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        img = _check_image(img)
        h, w = self.out_size
        out = Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR,
                                          box=self.region(*img.shape[:2]))
        return np.asarray(out, dtype=np.uint8)

    def geometry(self, frame) -> "_geometry.SeparableGeometry":
        """PIL's bilinear box weights for a photo of ``frame``'s size (an image or shape)."""
        fh, fw = _frame_shape(frame)
        return _geometry.resize_geometry((fh, fw), self.region(fh, fw), self.out_size)


class ResizeOnly(Aligner):
    """For crops that are already aligned: just resize (PIL bilinear, antialiased)."""

    def __init__(self, out_size=(150, 150)):
        self.out_size = _size(out_size)
        self.key = f"resize-{self.out_size[0]}x{self.out_size[1]}-bilinear"

    def __call__(self, img: np.ndarray) -> np.ndarray:
        img = _check_image(img)
        h, w = self.out_size
        if img.shape[:2] == (h, w):
            return img.copy()
        out = Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR)
        return np.asarray(out, dtype=np.uint8)

    def geometry(self, frame) -> "_geometry.SeparableGeometry":
        """PIL's bilinear resize weights (the identity at the crop's own size)."""
        fh, fw = _frame_shape(frame)
        return _geometry.resize_geometry((fh, fw), (0, 0, fw, fh), self.out_size)


@register_aligner("center")
def center(out_size=(150, 150)) -> Aligner:
    """fixed centred 150 px square of a 250 px frame (loose centre crops)"""
    return FixedCrop(CENTER_BOX, out_size)


@register_aligner("resize")
def resize(out_size=(150, 150)) -> Aligner:
    """no geometry: resize crops that are already aligned"""
    return ResizeOnly(out_size)


def get_aligner(name: str, out_size=(150, 150)) -> Aligner:
    """The aligner registered as ``name`` producing ``out_size`` crops."""
    return ALIGNERS.get(name)(out_size)


def recognizer_aligner(recognizer) -> Aligner:
    """The geometry ``recognizer`` declares (``.alignment``) at its ``.input_size``."""
    size = getattr(recognizer, "input_size", (150, 150))
    return get_aligner(getattr(recognizer, "alignment", "center"), size)


#: ``--align`` words besides a registered aligner's name
ALIGN_WORDS = ("auto", "detect", "fixed")


def _recognizer_name(recognizer) -> str:
    return getattr(recognizer, "registry_name", None) or type(recognizer).__name__


def aligner_name(recognizer, align: str) -> str:
    """The registered aligner ``--align`` names for ``recognizer``: ``detect`` / ``fixed``
    are the geometries the recognizer declares for each, anything else an aligner's name
    (checked, with a did-you-mean)."""
    if align in ("detect", "fixed"):
        name = getattr(recognizer, f"{align}_alignment", None)
        if not name:
            raise FacebenchError(
                f"recognizer {_recognizer_name(recognizer)} declares no --align {align} "
                f"geometry; name a registered aligner instead (`facebench list`)")
        return name
    ALIGNERS.get(align)
    return align


def chosen_aligner(recognizer, align: str, pick: str = "center",
                   fallback: bool = True) -> Aligner:
    """The aligner ``--align`` picks for ``recognizer`` at its input size. A detecting
    aligner takes ``pick`` (which face) and ``fallback`` (what a photo with no face gets:
    a fixed geometry, or an error the loader reports); other aligners ignore both."""
    import inspect

    factory = ALIGNERS.get(aligner_name(recognizer, align))
    accepted = inspect.signature(factory).parameters
    options = {k: v for k, v in (("pick", pick), ("fallback", fallback)) if k in accepted}
    return factory(getattr(recognizer, "input_size", (150, 150)), **options)
