"""The loop shared by the iterative sign/steepest-ascent attacks (bim, mim, mi-fgsm, rpgd, dfanet).

Not an attack itself: the leading underscore keeps the registry from importing it, each
attack module imports it explicitly. One loop means BIM, MI-FGSM and DFANet differ only in
what the papers say they differ in (start point, momentum, dropout on the source model).
"""
from __future__ import annotations

from typing import Optional

import torch


def step_length(threat, x: torch.Tensor, size: float) -> torch.Tensor:
    """Per-sample step of ``size`` eps units (linf /255, l2 absolute, rel-l2 ·‖x‖₂), broadcastable."""
    return threat.radius(x, eps=size).reshape(-1, *([1] * (x.dim() - 1)))


def l1_normalize(grad: torch.Tensor) -> torch.Tensor:
    """``grad / ‖grad‖₁`` per sample (MI-FGSM's normalisation before accumulation); 0 stays 0."""
    n = grad.reshape(grad.shape[0], -1).abs().sum(dim=1).clamp_min(1e-30)
    return grad / n.reshape(-1, *([1] * (grad.dim() - 1)))


def ascend(attack, model, x: torch.Tensor, start: torch.Tensor, gallery_emb: torch.Tensor,
           dodge: torch.Tensor, steps: int, alpha: torch.Tensor,
           mu: Optional[float] = None) -> torch.Tensor:
    """``steps`` projected steepest-ascent steps of length ``alpha`` from ``start``.

    With ``mu`` set (MI-FGSM), the step follows the accumulated gradient
    ``g ← mu·g + ∇/‖∇‖₁`` instead of the current one. The direction is the threat's
    steepest-ascent unit step (sign for linf, ∇/‖∇‖₂ otherwise) and every iterate is projected
    onto the ball around the clean ``x`` intersected with [0, 1]. Returns the last iterate.

    Cost: one forward + input-backward of ``model`` a step and nothing that waits on a value
    (no ``.item()``/``bool()``: on a GPU the loop queues ahead). The step is scaled and summed
    in place in the unit-step buffer the threat returns (and MI-FGSM's accumulator is updated
    in place): IEEE products and sums commute, so the iterates are bit for bit those of
    ``project(x_adv + alpha * unit)``, without its two image-sized temporaries a step.
    """
    project = attack.threat.projector(x, inplace=True)
    normalize = attack.threat.normalize_step
    x_adv = start.detach()
    acc = torch.zeros_like(x) if mu is not None else None
    for _ in range(steps):
        _, grad = attack._gain_and_grad(model, x_adv, gallery_emb, dodge)
        if acc is not None:  # the direction of the accumulator, which must stay as it is
            unit = normalize(acc.mul_(mu).add_(l1_normalize(grad)))
            if unit.data_ptr() == acc.data_ptr():  # a direction that is its input: keep acc
                unit = unit.clone()
        else:  # the gradient is this step's own buffer: overwritten by its direction
            unit = normalize(grad, inplace=True)
        # the step lands in the direction's buffer, then is clamped in place: a new tensor
        # a step, so the caller's start and the model's saved input are never written
        x_adv = project(unit.mul_(alpha).add_(x_adv))
    return x_adv.detach()
