"""R-PGD (seed 003's "randomised PGD"): PGD from a uniform random point of the ball, with restarts."""
from __future__ import annotations

import torch

from facebench.attack import Attack, gain
from facebench.registry import register_attack

from ._iterative import ascend, step_length

#: seed 003 (torchattacks RPGD): alpha 2/255, 40 steps, uniform start in the linf ball
LINF_STEP = 2.0
#: l2 / rel-l2: the same alpha/eps ratio as 2/255 at the seed's eps 8/255
L2_STEP_FRACTION = 0.25


@register_attack("rpgd")
class RPGD(Attack):
    """R-PGD: 40 projected steepest-ascent steps from a point drawn uniformly in the ball.

    Seed 003 runs it as a separate attack from PGD (torchattacks' ``RPGD``: PGD plus a
    uniform random start). ``restarts`` > 1 repeats the whole run from fresh random points
    and keeps, per probe, the restart with the highest final gain (the most successful, as
    success is a threshold on the gain). ``step_size`` is in eps units; None means 2/255 for
    linf (the seed) and eps/4 for l2 / rel-l2 (the seed's ratio at eps 8/255).
    """

    defaults = {"steps": 40, "step_size": None, "restarts": 1}

    def validate(self) -> None:
        self._int_at_least("steps", 1)
        if self.step_size is not None:
            self._positive("step_size")
        self._int_at_least("restarts", 1)

    def step_size_eps(self) -> float:
        """The step size in eps units after filling in the default."""
        if self.step_size is not None:
            return self.step_size
        return LINF_STEP if self.threat.norm == "linf" else L2_STEP_FRACTION * self.threat.eps

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        x, g, d = self._inputs(probe, gallery_emb, dodge)
        alpha = step_length(self.threat, x, self.step_size_eps())
        best = best_gain = None
        for _ in range(self.restarts):
            adv = ascend(self, model, x, self.threat.random_start(x), g, d, self.steps, alpha)
            if self.restarts == 1:
                return adv
            with torch.no_grad():
                score = gain(model(adv), g, d)
            if best is None:
                best, best_gain = adv, score
                continue
            better = score > best_gain
            best = torch.where(better.reshape(-1, *([1] * (x.dim() - 1))), adv, best)
            best_gain = torch.where(better, score, best_gain)
        return best
