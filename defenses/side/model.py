"""SIDE's learned parts: antigen analyzer H, memory module, antibody generator G.

Topology follows the authors' code (digest section 1.12(d)-(e)), which the paper only
sketches: every size is a constructor argument so tests can build a tiny copy.

* H: the residual :class:`~facebench.defenses.eigen.analyzer.Analyzer` with BN, giving f_n.
* Memory: 128 items N(0,1), a buffer (not optimised). Read: cosine scores -> softmax
  (temperature 1) -> weighted sum of the items, which replaces f_n. Gradients reach H only
  through the scores (items are read detached). Update only in training mode, *before* the
  read of the same forward pass, with the code's rule by default (see :class:`Memory`).
* G: Linear(512 -> K) + BN1d(K) + sigmoid -> selection probabilities p in (0,1)^K.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from facebench.defenses.eigen.analyzer import WIDTHS, Analyzer
from facebench.errors import FacebenchError

UPDATE_RULES = ("code", "paper")


class Memory(nn.Module):
    """Memory of ``n_items`` noise prototypes with soft (softmax-of-cosine) read.

    Update rules (training mode only, before the read):

    * ``"code"`` (default, the authors' code): assign each sample to its most similar item;
      per item take the mean of its assigned (detached) features, 0 when none; then set
      *every* item to ``decay * m + (1 - decay) * mean``, so items that got no sample shrink
      by ``decay``. (The code divides by ``count + 1e-6``; the exact mean is used here.)
    * ``"paper"`` (Eq. 12): only assigned items move, towards the mean of their samples;
      the others stay unchanged.
    """

    def __init__(self, n_items: int = 128, dim: int = 512, decay: float = 0.999,
                 update_rule: str = "code"):
        super().__init__()
        if update_rule not in UPDATE_RULES:
            raise FacebenchError(f"memory update rule must be one of {UPDATE_RULES}, "
                                 f"got {update_rule!r}")
        self.decay = float(decay)
        self.update_rule = update_rule
        self.register_buffer("items", torch.randn(n_items, dim))

    def scores(self, f: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Cosine similarity of each feature to each item, N x n_items."""
        items = self.items if items is None else items
        return F.normalize(f, dim=1) @ F.normalize(items.detach(), dim=1).T

    @torch.no_grad()
    def update(self, f: torch.Tensor) -> None:
        f = f.detach().to(self.items.dtype)
        assign = self.scores(f).argmax(dim=1)
        onehot = F.one_hot(assign, self.items.shape[0]).to(f.dtype)  # N x items
        counts = onehot.sum(0)
        means = (onehot.T @ f) / counts.clamp(min=1).unsqueeze(1)
        moved = self.decay * self.items + (1.0 - self.decay) * means
        if self.update_rule == "code":
            self.items.copy_(moved)
        else:
            hit = (counts > 0).unsqueeze(1)
            self.items.copy_(torch.where(hit, moved, self.items))

    def read(self, f: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.scores(f), dim=1)
        return weights @ self.items.detach()

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.update(f)
        return self.read(f)


class SIDEModel(nn.Module):
    """x (N x 1 x s x s, [-1,1]) -> H -> memory -> G -> selection probabilities (N x K)."""

    def __init__(self, n_components: int = 1500, feat_dim: int = 512, n_items: int = 128,
                 widths: Sequence[int] = WIDTHS, image_size: int = 112,
                 use_memory: bool = True, memory_decay: float = 0.999,
                 memory_update: str = "code"):
        super().__init__()
        self.config = dict(n_components=int(n_components), feat_dim=int(feat_dim),
                           n_items=int(n_items), widths=[int(w) for w in widths],
                           image_size=int(image_size), use_memory=bool(use_memory),
                           memory_decay=float(memory_decay), memory_update=memory_update)
        self.analyzer = Analyzer(widths, feat_dim, image_size, bn=True)
        self.use_memory = bool(use_memory)
        # built even when unused, so every variant has the same state-dict keys
        self.memory = Memory(n_items, feat_dim, memory_decay, memory_update)
        self.generator = nn.Sequential(nn.Linear(feat_dim, n_components),
                                       nn.BatchNorm1d(n_components), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.analyzer(x)
        if self.use_memory:
            f = self.memory(f)
        return self.generator(f)

    @torch.no_grad()
    def init_prior(self, top_k: int, logit: float) -> None:
        """Start the policy at a fixed top-``top_k`` projection: G's BN bias (the logit every
        input shares) is +``logit`` on the ``top_k`` leading eigenfaces and -``logit`` on the
        rest, so training refines a projection instead of starting from p = 0.5 everywhere.

        Why: the paper's policy leaves 0.5 over 50k warm-up steps; in the 1000 steps a CPU
        can afford it does not (measured: ranks 400-1500 still selected by 30-50% of faces),
        and every undecided eigenface is a coin flip at inference."""
        bias = self.generator[1].bias
        if not 0 < top_k <= bias.numel():
            raise FacebenchError(f"prior_topk must be in 1..{bias.numel()}, got {top_k}")
        bias.fill_(-float(logit))
        bias[:top_k] = float(logit)

    def optimized_parameters(self):
        """Everything but the memory (which is a buffer anyway)."""
        return [p for p in self.parameters() if p.requires_grad]
