"""A complete attack plugin: random-sign noise at the edge of the L-inf ball, kept per probe
only where it raises the verification gain (a sanity baseline any real attack must beat)."""
import torch

from facebench.attack import Attack, gain
from facebench.registry import register_attack


@register_attack("example-noise")
class ExampleNoise(Attack):
    """Best of `tries` random corners of the threat ball (a baseline, not a real attack)."""

    defaults = {"tries": 4}

    def validate(self):
        self._int_at_least("tries", 1)

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        x, g, d = self._inputs(probe, gallery_emb, dodge)
        with torch.no_grad():
            best, best_gain = x.clone(), gain(model(x), g, d)
            for _ in range(self.tries):
                cand = self.threat.project(x + torch.randn_like(x).sign(), x)
                cand_gain = gain(model(cand), g, d)
                better = cand_gain > best_gain
                best[better], best_gain[better] = cand[better], cand_gain[better]
        return best
