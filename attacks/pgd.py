"""PGD: the standard first-order white-box attack (Madry et al.) on the cosine score."""
from __future__ import annotations

from facebench.attack import Attack
from facebench.params import Param, ParamSpec
from facebench.registry import register_attack

from ._iterative import ascend, step_length


@register_attack("pgd", default=True)
class PGD(Attack):
    """PGD: projected steepest ascent on the verification gain, optional random start.

    ``step_size`` is in the threat's eps units (linf /255, l2 absolute, rel-l2 relative to
    ‖x‖₂); None means 2.5·eps/steps. Returns the last iterate, batched, one gradient a step.
    """

    table_order = 3.0  # column/row position in the SIDE paper's Table 1
    spec = ParamSpec(Param("steps", 40, int, low=1),
                     Param("step_size", None, float, low=0, low_open=True),
                     Param("random_start", True, bool))

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        x, g, d = self._inputs(probe, gallery_emb, dodge)
        size = 2.5 * self.threat.eps / self.steps if self.step_size is None else self.step_size
        start = self.threat.random_start(x) if self.random_start else x
        return ascend(self, model, x, start, g, d, self.steps, step_length(self.threat, x, size))
