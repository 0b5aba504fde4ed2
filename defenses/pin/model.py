"""PIN's networks (Ren et al., TIFS 2022), as in the authors' code (digest section 3.2).

* DAE: encoder of 3 plain blocks (conv3x3 s1 + PReLU, conv3x3 s2 + PReLU; no BN, no
  shortcut), 1 -> 64 -> 128 -> 256 channels, 112 -> 14; decoder of 3 blocks (transposed
  conv3x3 s2 + PReLU, conv3x3 + PReLU), 256 -> 128 -> 64 -> 1, the last activation Tanh.
  The forward pass applies the encoder/decoder pair *twice* and keeps the second output.
  The released weights also hold a second, unused pair; it is not built here (the official
  DAE weights are not available to this benchmark, so nothing needs to load into it).
* Selector: SIDE's residual analyzer without any BN -> Linear(512) + PReLU ->
  Linear(K = 2500) + sigmoid. No memory.

The DAE only drives the selection; the raw input is what gets projected.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from facebench.defenses.eigen.analyzer import WIDTHS, Analyzer

DAE_WIDTHS = (64, 128, 256)


def _enc(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.PReLU(cout),
                         nn.Conv2d(cout, cout, 3, 2, 1, bias=False), nn.PReLU(cout))


def _dec(cin: int, cout: int, last: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cin, 3, 2, 1, output_padding=1, bias=False), nn.PReLU(cin),
        nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.Tanh() if last else nn.PReLU(cout))


class DAE(nn.Module):
    """Denoising auto-encoder on 1-channel [-1,1] faces; ``twice`` is PIN's forward."""

    def __init__(self, widths: Sequence[int] = DAE_WIDTHS):
        super().__init__()
        w = [1] + list(widths)
        self.encoder = nn.Sequential(*[_enc(w[i], w[i + 1]) for i in range(len(w) - 1)])
        back = w[::-1]
        self.decoder = nn.Sequential(*[_dec(back[i], back[i + 1], i == len(back) - 2)
                                       for i in range(len(back) - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def twice(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self(x)
        return first, self(first)


class PINModel(nn.Module):
    """x (N x 1 x s x s, [-1,1]) -> DAE twice -> selector -> probabilities (N x K)."""

    def __init__(self, n_components: int = 2500, feat_dim: int = 512,
                 widths: Sequence[int] = WIDTHS, image_size: int = 112,
                 dae_widths: Sequence[int] = DAE_WIDTHS):
        super().__init__()
        self.config = dict(n_components=int(n_components), feat_dim=int(feat_dim),
                           widths=[int(w) for w in widths], image_size=int(image_size),
                           dae_widths=[int(w) for w in dae_widths])
        self.dae = DAE(dae_widths)
        self.analyzer = Analyzer(widths, feat_dim, image_size, bn=False)
        self.generator = nn.Sequential(nn.Linear(feat_dim, n_components), nn.Sigmoid())

    def freeze_dae(self) -> None:
        self.dae.eval()
        for q in self.dae.parameters():
            q.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if not any(q.requires_grad for q in self.dae.parameters()):
            self.dae.eval()  # a frozen DAE stays frozen (no BN today, but keep it explicit)
        return self

    def selector_parameters(self):
        return list(self.analyzer.parameters()) + list(self.generator.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, denoised = self.dae.twice(x)
        return self.generator(self.analyzer(denoised))
