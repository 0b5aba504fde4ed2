"""Carlini–Wagner L2 adapted to verification: the smallest L2 change that flips a decision."""
from __future__ import annotations

import torch

from facebench.attack import Attack
from facebench.params import Param, ParamSpec
from facebench.registry import register_attack


@register_attack("cw")
class CW(Attack):
    """C&W L2: the smallest L2 change that flips a decision (Adam, tanh box, search on c).

    The margin is max(cos−thr+κ, 0) for dodging and max(thr−cos+κ, 0) for impersonation.
    The smallest successful δ of all searches is kept (unsuccessful samples return the clean
    probe). C&W is unbounded by construction; the result is still projected onto the threat
    ball, so a tight budget can make it fail, which the ASR then shows.
    """

    table_order = 4.0  # column/row position in the SIDE paper's Table 1
    spec = ParamSpec(
        Param("c", 10.0, float, low=0, low_open=True, doc="initial margin weight"),
        Param("kappa", 0.0, float, low=0, doc="confidence past the threshold"),
        Param("steps", 100, int, low=1, doc="Adam steps per search"),
        Param("search_steps", 5, int, low=1, doc="binary-search rounds on c"),
        Param("lr", 0.01, float, low=0, low_open=True, doc="Adam learning rate"))

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        x, g, d = self._inputs(probe, gallery_emb, dodge)
        n = x.shape[0]
        view = (-1,) + (1,) * (x.dim() - 1)
        want = torch.where(d, -1.0, 1.0).to(x.dtype)
        w0 = torch.atanh((2.0 * x - 1.0) * (1.0 - 1e-6))
        c = torch.full((n,), float(self.c), dtype=x.dtype, device=x.device)
        lo = torch.zeros_like(c)
        hi = torch.full_like(c, float("inf"))
        best = x.clone()
        best_l2 = torch.full_like(c, float("inf"))
        for _ in range(self.search_steps):
            w = w0.clone()
            m = torch.zeros_like(w)  # Adam moments, kept here so no optimizer state leaks
            v = torch.zeros_like(w)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            for t in range(1, self.steps + 1):
                with torch.enable_grad():
                    w.requires_grad_(True)
                    x_adv = (torch.tanh(w) + 1.0) / 2.0
                    cos = torch.nn.functional.cosine_similarity(model(x_adv), g, dim=1, eps=1e-12)
                    # margin > 0 while the decision (with confidence kappa) is not flipped
                    margin = want * (thr - cos) + self.kappa
                    l2sq = (x_adv - x).reshape(n, -1).pow(2).sum(1)
                    loss = (l2sq + c * margin.clamp_min(0.0)).sum()
                    (grad,) = torch.autograd.grad(loss, w)
                with torch.no_grad():
                    ok = (margin < 0) | ((margin == 0) & (want > 0))  # cos >= thr counts
                    l2 = l2sq.sqrt()
                    better = ok & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best = torch.where(better.reshape(view), x_adv.detach(), best)
                    found |= ok
                    w = w.detach()
                    m = 0.9 * m + 0.1 * grad
                    v = 0.999 * v + 0.001 * grad * grad
                    m_hat = m / (1.0 - 0.9 ** t)
                    v_hat = v / (1.0 - 0.999 ** t)
                    w = w - self.lr * m_hat / (v_hat.sqrt() + 1e-8)
            # binary search: shrink c where an attack was found, grow it elsewhere
            hi = torch.where(found, torch.minimum(hi, c), hi)
            lo = torch.where(found, lo, torch.maximum(lo, c))
            c = torch.where(torch.isinf(hi), c * 10.0, (lo + hi) / 2.0)
        return self.threat.project(best, x).detach()
