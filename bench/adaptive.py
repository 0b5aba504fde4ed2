"""Adaptive attack targets: what a white-box attacker differentiates through for a defense.

Following Athalye et al. (ICML 2018): a differentiable, deterministic defense is attacked with
plain gradients through recognizer∘defense; a non-differentiable purifier is replaced on the
backward pass by the identity (BPDA, straight-through), since its output stays close to its
input; a randomized defense is attacked through the average over several random draws
(EOT). The evaluation still uses one draw of the real defense: these modules are only ever
the *attack* target.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .defense import Defense
from .errors import FacebenchError

DEFAULT_EOT_SAMPLES = 8


class _StraightThrough(torch.autograd.Function):
    """Forward: the purifier. Backward: the incoming gradient unchanged (d purify/dx := I)."""

    @staticmethod
    def forward(ctx, x, defense):
        with torch.no_grad():
            return defense(x.detach())

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class BPDA(Defense):
    """A purifier whose backward pass is the identity; forward and randomness are unchanged."""

    differentiable = True

    def __init__(self, defense: Defense):
        super().__init__()
        self.inner = defense
        self.randomized = bool(getattr(defense, "randomized", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _StraightThrough.apply(x, self.inner)


def bpda(defense: Defense) -> BPDA:
    """``defense`` with a straight-through (identity) gradient, for purifiers only."""
    if not defense.purifier:
        raise FacebenchError(
            f"defense {getattr(defense, 'registry_name', type(defense).__name__)!r} transforms "
            "the recognizer, not the image, so BPDA (identity gradient) does not apply")
    return BPDA(defense)


class EOTRecognizer(nn.Module):
    """Mean embedding over ``n`` independent draws of a randomized defended recognizer.

    Its gradient is the EOT gradient (the mean of the per-draw gradients of the embedding).
    Each draw's embedding is L2-normalised first: verification compares cosines, so a draw
    whose embedding happens to be longer must not dominate the average.
    """

    def __init__(self, defended: nn.Module, n: int = DEFAULT_EOT_SAMPLES):
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise FacebenchError(f"EOT needs a positive integer number of samples, got {n!r}")
        self.defended = defended
        self.n = n
        for attr in ("input_size", "embedding_dim", "alignment"):
            setattr(self, attr, getattr(defended, attr, None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for _ in range(self.n):  # sequential draws: memory of one batch at a time per draw
            emb = nn.functional.normalize(self.defended(x).float(), dim=1)
            total = emb if total is None else total + emb
        return total / self.n


def eot(module: nn.Module, n: int = DEFAULT_EOT_SAMPLES) -> EOTRecognizer:
    """Shorthand for :class:`EOTRecognizer`."""
    return EOTRecognizer(module, n)


def adaptive_target(defense: Defense, recognizer: nn.Module,
                    eot_samples: Optional[int] = None) -> Tuple[nn.Module, str]:
    """The module an adaptive attack should differentiate, and its label for the runs CSV.

    ``"plain"``: differentiable and deterministic, gradients through recognizer∘defense.
    ``"bpda"``: not differentiable, identity gradient through the purifier.
    ``"eot"`` / ``"bpda+eot"``: randomized, embeddings averaged over ``eot_samples`` draws
    (default 8; another count is named, e.g. ``"bpda+eot[eot_samples=16]"``).
    ``eot_samples`` is ignored for deterministic defenses (all draws agree).
    """
    if eot_samples is not None and (isinstance(eot_samples, bool)
                                    or not isinstance(eot_samples, int) or eot_samples < 1):
        raise FacebenchError(f"--eot-samples must be a positive integer, got {eot_samples!r}")
    if defense.differentiable:
        target, label = defense.wrap(recognizer), "plain"
    else:
        target, label = bpda(defense).wrap(recognizer), "bpda"
    if defense.randomized:
        n = DEFAULT_EOT_SAMPLES if eot_samples is None else eot_samples
        target = EOTRecognizer(target, n)
        label = "eot" if label == "plain" else "bpda+eot"
        if n != DEFAULT_EOT_SAMPLES:  # another attacker strength: a cell of its own
            label += f"[eot_samples={n}]"
    return target, label
