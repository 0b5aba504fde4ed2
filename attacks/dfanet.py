"""DFANet (Zhong & Deng, TIFS 2020): MI-FGSM with dropout on the source model's conv feature maps."""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from facebench.errors import FacebenchError
from facebench.registry import register_attack

from .mim import MIM


def conv_layers(model: nn.Module):
    """Every ``nn.Conv2d`` reachable from ``model``: the recognizer's, and those of a
    learned purifier when ``model`` is a defended wrapper (BPDA/EOT wrappers included)."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@register_attack("dfanet")
class DFANet(MIM):
    """DFANet: feature-level MI-FGSM where every forward pass drops conv outputs at rate p.

    A fresh dropout mask on the output of each convolution at every iteration makes each
    step see a slightly different surrogate, an ensemble-like effect that keeps the
    perturbation from overfitting the source model, so it transfers better (the TALFW
    benchmark was made this way). Dropout lives in forward hooks on every ``nn.Conv2d`` of
    the model (a defended wrapper's purifier convolutions included), registered only inside
    :meth:`perturb` and always removed, so the model is unchanged afterwards and the
    evaluation never sees dropout. Steps and momentum are ``mi-fgsm``'s (10 steps of
    eps/10, mu = 1), so a dfanet row differs from an mi-fgsm row only by the dropout;
    ``mu=0`` gives I-FGSM with dropout. Works grey-box and with ``--source`` (transfer).
    """

    defaults = {"steps": 10, "step_size": None, "mu": 1.0, "p": 0.1}
    step_factor = 1.0

    def validate(self) -> None:
        super().validate()
        p = self.p
        if (isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p)
                or not 0.0 <= p < 1.0):
            raise FacebenchError(f"dfanet p (the dropout rate) must be in [0, 1), got {p!r}")

    def _drop(self, module, inputs, output):
        return F.dropout(output, self.p, training=True)

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        convs = conv_layers(model)
        if not convs:
            raise FacebenchError(
                f"dfanet drops convolution outputs, but {type(model).__name__} has no nn.Conv2d")
        handles = []
        try:
            for conv in convs:
                handles.append(conv.register_forward_hook(self._drop))
            return super().perturb(model, probe, gallery_emb, dodge, thr)
        finally:
            for handle in handles:
                handle.remove()
