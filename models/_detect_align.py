"""What every detector-based aligner shares: which face to take, and what to do with none.

LFW frames often hold several faces and the named person is the one Viola-Jones centred, so
``pick="center"`` takes the detection whose box centre is nearest the image centre;
``pick="largest"`` (the largest face the photo's border does not cut) suits a user's own
photos. When no face is found, ``fallback=True`` cuts a
documented fixed geometry instead (each aligner says which), counts it in :attr:`fallbacks`
and warns once, so a dataset never stops on one hard photo; ``fallback=False`` raises
:class:`NoFaceError`, which the image loader turns into a message naming the file.
"""
from __future__ import annotations

import threading
import warnings
from typing import Optional

import numpy as np

from facebench.data.align import Aligner, _check_image, _size
from facebench.data.images import NoFaceError
from facebench.errors import FacebenchError

from ._yunet import YuNet

PICKS = ("center", "largest")
__all__ = ["DetectingAligner", "NoFaceError", "PICKS", "choose"]


def choose(faces: np.ndarray, shape, pick: str = "center") -> Optional[np.ndarray]:
    """The one YuNet row ``pick`` selects from ``faces`` (N, 15) in an image of ``shape``."""
    if len(faces) == 0:
        return None
    if pick == "largest":
        # a face the photo's border cuts is rarely its subject (a bystander at the edge):
        # the largest face wholly inside wins, else the largest. On LFW dev-test's 1549
        # frames a plain largest-face rule took an edge face over the subject in 8 frames
        # (sface's dev-test EER 2.4% instead of 1.2%); this rule leaves 1 of them.
        area = faces[:, 2] * faces[:, 3]
        inside = ((faces[:, 0] >= 0) & (faces[:, 1] >= 0)
                  & (faces[:, 0] + faces[:, 2] <= shape[1])
                  & (faces[:, 1] + faces[:, 3] <= shape[0]))
        return faces[int(np.argmax(np.where(inside, area, -1.0) if inside.any() else area))]
    centre = np.array([shape[1], shape[0]], dtype=np.float64) / 2
    box_centres = faces[:, 0:2] + faces[:, 2:4] / 2
    return faces[int(np.argmin(np.linalg.norm(box_centres - centre, axis=1)))]


class DetectingAligner(Aligner):
    """Detect with YuNet, pick one face, then :meth:`crop` it (``face`` is None: fallback).

    ``detected`` and ``fallbacks`` count the images aligned each way since construction
    (thread-safe: the image loader aligns in a thread pool).
    """

    fallback_what = "a fixed geometry"

    def __init__(self, out_size, pick: str = "center", fallback: bool = True,
                 detector: Optional[YuNet] = None):
        if pick not in PICKS:
            raise FacebenchError(f"face pick must be one of {', '.join(PICKS)}, got {pick!r}")
        self.out_size = _size(out_size)
        self.pick = pick
        self.fallback = bool(fallback)
        self.detector = detector or YuNet()
        self.detected = 0
        self.fallbacks = 0
        self._lock = threading.Lock()

    def key_part(self) -> str:
        """Detector file, threshold, pick and fallback: the key's detection half."""
        return (f"yunet.{self.detector.sha256[:12]}-s{self.detector.score_threshold:g}"
                f"-{self.pick}-{'fallback' if self.fallback else 'strict'}")

    def face(self, img: np.ndarray) -> Optional[np.ndarray]:
        """The chosen YuNet row (box, 5 landmarks, score) of ``img``, or None."""
        return choose(self.detector.detect(_check_image(img)), img.shape, self.pick)

    def no_face(self) -> NoFaceError:
        """The error for an image without a face (the loader puts the file's name in)."""
        return NoFaceError("<image>", "no face found in image ",
                           f" (YuNet, score >= {self.detector.score_threshold:g})")

    def crop(self, img: np.ndarray, face: Optional[np.ndarray]) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - interface

    def geometry(self, frame):
        """The crop of ``frame`` as a linear map of the photo (see ``Aligner.geometry``):
        the face is detected on the photo (a float frame is rounded to uint8 for the
        detector), fallback or error exactly as a call would, nothing counted; the warp it
        gives is then fixed."""
        img = np.asarray(frame)
        if img.dtype != np.uint8:
            img = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
        img = _check_image(img)
        face = self.face(img)
        if face is None and not self.fallback:
            raise self.no_face()
        return self.crop_geometry(img, face)

    def crop_geometry(self, img: np.ndarray, face: Optional[np.ndarray]):
        """The map :meth:`crop` applies to ``img`` for ``face`` (subclasses say it)."""
        raise FacebenchError(f"aligner {self.key} cannot map its crop to a linear map of the "
                             f"photo, so perturbations cannot be carried through it")

    def __call__(self, img: np.ndarray) -> np.ndarray:
        img = _check_image(img)
        face = self.face(img)
        if face is None and not self.fallback:
            raise self.no_face()
        with self._lock:
            if face is not None:
                self.detected += 1
            else:
                self.fallbacks += 1
            first_fallback = face is None and self.fallbacks == 1
        if first_fallback:
            warnings.warn(f"{self.key}: no face found in an image; it was cut with "
                          f"{self.fallback_what} instead (see .fallbacks for the count)",
                          RuntimeWarning, stacklevel=2)
        return self.crop(img, face)
