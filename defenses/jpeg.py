"""JPEG compression as a purifier (Dziugaite et al. 2016; Das et al. 2017; Guo et al. 2018).

Lossy re-encoding drops the high-frequency DCT detail where small perturbations tend to live.
The round trip goes through PIL exactly as a real image file would (8-bit rounding, 4:2:0
chroma subsampling), so it has no useful gradient: adaptive attacks use BPDA.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from facebench.defense import Defense
from facebench.params import Param, ParamSpec
from facebench.registry import register_defense

from ._util import check_images, from_hwc, to_uint8_hwc


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode one uint8 H×W×3 image as JPEG at ``quality`` and decode it again."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


@register_defense("jpeg")
class JPEG(Defense):
    """JPEG compression round trip (PIL, per image); quality 1-100."""

    table_order = 1.0  # column/row position in the SIDE paper's Table 1
    differentiable = False
    randomized = False

    # 75 is PIL's and libjpeg's default, and the setting Guo et al. (2018) report.
    spec = ParamSpec(Param("quality", 75, int, low=1, high=100, doc="JPEG quality"))

    def __init__(self, quality: int = 75):
        super().__init__(quality=quality)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images("jpeg", x)
        imgs = to_uint8_hwc(x)
        out = np.stack([jpeg_roundtrip(im, self.quality) for im in imgs]) if len(imgs) else imgs
        return from_hwc(out, x)

    def extra_repr(self) -> str:
        return f"quality={self.quality}"
