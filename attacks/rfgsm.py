"""R+FGSM (Tramèr et al., ICLR 2018): a random step off the clean point, then one gradient step."""
from __future__ import annotations

import torch

from facebench.attack import Attack
from facebench.errors import FacebenchError
from facebench.registry import register_attack

from ._iterative import step_length


@register_attack("rfgsm")
class RFGSM(Attack):
    """R+FGSM: x' = x + α·u with u a random unit step, then FGSM with eps − α from x'.

    The random step escapes the gradient masking right at the data point that single-step
    adversarial training creates. ``u`` is sign(N(0, I)) for linf (Tramèr et al.) and
    N(0, I)/‖N(0, I)‖₂ for l2 / rel-l2; the gradient step is the threat's steepest-ascent
    direction, so the total stays within eps and the result is projected anyway. ``alpha``
    is in the threat's eps units; None means eps/2 (Tramèr et al.; seed 003's 8/255 at its
    default 16/255). Unlike old torchattacks, alpha >= eps is refused rather than stepping
    backwards outside the ball. In l2 geometries the two steps are nearly orthogonal, so
    ‖δ‖₂ ends near eps·√(a² + (1−a)²) (≈ 0.71·eps at alpha = eps/2), not at eps.
    """

    defaults = {"alpha": None}

    def validate(self) -> None:
        if self.alpha is None:
            return
        self._non_negative("alpha")
        if isinstance(self.threat.eps, torch.Tensor):
            return  # per-sample budgets: alpha_eps() falls back to eps/2 where alpha >= eps
        if self.alpha > 0 and self.alpha >= self.threat.eps:
            raise FacebenchError(
                f"rfgsm alpha (the random step) must be smaller than eps, got alpha={self.alpha:g} "
                f"with {self.threat.describe()}")

    def alpha_eps(self):
        """The random step in eps units after filling in the default.

        With per-sample budgets (``--minimal-eps``), a probe whose eps is not above a fixed
        ``alpha`` gets eps/2 instead (seed 003's recommended fallback for alpha >= eps).
        """
        eps = self.threat.eps
        if self.alpha is None:
            return eps / 2.0
        if isinstance(eps, torch.Tensor):
            return torch.where(eps > self.alpha, torch.full_like(eps, float(self.alpha)), eps / 2.0)
        return float(self.alpha)

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        x, g, d = self._inputs(probe, gallery_emb, dodge)
        alpha = self.alpha_eps()
        noise = torch.randn(x.shape, dtype=x.dtype, device=x.device)
        x_rand = (x + step_length(self.threat, x, alpha) * self.threat.normalize_step(noise))
        x_rand = x_rand.clamp(0.0, 1.0)
        _, grad = self._gain_and_grad(model, x_rand, g, d)
        rest = step_length(self.threat, x, self.threat.eps - alpha)
        return self.threat.project(x_rand + rest * self.threat.normalize_step(grad), x).detach()
