"""MIM / MI-FGSM (Dong et al., CVPR 2018): iterative steps along an accumulated gradient."""
from __future__ import annotations

from facebench.attack import Attack
from facebench.registry import register_attack

from ._iterative import ascend, step_length


@register_attack("mim")
class MIM(Attack):
    """MI-FGSM with RobFR's white-box settings: 20 steps of 1.5·eps/steps, decay mu = 1.

    Each step adds the gradient normalised by its per-sample L1 norm to a decayed running
    sum, ``g ← mu·g + ∇/‖∇‖₁``, and moves along the steepest-ascent direction of ``g`` (sign
    for linf, g/‖g‖₂ for l2 / rel-l2), projected onto the ball; no random start. The momentum
    steadies the direction across steps, which is why it transfers better than BIM.
    ``step_size`` is in the threat's eps units; None means ``step_factor``·eps/steps.
    """

    defaults = {"steps": 20, "step_size": None, "mu": 1.0}
    #: default step size as a multiple of eps/steps
    step_factor = 1.5

    def validate(self) -> None:
        self._int_at_least("steps", 1)
        if self.step_size is not None:
            self._positive("step_size")
        self._non_negative("mu")

    def step_size_eps(self) -> float:
        """The step size in eps units after filling in the default."""
        if self.step_size is not None:
            return self.step_size
        return self.step_factor * self.threat.eps / self.steps

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        x, g, d = self._inputs(probe, gallery_emb, dodge)
        alpha = step_length(self.threat, x, self.step_size_eps())
        return ascend(self, model, x, x.clone(), g, d, self.steps, alpha, mu=float(self.mu))
