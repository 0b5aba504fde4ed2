"""PGD: the standard first-order white-box attack (Madry et al.) on the cosine score."""
from __future__ import annotations

from facebench.attack import Attack
from facebench.errors import FacebenchError
from facebench.registry import register_attack

from ._iterative import ascend, step_length


@register_attack("pgd")
class PGD(Attack):
    """PGD: projected steepest ascent on the verification gain, optional random start.

    ``step_size`` is in the threat's eps units (linf /255, l2 absolute, rel-l2 relative to
    ‖x‖₂); None means 2.5·eps/steps. Returns the last iterate, batched, one gradient a step.
    """

    table_order = 3.0  # column/row position in the SIDE paper's Table 1
    defaults = {"steps": 40, "step_size": None, "random_start": True}

    def validate(self) -> None:
        self._int_at_least("steps", 1)
        if self.step_size is not None:
            self._positive("step_size")
        if not isinstance(self.random_start, bool):
            raise FacebenchError(f"pgd random_start must be true or false, got {self.random_start!r}")

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        x, g, d = self._inputs(probe, gallery_emb, dodge)
        size = 2.5 * self.threat.eps / self.steps if self.step_size is None else self.step_size
        start = self.threat.random_start(x) if self.random_start else x
        return ascend(self, model, x, start, g, d, self.steps, step_length(self.threat, x, size))
