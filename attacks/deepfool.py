"""DeepFool adapted to verification: the minimal linearised step across the threshold."""
from __future__ import annotations

import torch

from facebench.attack import Attack
from facebench.params import Param, ParamSpec
from facebench.registry import register_attack


@register_attack("deepfool")
class DeepFool(Attack):
    """DeepFool: repeated minimal linearised steps that carry the cosine across the threshold.

    Around the current point cos(x+r) ≈ cos + ∇·r, so the smallest step reaching ``thr`` is
    (thr−cos)·∇/‖∇‖₂² (l2, rel-l2) or |thr−cos|·sign(∇)/‖∇‖₁ (linf). Steps accumulate,
    scaled by 1+overshoot; a sample stops once its decision flips. Unbounded while it runs,
    the result is projected onto the threat ball at the end, which can undo the flip.
    """

    table_order = 2.0  # column/row position in the SIDE paper's Table 1
    spec = ParamSpec(
        Param("steps", 50, int, low=1, doc="linearised steps at most"),
        Param("overshoot", 0.02, float, low=0, doc="steps are scaled by 1+overshoot"))

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        x, g, d = self._inputs(probe, gallery_emb, dodge)
        view = (-1,) + (1,) * (x.dim() - 1)
        want = torch.where(d, -1.0, 1.0).to(x.dtype)  # direction the cosine must move
        r_tot = torch.zeros_like(x)
        x_adv = x.clone()
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.steps):
            idx = active.nonzero().squeeze(1)
            c, grad = self._cos_and_grad(model, x_adv[idx], g[idx])
            flipped = torch.where(d[idx], c < thr, c >= thr)
            active[idx[flipped]] = False
            idx, c, grad = idx[~flipped], c[~flipped], grad[~flipped]
            if idx.numel() == 0:
                break
            flat = grad.reshape(grad.shape[0], -1)
            # |thr - cos| plus a hair, so landing exactly on thr still counts as crossing
            gap = (want[idx] * (thr - c)).clamp_min(0.0) + 1e-4
            if self.threat.norm == "linf":
                step = grad.sign() * (gap / flat.abs().sum(1).clamp_min(1e-12)).reshape(view)
            else:
                step = grad * (gap / flat.pow(2).sum(1).clamp_min(1e-12)).reshape(view)
            r_tot[idx] += want[idx].reshape(view) * step
            x_adv = (x + (1.0 + self.overshoot) * r_tot).clamp(0.0, 1.0)
        return self.threat.project(x_adv, x).detach()
