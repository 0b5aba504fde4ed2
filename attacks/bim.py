"""BIM / I-FGSM (Kurakin et al. 2017): FGSM repeated in small projected steps from the clean probe."""
from __future__ import annotations

import torch

from facebench.attack import Attack
from facebench.registry import register_attack

from ._iterative import ascend, step_length

#: l2 / rel-l2 defaults, RobFR's BIM: 20 steps of 1.5·eps/steps
L2_STEPS = 20
L2_STEP_FACTOR = 1.5


def kurakin_steps(eps_255: float) -> int:
    """Kurakin et al.'s iteration count min(ε+4, 1.25ε) for ε in /255 (at least one step)."""
    return max(1, int(min(eps_255 + 4.0, 1.25 * eps_255)))


@register_attack("bim")
class BIM(Attack):
    """BIM: fixed-size projected sign steps from the clean point, no random start, no momentum.

    Deterministic (same input, same output), which is what separates it from PGD/R-PGD in
    seed 003's list. Defaults (None): for linf, Kurakin's α = 1/255 and min(ε+4, 1.25ε)
    steps (ε in /255), as seed 003 inherits from torchattacks; for l2 / rel-l2, RobFR's 20
    steps of 1.5·eps/steps. ``step_size`` is in the threat's eps units. With per-sample
    budgets (``--minimal-eps``) the linf step count follows the largest one.
    """

    defaults = {"steps": None, "step_size": None}

    def validate(self) -> None:
        if self.steps is not None:
            self._int_at_least("steps", 1)
        if self.step_size is not None:
            self._positive("step_size")

    def schedule(self):
        """(steps, step size in eps units) after filling in the defaults for this threat."""
        linf = self.threat.norm == "linf"
        steps = self.steps
        if steps is None:
            # one count for the batch: a per-sample budget (--minimal-eps) takes the largest
            steps = kurakin_steps(float(torch.as_tensor(self.threat.eps).max())) if linf \
                else L2_STEPS
        size = self.step_size
        if size is None:
            size = 1.0 if linf else L2_STEP_FACTOR * self.threat.eps / steps
        return steps, size

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        x, g, d = self._inputs(probe, gallery_emb, dodge)
        steps, size = self.schedule()
        return ascend(self, model, x, x.clone(), g, d, steps, step_length(self.threat, x, size))
