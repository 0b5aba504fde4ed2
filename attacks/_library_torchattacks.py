"""``torchattacks:<Name>``: attacks of torchattacks, called as ``attack(images, labels)``.

torchattacks classes are norm-specific (PGD is Linf, PGDL2 is L2) unless they take a
``norm`` keyword, so a class of the other norm than the threat model is rejected up front.
"""
from __future__ import annotations

import inspect

import torch

from facebench.attacks.library import LibraryAttack, ToyTwoClass
from facebench.errors import FacebenchError

#: classes whose budget is an L2 radius; the other eps-taking ones are Linf
_L2 = frozenset({"PGDL2", "PGDRSL2", "CW", "DeepFool", "EADEN", "EADL1", "FGML2"})


class Backend(LibraryAttack):
    """A torchattacks attack, untargeted (its default mode), on the two-logit verifier."""

    library = "torchattacks"
    param_map = {"steps": ("steps",), "step_size": ("alpha",), "random_start": ("random_start",)}
    step_keys = ("alpha",)
    reserved = ("model", "eps", "norm", "n_classes")
    query_attacks = frozenset({"Square", "OnePixel", "Pixle", "SPSA", "GN"})

    @staticmethod
    def available():
        import torchattacks
        from torchattacks.attack import Attack as Base

        skip = {"MultiAttack", "LGV", "VANILA"}  # wrappers and the identity
        return {name: obj for name, obj in vars(torchattacks).items()
                if inspect.isclass(obj) and issubclass(obj, Base) and obj is not Base
                and name not in skip}

    def check_norm(self):
        if "norm" in self.accepted():
            return
        if "eps" not in self.accepted():
            return
        norm = "l2" if self.attack_name in _L2 else "linf"
        if norm != self.threat.norm:
            raise FacebenchError(f"{self.name} is an {norm} attack but the threat model is "
                                 f"{self.threat.norm}; use --norm {norm} or another class")

    def kwargs_for(self, x):
        kwargs = super().kwargs_for(x)
        accepted = self.accepted()
        if "eps" in accepted:
            kwargs["eps"] = self.pixels(self.threat.eps, x)
        if "norm" in accepted:
            kwargs["norm"] = "Linf" if self.threat.norm == "linf" else "L2"
        if "n_classes" in accepted:
            kwargs["n_classes"] = 2
        return kwargs

    def build(self, net, x):
        attack = self.library_class(net, **self.kwargs_for(x))
        attack.set_device(x.device)
        return attack

    def dry_run(self):
        x = torch.rand(2, 3, 4, 4)
        try:
            self.build(ToyTwoClass(), x)
        except Exception as exc:  # any construction failure is a bad parameter here
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise FacebenchError(f"cannot build {self.name} with {self.params}: {msg}") from None

    def run_library(self, net, x, labels):
        return self.build(net, x)(x, labels)
