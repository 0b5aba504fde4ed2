"""Antibody operations shared by SIDE and PIN: cloning, likelihood, affinity, REINFORCE.

An antibody is a 0/1 mask over the K eigenfaces. Cloning draws ``k`` independent Bernoulli
masks per input from the *detached* probabilities p (eigenface i selected iff p_i > u_i,
u_i ~ U(0,1), as in both codebases). The policy-gradient surrogate is written with rewards
(affinity s); the authors' code minimises the same thing written with costs c = -s + const.
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from facebench.errors import FacebenchError

LAMBDAS = (8.0, 1.0, 0.003)  # SIDE Eq. 13: identity, pixel, size
EPS = 1e-6  # p is clamped to [EPS, 1 - EPS] inside the logs (the code does not clamp)


def uniforms(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """U(0,1) draws from ``generator`` (a CPU generator, so results match across devices)."""
    return torch.rand(shape, generator=generator).to(device)


def sample_antibodies(p: torch.Tensor, k: int, generator: torch.Generator | None = None
                      ) -> torch.Tensor:
    """``k`` Bernoulli clones per row of ``p`` (N x K) -> bool masks N x k x K."""
    p = p.detach()
    u = uniforms((p.shape[0], k, p.shape[1]), generator, p.device)
    return p.unsqueeze(1) > u


def threshold_antibody(p: torch.Tensor, rule: str = "half") -> torch.Tensor:
    """Deterministic antibody: p > 0.5 (``half``) or p > mean(p) per row (``mean``, PIN's
    unused alternative)."""
    p = p.detach()
    if rule == "half":
        return p > 0.5
    if rule == "mean":
        return p > p.mean(dim=1, keepdim=True)
    raise FacebenchError(f"unknown threshold rule {rule!r}")


def log_likelihood(p: torch.Tensor, masks: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """log pi(a) = sum_i [a_i log p_i + (1 - a_i) log(1 - p_i)] -> N x k (differentiable in p)."""
    p = p.clamp(eps, 1.0 - eps).unsqueeze(1)
    a = masks.to(p.dtype)
    return (a * torch.log(p) + (1.0 - a) * torch.log1p(-p)).sum(dim=-1)


def pixel_term(recon: torch.Tensor, clean: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Distance of clones (N x k x ...) to their clean image (N x ...) -> N x k.

    ``mse``: mean over pixels of the squared difference (the code; digest default 10);
    ``l2``: the Euclidean norm (the paper's Eq. 13 as printed).
    """
    diff = (recon - clean.unsqueeze(1)).flatten(2)
    if kind == "mse":
        return diff.pow(2).mean(dim=2)
    if kind == "l2":
        return diff.norm(dim=2)
    raise FacebenchError(f"pixel term must be 'mse' or 'l2', got {kind!r}")


def affinity(cos: torch.Tensor, pixel: torch.Tensor, size: torch.Tensor,
             lambdas=LAMBDAS) -> torch.Tensor:
    """SIDE Eq. 13: s = l1 cos(F(x_rec), F(x)) - l2 pixel(x_rec, x) - l3 |a|."""
    l1, l2, l3 = lambdas
    return l1 * cos - l2 * pixel - l3 * size.to(cos.dtype)


def reinforce_loss(logl: torch.Tensor, reward: torch.Tensor, baseline: str = "image",
                   reduction: str = "sum") -> torch.Tensor:
    """Surrogate whose gradient is Eq. 14's update: -(s - s0) * grad log pi, averaged.

    ``baseline``: ``image`` = mean affinity of the input's own k clones (SIDE), ``batch`` =
    mean over every clone of the batch (PIN's code). ``reduction`` over clones: ``sum``
    (both codebases; Eq. 14 up to a factor k in the learning rate) or ``mean`` (the paper's
    phi/k). Always the mean over inputs.
    """
    reward = reward.detach()
    if baseline == "image":
        s0 = reward.mean(dim=1, keepdim=True)
    elif baseline == "batch":
        s0 = reward.mean()
    else:
        raise FacebenchError(f"baseline must be 'image' or 'batch', got {baseline!r}")
    per_clone = (s0 - reward) * logl
    per_input = per_clone.sum(dim=1) if reduction == "sum" else per_clone.mean(dim=1)
    return per_input.mean()


@torch.no_grad()
def antibody_stats(p: torch.Tensor) -> dict:
    """Sec. 4.4 statistics of a batch of probabilities N x K, on the p > 0.5 antibodies:
    sparsity (mean size), mutation (Eq. 21: mean of 0.5 - |p - 0.5|), specificity (Eq. 23:
    mean pairwise Hamming distance; 0 for a batch of one)."""
    a = p.detach() > 0.5
    n = a.shape[0]
    if n > 1:
        af = a.float()
        ham = af @ (1 - af).T + (1 - af) @ af.T
        spec = float(ham.sum() / (n * (n - 1)))
    else:
        spec = 0.0
    return {"sparsity": float(a.sum(1).float().mean()),
            "mutation": float((0.5 - (p.detach() - 0.5).abs()).mean()),
            "specificity": spec}


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy in eval mode (BN uses running stats, the memory does not write)."""
    ema = copy.deepcopy(model).eval()
    for q in ema.parameters():
        q.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float,
               average_buffers: Iterable[str] = ("memory.items",)) -> None:
    """theta_bar <- decay * theta_bar + (1 - decay) * theta (Eq. 15) for the parameters and
    the buffers named in ``average_buffers`` (the memory items, a parameter in the code);
    every other buffer (BN statistics) is copied."""
    avg = set(average_buffers)
    mine = dict(model.named_parameters())
    for name, q in ema.named_parameters():
        q.mul_(decay).add_(mine[name].detach(), alpha=1.0 - decay)
    mine = dict(model.named_buffers())
    for name, b in ema.named_buffers():
        if name in avg and b.is_floating_point():
            b.mul_(decay).add_(mine[name], alpha=1.0 - decay)
        else:
            b.copy_(mine[name])
