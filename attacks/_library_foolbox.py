"""``foolbox:<Name>``: Foolbox 3 attacks, run as ``attack(fmodel, x, labels, epsilons=eps)``.

Each Foolbox attack carries its distance (``attack.distance``), so one of the other norm than
the threat model is rejected up front; the clipped output (inside ``epsilons``) is used, so
minimisation attacks (C&W, DDN, DeepFool) count as successes only within the budget.
"""
from __future__ import annotations

import inspect

from facebench.attacks.library import LibraryAttack
from facebench.errors import FacebenchError


class Backend(LibraryAttack):
    """A Foolbox attack with the Misclassification criterion on the two-logit verifier."""

    library = "foolbox"
    param_map = {"steps": ("steps",), "step_size": ("abs_stepsize", "stepsize"),
                 "random_start": ("random_start",)}
    step_keys = ("abs_stepsize", "rel_stepsize", "stepsize")
    reserved = ("distance",)
    query_attacks = frozenset({"BoundaryAttack", "HopSkipJumpAttack", "PointwiseAttack",
                               "GenAttack", "SaltAndPepperNoiseAttack",
                               "LinearSearchBlendedUniformNoiseAttack"})

    @staticmethod
    def available():
        import foolbox.attacks as attacks
        from foolbox.attacks.base import Attack as Base, Repeated

        return {name: obj for name, obj in vars(attacks).items()
                if inspect.isclass(obj) and issubclass(obj, Base)
                and obj not in (Base, Repeated) and not inspect.isabstract(obj)}

    def build(self, x=None):
        import torch

        x = torch.rand(2, 3, 4, 4) if x is None else x
        return self.library_class(**self.kwargs_for(x))

    def dry_run(self):
        try:
            attack = self.build()
        except Exception as exc:  # any construction failure is a bad parameter here
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise FacebenchError(f"cannot build {self.name} with {self.params}: {msg}") from None
        p = getattr(getattr(attack, "distance", None), "p", None)
        want = float("inf") if self.threat.norm == "linf" else 2
        if p is not None and p != want:
            label = {float("inf"): "linf", 2: "l2"}.get(p, f"l{p:g}")
            raise FacebenchError(f"{self.name} is an {label} attack but the threat model is "
                                 f"{self.threat.norm}; use the {self.threat.norm} class "
                                 "(e.g. LinfPGD / L2PGD) or --norm to match")

    def run_library(self, net, x, labels):
        import foolbox as fb

        fmodel = fb.PyTorchModel(net.eval(), bounds=(0.0, 1.0), device=x.device)
        attack = self.build(x)
        _, clipped, _ = attack(fmodel, x, labels, epsilons=self.pixels(self.threat.eps, x))
        return clipped
