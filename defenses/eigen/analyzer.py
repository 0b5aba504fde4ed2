"""The antigen analyzer H of SIDE, shared with PIN's selector (which drops its BN).

Topology follows the authors' code (digest section 1.12(d)): 3x3 stem conv (no bias) +
PReLU, then 8 residual blocks at widths (w0,w0,w1,w1,w2,w2,w3,w3) with strides
(2,1,2,1,2,1,2,1); each block is conv3x3(s1)-BN-PReLU-conv3x3(stride)-BN-PReLU plus a
1x1-conv(stride)+BN shortcut in *every* block, summed with no activation after the sum;
then Linear(w3 * (s/16)^2 -> 512) + BN1d + PReLU. ``bn=False`` drops every BN.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from facebench.errors import FacebenchError

WIDTHS = (64, 128, 256, 512)


class ResidualBlock(nn.Module):
    """conv3x3-[BN]-PReLU-conv3x3(stride)-[BN]-PReLU + conv1x1(stride)-[BN] shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, bn: bool = True):
        super().__init__()

        def norm(c):
            return nn.BatchNorm2d(c) if bn else nn.Identity()

        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False), norm(cout), nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False), norm(cout), nn.PReLU(cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class Analyzer(nn.Module):
    """Antigen analyzer H: 1 x s x s gray face -> feature of ``feat_dim`` (17 convs + FC)."""

    def __init__(self, widths: Sequence[int] = WIDTHS, feat_dim: int = 512,
                 image_size: int = 112, bn: bool = True, fc_bn: bool | None = None):
        super().__init__()
        if image_size % 16:
            raise FacebenchError(f"analyzer input size must be a multiple of 16, got {image_size}")
        w = list(widths)
        self.stem = nn.Sequential(nn.Conv2d(1, w[0], 3, 1, 1, bias=False), nn.PReLU(w[0]))
        blocks, cin = [], w[0]
        for cout in w:
            blocks += [ResidualBlock(cin, cout, 2, bn), ResidualBlock(cout, cout, 1, bn)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        side = image_size // 16
        fc_bn = bn if fc_bn is None else fc_bn
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(w[-1] * side * side, feat_dim),
                                nn.BatchNorm1d(feat_dim) if fc_bn else nn.Identity(),
                                nn.PReLU(feat_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)))
