"""MI-FGSM under its transfer name: the same algorithm as ``mim`` with Dong et al.'s settings."""
from __future__ import annotations

from facebench.registry import register_attack

from .mim import MIM


@register_attack("mi-fgsm")
class MIFGSM(MIM):
    """MI-FGSM with the original paper's transfer settings: T = 10 steps of α = eps/T, mu = 1.

    The algorithm is ``mim``'s (L1-normalised gradients accumulated with decay mu, a
    steepest-ascent step on the sum, projected); only the defaults differ: Dong et al.'s
    total travel of exactly eps, the setting used when crafting on a source model
    (``--source``) to attack another one. Use ``mim`` for the white-box RobFR setting.
    """

    defaults = {"steps": 10, "step_size": None, "mu": 1.0}
    step_factor = 1.0
