"""Base class of attacks and the verification objective they all share.

Only the probe of a pair is perturbed; the gallery embedding is fixed. A *dodging* row is a
same-identity pair the attacker wants rejected (push the cosine down), an *impersonation*
row a different-identity pair it wants accepted (pull the cosine up). Attacks ascend
:func:`gain`, and :func:`success` is the decision flip at the threshold.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from .errors import FacebenchError
from .params import Parameterized
from .threat import ThreatModel

GOALS = ("dodging", "impersonation", "pair")
#: how the runner drives an attack: ``bounded`` (the pair loop within the threat ball),
#: ``minimization`` (the pair loop, budget ignored: read the attack's size metrics),
#: ``query`` (the pair loop on the deployed system, no gradients), ``protocol`` (its own
#: evaluation, see :mod:`facebench.protocol_attack`)
KINDS = ("bounded", "minimization", "query", "protocol")


def attacked_mask(goal: str, same) -> Tuple[torch.Tensor, torch.Tensor]:
    """(attacked, dodge) bool tensors for the pairs' ``same`` labels under ``goal``.

    dodging attacks only same-identity pairs, impersonation only different-identity pairs,
    pair attacks all of them (dodging the same ones, impersonating with the others).
    """
    same = torch.as_tensor(same).reshape(-1).bool()
    if goal == "dodging":
        attacked = same.clone()
    elif goal == "impersonation":
        attacked = ~same
    elif goal == "pair":
        attacked = torch.ones_like(same)
    else:
        raise FacebenchError(f"unknown attack goal {goal!r}; choose from: {', '.join(GOALS)}")
    return attacked, same.clone()


def _tag_value(value) -> str:
    """A parameter value for a row tag: short, and free of the commas that separate tags."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "/".join(_tag_value(v) for v in value)
    return str(value).replace(",", "/")


def row_tags(params: Dict[str, Any], defaults: Dict[str, Any], ignore=()) -> List[str]:
    """``k=v`` tags of the ``params`` that differ from ``defaults`` (a key without a default
    always counts), in the parameters' order."""
    return [f"{k}={_tag_value(v)}" for k, v in params.items()
            if k not in ignore and (k not in defaults or not _same(v, defaults[k]))]


def tagged(name: str, tags) -> str:
    """``name[t1,t2]``, merging into tags ``name`` already has; ``name`` when there are none."""
    base, _, have = name.partition("[")
    tags = [t for t in have.rstrip("]").split(",") if t] + list(tags)
    return f"{base}[{','.join(tags)}]" if tags else base


