"""The attacker's budget: a norm ball around each clean probe, intersected with [0, 1].

Attacks only talk to the ball through this class (radius, projection, steepest-ascent
direction, random start), so a new norm is one edit here and every attack follows.
``rel-l2`` measures ‖δ‖₂/‖x‖₂, the I(ζ) budget of the SIDE paper, so one number means the
same visual strength at any image size.

A budget is normally one number for the whole batch. :meth:`ThreatModel.per_sample` gives one
number per probe instead (an (N,) tensor ``eps``), which the minimal-perturbation mode uses to
binary-search every probe's budget in lock-step: radius, projection, random start and step
sizes derived from ``eps`` (PGD's 2.5·eps/steps) then all work per sample, unchanged.
"""
from __future__ import annotations

import math

import torch

from .errors import FacebenchError

NORMS = ("linf", "l2", "rel-l2")
DEFAULT_EPS = {"rel-l2": 0.04, "linf": 8.0, "l2": 2.0}


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape an (N,) tensor to broadcast against an N×... tensor."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


class ThreatModel:
    """A budget ``eps`` in ``norm`` units: linf in /255, l2 absolute, rel-l2 relative to ‖x‖₂."""

    def __init__(self, norm: str, eps: float | None = None):
        if norm not in NORMS:
            raise FacebenchError(f"unknown threat norm {norm!r}; choose from: {', '.join(NORMS)}")
        eps = DEFAULT_EPS[norm] if eps is None else eps
        try:
            eps = float(eps)
        except (TypeError, ValueError):
            raise FacebenchError(f"threat eps must be a number, got {eps!r}") from None
        self._check_eps(norm, eps, "eps")
        self.norm = norm
        self.eps = eps

    @classmethod
    def per_sample(cls, norm: str, eps) -> "ThreatModel":
        """A threat model with one budget per probe: ``eps`` is (N,) in the norm's units.

        Every method then works row by row on batches of exactly N probes (a batch of another
        size is an error); ``eps`` computed from it (e.g. 2.5·eps/steps) can be passed back
        to :meth:`radius` as a tensor too.
        """
        if norm not in NORMS:
            raise FacebenchError(f"unknown threat norm {norm!r}; choose from: {', '.join(NORMS)}")
        try:
            t = torch.as_tensor(eps, dtype=torch.float64).detach().cpu().reshape(-1).clone()
        except (TypeError, ValueError, RuntimeError):
            raise FacebenchError(f"per-sample eps must be numbers, got {eps!r}") from None
        if t.numel() == 0:
            raise FacebenchError("per-sample eps needs at least one value")
        bad = torch.isnan(t) | torch.isinf(t) | (t < 0)
        for v in (t[bad][:1].tolist() or [float(t.min()), float(t.max())]):
            cls._check_eps(norm, v, "eps")
        tm = cls.__new__(cls)
        tm.norm = norm
        tm.eps = t
        return tm

    @property
    def is_per_sample(self) -> bool:
        """True when ``eps`` is one budget per probe (see :meth:`per_sample`)."""
        return isinstance(self.eps, torch.Tensor)

    @staticmethod
    def _check_eps(norm: str, eps: float, what: str) -> None:
        if math.isnan(eps) or eps < 0 or math.isinf(eps):
            raise FacebenchError(f"threat {what} must be a finite number >= 0, got {eps}")
        if norm == "linf" and eps > 255:
            raise FacebenchError(f"linf {what} is in /255 units and must be <= 255, got {eps}")
        if norm == "rel-l2" and eps > 1:
            raise FacebenchError(f"rel-l2 {what} is ‖δ‖₂/‖x‖₂ and must be <= 1, got {eps}")

    def radius(self, x: torch.Tensor, eps: float | torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample radius (N,) in pixel units of the norm; ``eps`` overrides (step sizes).

        ``eps`` (given, or this model's own) may be an (N,) tensor: one value per probe.
        """
        eps = self.eps if eps is None else eps
        n = x.shape[0]
        if isinstance(eps, torch.Tensor) and eps.numel() != 1:
            e = eps.detach().to(dtype=x.dtype, device=x.device).reshape(-1)
            if e.numel() != n:
                raise FacebenchError(
                    f"per-sample eps has {e.numel()} values for a batch of {n} probes")
            if self.norm == "linf":
                return e / 255.0
            if self.norm == "l2":
                return e.clone()
            return e * _flat_norm(x.detach())
        eps = float(eps)
        if self.norm == "linf":
            return torch.full((n,), eps / 255.0, dtype=x.dtype, device=x.device)
        if self.norm == "l2":
            return torch.full((n,), eps, dtype=x.dtype, device=x.device)
        return eps * _flat_norm(x.detach())

    def norm_of(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample size of ``delta`` in the quantity :meth:`radius` bounds (max|δ| or ‖δ‖₂)."""
        if self.norm == "linf":
            return delta.reshape(delta.shape[0], -1).abs().amax(dim=1)
        return _flat_norm(delta)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Nearest point of the ball around ``x`` to ``x_adv``, then clipped to [0, 1].

        Clipping afterwards only shrinks |δ| coordinate-wise (x itself is in [0, 1]), so the
        result stays inside the ball.
        """
        r = self.radius(x)
        delta = x_adv - x
        if self.norm == "linf":
            rb = _per_sample(r, delta)
            delta = torch.maximum(torch.minimum(delta, rb), -rb)
        else:
            n = _flat_norm(delta)
            scale = torch.where(n > r, r / n.clamp_min(1e-12), torch.ones_like(n))
            delta = delta * _per_sample(scale, delta)
        return (x + delta).clamp(0.0, 1.0)

    def projector(self, x: torch.Tensor, inplace: bool = False):
        """``project(·, x)`` specialised to a fixed ``x``, for iterative attacks.

        For linf the ball ∩ [0, 1] is a box whose bounds are computed once, so each step is
        one clamp (lo <= hi, so clamp(·, lo, hi) = max(min(·, hi), lo) exactly), done in
        the given tensor with ``inplace`` (an attack's own step buffer); the l2 geometries
        fall back to :meth:`project`.
        """
        if self.norm != "linf":
            return lambda x_adv: self.project(x_adv, x)
        rb = _per_sample(self.radius(x), x)
        lo, hi = (x - rb).clamp_(0.0, 1.0), (x + rb).clamp_(0.0, 1.0)
        if inplace:
            return lambda x_adv: x_adv.clamp_(lo, hi)
        return lambda x_adv: torch.clamp(x_adv, lo, hi)

    def normalize_step(self, grad: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Steepest-ascent unit direction: sign for linf, grad/‖grad‖₂ otherwise (0 stays 0).
        ``inplace`` writes it into ``grad`` (an iterative attack's own buffer): the same
        numbers, one image-sized allocation less a step."""
        if self.norm == "linf":
            return grad.sign_() if inplace else grad.sign()
        n = _per_sample(_flat_norm(grad).clamp_min(1e-12), grad)
        return grad.div_(n) if inplace else grad / n

    def random_start(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A point drawn uniformly from the ball around ``x``, then projected into [0, 1]."""
        r = _per_sample(self.radius(x), x)
        if self.norm == "linf":
            u = torch.rand(x.shape, dtype=x.dtype, device=x.device, generator=generator)
            delta = (2.0 * u - 1.0) * r
        else:
            g = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
            d = g[0].numel()
            u = torch.rand((x.shape[0],), dtype=x.dtype, device=x.device, generator=generator)
            length = _per_sample(u.pow(1.0 / d), x) * r
            delta = self.normalize_step(g) * length
        return self.project(x.detach() + delta, x.detach())

    def describe(self) -> str:
        """Short label for tables and logs, e.g. ``rel-l2 0.04`` or ``linf 8`` (in /255)."""
        if self.is_per_sample:
            return (f"{self.norm} per-sample {float(self.eps.min()):g}..{float(self.eps.max()):g}"
                    f" ({self.eps.numel()} probes)")
        return f"{self.norm} {self.eps:g}"

    def __repr__(self) -> str:
        if self.is_per_sample:
            return f"ThreatModel.per_sample({self.norm!r}, {self.eps.tolist()!r})"
        return f"ThreatModel({self.norm!r}, {self.eps:g})"

    def _key(self):
        return (self.norm, tuple(self.eps.tolist()) if self.is_per_sample else self.eps,
                self.is_per_sample)

    def __eq__(self, other) -> bool:
        return isinstance(other, ThreatModel) and self._key() == other._key()

    def __hash__(self) -> int:
        if not self.is_per_sample:
            return hash((self.norm, self.eps))
        return hash(self._key())
