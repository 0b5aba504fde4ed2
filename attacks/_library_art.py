"""``art:<Name>``: evasion attacks of the Adversarial Robustness Toolbox.

The two-logit verifier is wrapped in ART's ``PyTorchClassifier`` (clip values (0, 1), two
classes, cross-entropy loss); ``generate`` runs on the whole batch at once. ART accepts
per-sample ``eps`` arrays, so the rel-l2 budget works here too (as an L2 ball whose radius is
eps·‖x‖₂ for each probe).
"""
from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn

from facebench.attacks.library import LibraryAttack, ToyTwoClass
from facebench.errors import FacebenchError


def _classifier(net: nn.Module, input_shape, device: torch.device):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=net, loss=nn.CrossEntropyLoss(), input_shape=tuple(input_shape),
                             nb_classes=2, clip_values=(0.0, 1.0),
                             device_type="gpu" if device.type == "cuda" else "cpu")


#: eps-taking classes with no ``norm`` keyword, whose ball is fixed
_FIXED_NORM = {"BasicIterativeMethod": "linf"}


class Backend(LibraryAttack):
    """An ART evasion attack, untargeted, on the two-logit verifier."""

    library = "art"
    param_map = {"steps": ("max_iter", "nb_iter"), "step_size": ("eps_step",),
                 "random_start": ("num_random_init", "nb_random_init")}
    step_keys = ("eps_step",)
    reserved = ("estimator", "classifier", "eps", "norm", "targeted", "batch_size")
    norms = ("linf", "l2", "rel-l2")
    query_attacks = frozenset({"BoundaryAttack", "HopSkipJump", "SquareAttack", "SimBA",
                               "ZooAttack", "GeoDA", "SignOPTAttack", "PixelAttack",
                               "ThresholdAttack"})

    def check_norm(self):
        accepted = self.accepted()
        norm = _FIXED_NORM.get(self.attack_name)
        if "norm" not in accepted and "eps" in accepted and norm and norm != self.threat.norm:
            raise FacebenchError(f"{self.name} is an {norm} attack but the threat model is "
                                 f"{self.threat.norm}; use --norm {norm} or another class")

    @staticmethod
    def available():
        from art.attacks import EvasionAttack
        import art.attacks.evasion as evasion

        return {name: obj for name, obj in vars(evasion).items()
                if inspect.isclass(obj) and issubclass(obj, EvasionAttack)
                and obj is not EvasionAttack and not inspect.isabstract(obj)}

    def convert(self, key, value):
        value = super().convert(key, value)
        if key == "random_start":  # ART counts random restarts
            return int(value)
        return value

    def kwargs_for(self, x):
        kwargs = super().kwargs_for(x)
        accepted = self.accepted()
        if "eps" in accepted:
            kwargs["eps"] = self.pixels(self.threat.eps, x)
            if self.threat.norm == "rel-l2" and "eps_step" in accepted:
                step = kwargs.get("eps_step", None)
                if not isinstance(step, np.ndarray):  # ART wants eps and eps_step alike
                    raise FacebenchError(f"{self.name}: with rel-l2 give step_size (in rel-l2 "
                                         "units), not eps_step")
        if "norm" in accepted:
            kwargs["norm"] = np.inf if self.threat.norm == "linf" else 2
        if "batch_size" in accepted:
            kwargs["batch_size"] = x.shape[0]  # one batch: the verifier sees the batch whole
        if "targeted" in accepted:
            kwargs["targeted"] = False
        if "verbose" in accepted:
            kwargs.setdefault("verbose", False)
        return kwargs

    def dry_run(self):
        x = torch.rand(2, 3, 4, 4)
        kwargs = self.kwargs_for(x)
        try:
            self.library_class(_classifier(ToyTwoClass(), x.shape[1:], x.device), **kwargs)
        except Exception as exc:  # any construction failure is a bad parameter here
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise FacebenchError(f"cannot build {self.name} with {self.params}: {msg}") from None

    @property
    def per_pair(self):
        """Decision-based ART attacks query one sample at a time with noise starts and probe
        clouds that cannot be matched back to a pair: each pair runs on its own."""
        return not self.gradient_based

    def run_library(self, net, x, labels):
        # ART's random starts come from numpy, seeded by LibraryAttack around this call
        kwargs = self.kwargs_for(x)
        attack = self.library_class(_classifier(net, x.shape[1:], x.device), **kwargs)
        onehot = np.eye(2, dtype=np.float32)[labels.cpu().numpy()]
        return torch.from_numpy(attack.generate(x=x.detach().cpu().numpy(), y=onehot))
