"""FGSM / FGM: the one-step baseline every robustness table starts from."""
from __future__ import annotations

from facebench.attack import Attack
from facebench.params import ParamSpec
from facebench.registry import register_attack


@register_attack("fgsm")
class FGSM(Attack):
    """FGSM: one steepest-ascent step to the edge of the ball (FGM for l2 / rel-l2).

    The step is radius·sign(∇) for linf and radius·∇/‖∇‖₂ for the L2 norms, then projected.
    """

    table_order = 1.0  # column/row position in the SIDE paper's Table 1
    spec = ParamSpec()  # one step to the edge of the ball: nothing to tune

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        x, g, d = self._inputs(probe, gallery_emb, dodge)
        _, grad = self._gain_and_grad(model, x, g, d)
        r = self.threat.radius(x).reshape(-1, *([1] * (x.dim() - 1)))
        x_adv = x + r * self.threat.normalize_step(grad)
        return self.threat.project(x_adv, x).detach()
