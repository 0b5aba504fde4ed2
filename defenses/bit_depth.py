"""Colour bit-depth reduction, the first squeezer of feature squeezing (Xu et al., NDSS 2018).

Quantising each channel to ``2**bits`` evenly spaced levels erases perturbations smaller than
half a level. The staircase has zero gradient almost everywhere, so adaptive attacks use BPDA.
"""
from __future__ import annotations

import torch

from facebench.defense import Defense
from facebench.params import Param, ParamSpec
from facebench.registry import register_defense

from ._util import check_images


@register_defense("bit-depth")
class BitDepth(Defense):
    """Feature squeezing: quantise each colour channel to 2**bits levels (bits 1-8)."""

    table_order = 2.0  # column/row position in the SIDE paper's Table 1
    differentiable = False
    randomized = False

    # 5 bits is Xu et al.'s setting for colour images (CIFAR-10, ImageNet), where it barely
    # changed clean accuracy; its 32 levels are ~8/255 apart.
    spec = ParamSpec(Param("bits", 5, int, low=1, high=8, doc="bits per colour channel"))

    def __init__(self, bits: int = 5):
        super().__init__(bits=bits)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images("bit-depth", x)
        top = float(2 ** self.bits - 1)
        # Xu et al.'s formula: round(x * (2^b - 1)) / (2^b - 1); computed in float32 so half
        # precision inputs do not lose levels, then cast back.
        return (x.float().clamp(0.0, 1.0) * top).round().div(top).to(x.dtype)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"