def _same(a, b) -> bool:
    """Equal as parameter values: ``2`` and ``2.0`` are one setting, ``True`` and ``1`` not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):  # a CLI list = a tuple
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return a == b
    except Exception:  # e.g. arrays: compare what a row would show
        return _tag_value(a) == _tag_value(b)


def _cos(emb: torch.Tensor, gallery_emb: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(emb, gallery_emb, dim=1, eps=1e-12)


def gain(emb: torch.Tensor, gallery_emb: torch.Tensor, dodge: torch.Tensor) -> torch.Tensor:
    """Per-sample quantity the attacker ascends: -cos for dodging rows, +cos otherwise."""
    cos = _cos(emb, gallery_emb)
    return torch.where(dodge, -cos, cos)


def success(emb: torch.Tensor, gallery_emb: torch.Tensor, dodge: torch.Tensor,
            thr: float) -> torch.Tensor:
    """Per-sample decision flip: dodging wants cos < thr, impersonation cos >= thr."""
    cos = _cos(emb, gallery_emb)
    return torch.where(dodge, cos < thr, cos >= thr)


class Attack(Parameterized):
    """A budgeted attack on a verification system; subclasses implement :meth:`perturb`.

    Parameters are declared as a class-level ``spec`` (:class:`facebench.params.ParamSpec`)
    or, in older plugins, a ``defaults`` dict checked by :meth:`validate`; unknown names and
    bad values raise :class:`FacebenchError`, so a typo on the command line fails with one line.
    """

    plugin_kind = "attack"

    #: whether the attack needs gradients of the model. A decision-based (black-box) attack
    #: sets False: the runner then hands it the deployed recognizer∘defense to query.
    gradient_based: bool = True
    #: whether grey-box examples may be cached and reused across defenses; False for attacks
    #: that record metrics while they run (a cache hit would lose them)
    cacheable: bool = True
    #: whether :meth:`perturb` wants the clean gallery images too (keyword ``gallery``),
    #: e.g. to start an impersonation from the other identity's face
    needs_gallery_image: bool = False
    def __init__(self, threat: ThreatModel, **params):
        if not isinstance(threat, ThreatModel):
            raise FacebenchError(f"attack {self.name} needs a ThreatModel, got {type(threat).__name__}")
        self.threat = threat
        self.params: Dict[str, Any] = self.param_spec().validate(params)
        for key, value in self.params.items():
            setattr(self, key, value)
        self.validate()

    @property
    def kind(self) -> str:
        """One of :data:`KINDS`, from the flags above; a subclass may set it outright."""
        if not self.gradient_based:
            return "query"
        return "minimization" if getattr(self, "unbounded", False) else "bounded"

    @property
    def name(self) -> str:
        return getattr(type(self), "registry_name", type(self).__name__.lower())

    #: parameters left out of :attr:`row_attack`: the seed has a column of its own, and a
    #: subclass may name knobs that cannot change what it crafts
    row_ignores: Tuple[str, ...] = ("seed",)

    @property
    def row_attack(self) -> str:
        """The ``attack`` column: the name, plus every parameter that differs from its
        default, e.g. ``name[steps=100]``, so that rows of different configurations never
        share a table cell (the same convention as the defenses' ``name[preset,k=20]``)."""
        return tagged(self.name, row_tags(self.params, type(self).defaults, self.row_ignores))

    def validate(self) -> None:
        """Checks beyond the spec's (or all of them, for a plugin with only ``defaults``)."""

    def bind(self, *, defense, data_home=None) -> None:
        """Called once per run before crafting, with the evaluated defense and the run's
        data folder: an attack built on the defense (SIDE's a*) or that reads data itself
        takes what it needs here. Default: nothing."""

    # -- per-sample records, turned into extra metric rows after a run ---------------
    def reset_records(self) -> None:
        """Forget what earlier runs recorded; the runner calls this before the first batch."""
        self._records: Dict[str, List[np.ndarray]] = {}

    def record(self, key: str, values) -> None:
        """Keep per-sample ``values`` (one per probe of the batch) under ``key``."""
        if not hasattr(self, "_records"):
            self.reset_records()
        arr = torch.as_tensor(values).detach().double().cpu().reshape(-1).numpy()
        self._records.setdefault(key, []).append(arr)

    def recorded(self, key: str) -> np.ndarray:
        """Everything recorded under ``key`` since the last reset, in batch order."""
        parts = getattr(self, "_records", {}).get(key, [])
        return np.concatenate(parts) if parts else np.zeros(0)

    def extra_metrics(self, success: np.ndarray, l2: np.ndarray) -> Dict[str, float]:
        """Attack-specific metrics for the run's rows (default: none).

        ``success`` is the per-probe decision flip on the evaluated (defended) system at the
        clean threshold and ``l2`` the per-probe ‖x_adv − x‖₂ in [0, 1] pixel units, both in
        the order the probes were attacked.
        """
        return {}

    # -- parameter checks ------------------------------------------------------------
    def _number(self, key: str, low: float, strict: bool, integer: bool = False) -> None:
        value = getattr(self, key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and integer:
            ok = float(value).is_integer()
        if ok:
            ok = not math.isnan(value) and not math.isinf(value)
            ok = ok and (value > low if strict else value >= low)
        if not ok:
            kind = "an integer" if integer else "a number"
            rel = ">" if strict else ">="
            raise FacebenchError(f"{self.name} {key} must be {kind} {rel} {low:g}, got {value!r}")
        if integer:
            setattr(self, key, int(value))
            self.params[key] = int(value)

    def _int_at_least(self, key: str, low: int) -> None:
        self._number(key, low, strict=False, integer=True)

    def _positive(self, key: str) -> None:
        self._number(key, 0.0, strict=True)

    def _non_negative(self, key: str) -> None:
        self._number(key, 0.0, strict=False)

    # -- helpers for subclasses ------------------------------------------------------
    @staticmethod
    def _inputs(probe, gallery_emb, dodge) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detached copies with ``dodge`` as an (N,) bool tensor on the probe's device."""
        x = probe.detach().clone()
        g = gallery_emb.detach().to(device=x.device)
        d = torch.as_tensor(dodge, device=x.device).bool().reshape(-1)
        if d.numel() == 1:
            d = d.expand(x.shape[0])
        if d.shape[0] != x.shape[0] or g.shape[0] != x.shape[0]:
            raise FacebenchError("probe, gallery_emb and dodge must have the same batch size")
        return x, g, d

    @staticmethod
    def _cos_and_grad(model, x: torch.Tensor, gallery_emb: torch.Tensor):
        """(cos per sample, d cos / d x) with one backward pass; the model's .grad untouched."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            cos = _cos(model(x), gallery_emb)
            (grad,) = torch.autograd.grad(cos.sum(), x)
        return cos.detach(), grad.detach()

    def _gain_and_grad(self, model, x, gallery_emb, dodge):
        """(gain per sample, d gain / d x) with one backward pass.

        The ±1 goal sign is applied to the per-sample scalars before the backward, which is
        cheaper than flipping the image-sized gradient afterwards.
        """
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            cos = _cos(model(x), gallery_emb)
            g = torch.where(dodge, -cos, cos)
            (grad,) = torch.autograd.grad(g.sum(), x)
        return g.detach(), grad.detach()

    def perturb(self, model, probe: torch.Tensor, gallery_emb: torch.Tensor,
                dodge: torch.Tensor, thr: float) -> torch.Tensor:  # pragma: no cover
        """Adversarial probes within the threat ball and [0, 1]; inputs are left untouched."""
        raise NotImplementedError

    def __call__(self, model, probe, gallery_emb, dodge, thr):
        return self.perturb(model, probe, gallery_emb, dodge, thr)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({self.threat.describe()}{', ' if args else ''}{args})"
