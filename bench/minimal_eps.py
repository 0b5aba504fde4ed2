"""Minimal-perturbation mode: binary-search each probe's smallest successful budget.

RobFR-style robustness curves ask "how large a budget breaks this probe?" rather than "how many
probes break at this budget?". :func:`wrap_minimal` turns any bounded gradient attack into
that measurement: every probe gets its own ε in [0, threat.eps], bisected ``search_steps``
times, and all probes of a batch search in lock-step — each round runs the inner attack once
on the batch with a per-sample budget (:meth:`ThreatModel.per_sample`).
"""
from __future__ import annotations

import copy
import math
from typing import Dict

import numpy as np
import torch

from .attack import Attack, row_tags, success, tagged
from .errors import FacebenchError
from .threat import ThreatModel


class MinimalEps(Attack):
    """Smallest successful ε per probe, by bisection in [0, threat.eps] around ``inner``.

    Success is the decision flip at ``thr`` on the model the attack is given (the attack
    target, e.g. the bare recognizer in grey-box runs). A probe whose clean decision is already
    flipped gets ε = 0 and is returned unchanged; one never flipped at the full budget gets
    ε = +inf and the full-budget example. Otherwise the example returned is the one found at
    its smallest successful ε (bisection assumes success grows with ε; the result is the
    smallest successful ε the search *saw*, within threat.eps / 2**search_steps). Costs
    1 + search_steps runs of the inner attack on the probes broken at the full budget.

    The inner attack must be gradient-based and bounded, run the pair loop (no
    ``run_protocol`` of its own) and honour a per-sample budget: an attack class that cannot
    (e.g. a library backend) declares ``per_sample_budget = False``.
    """

    cacheable = False  # the minimal budgets are recorded while crafting
    defaults = {"search_steps": 10}

    def __init__(self, inner: Attack, search_steps: int = 10):
        if not isinstance(inner, Attack):
            raise FacebenchError(f"minimal-eps wraps an Attack, got {type(inner).__name__}")
        if isinstance(inner, MinimalEps):
            raise FacebenchError(f"attack {inner.name} is already in minimal-eps mode")
        if not inner.gradient_based:
            raise FacebenchError(f"--minimal-eps needs a gradient attack; {inner.name} is "
                                 "decision-based")
        if hasattr(inner, "run_protocol"):
            raise FacebenchError(f"--minimal-eps cannot wrap {inner.name}: it runs its own "
                                 "protocol")
        if getattr(inner, "unbounded", False):
            raise FacebenchError(f"--minimal-eps needs a bounded attack; {inner.name} ignores "
                                 "the budget (read its own size metrics instead)")
        if not getattr(inner, "per_sample_budget", True):  # declared by the attack class
            raise FacebenchError(f"--minimal-eps cannot wrap {inner.name}: it takes one budget "
                                 "per batch")
        if inner.threat.is_per_sample:
            raise FacebenchError("--minimal-eps needs one upper budget, not a per-sample one")
        self.inner = inner
        self.needs_gallery_image = inner.needs_gallery_image
        super().__init__(inner.threat, search_steps=search_steps)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def knowledge(self):
        """The wrapped attack's attacker knowledge (a* stays a*)."""
        return getattr(self.inner, "knowledge", None)

    @property
    def row_attack(self) -> str:
        """``<attack>[min-eps]``: minimal-budget rows never replace the fixed-budget cells."""
        inner = getattr(self.inner, "row_attack", self.inner.name)
        return tagged(inner, row_tags(self.params, type(self).defaults) + ["min-eps"])

    def bind(self, *, defense, data_home=None) -> None:
        self.inner.bind(defense=defense, data_home=data_home)

    def validate(self) -> None:
        self._int_at_least("search_steps", 1)

    def _run(self, model, x, g, d, thr, idx, eps, extra):
        """Inner attack on probes ``idx`` with budgets ``eps``; (examples, flipped)."""
        inner = copy.copy(self.inner)
        inner.threat = ThreatModel.per_sample(self.threat.norm, eps)
        sub = {k: (v[idx] if isinstance(v, torch.Tensor) and v.dim() > 0
                   and v.shape[0] == x.shape[0] else v) for k, v in extra.items()}
        try:
            adv = inner.perturb(model, x[idx], g[idx], d[idx], thr, **sub)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise FacebenchError(f"attack {self.name} failed under --minimal-eps (it runs with "
                                 f"one budget per probe, ThreatModel.per_sample): {exc}") from exc
        adv = adv.detach()
        with torch.no_grad():
            flipped = success(model(adv), g[idx], d[idx], thr)
        return adv, flipped.to(idx.device)

    def perturb(self, model, probe, gallery_emb, dodge, thr, **extra):
        x, g, d = self._inputs(probe, gallery_emb, dodge)
        n = x.shape[0]
        eps_max = float(self.threat.eps)
        best = x.clone()
        min_eps = torch.full((n,), math.inf, dtype=torch.float64)
        with torch.no_grad():
            clean_ok = success(model(x), g, d, thr).cpu()
        min_eps[clean_ok] = 0.0
        todo = (~clean_ok).nonzero().squeeze(1)
        if todo.numel() and eps_max > 0:
            dev = todo.to(x.device)
            adv, ok = self._run(model, x, g, d, thr, dev, torch.full((todo.numel(),), eps_max,
                                                                     dtype=torch.float64), extra)
            best[dev] = adv  # full budget: final for the probes it does not break
            ok = ok.cpu()
            idx = todo[ok]
            lo = torch.zeros(idx.numel(), dtype=torch.float64)
            hi = torch.full((idx.numel(),), eps_max, dtype=torch.float64)
            for _ in range(self.search_steps if idx.numel() else 0):
                mid = (lo + hi) / 2.0
                adv, ok = self._run(model, x, g, d, thr, idx.to(x.device), mid, extra)
                ok = ok.cpu()
                best[idx[ok].to(x.device)] = adv[ok.to(x.device)]
                hi = torch.where(ok, mid, hi)
                lo = torch.where(ok, lo, mid)
            min_eps[idx] = hi
        self.record("min_eps", min_eps)
        return best.detach()

    def extra_metrics(self, success: np.ndarray, l2: np.ndarray) -> Dict[str, float]:
        """``median_min_eps`` over all attacked probes (+inf counts as unbroken), in the
        threat's eps units; ``mean_min_eps`` over the probes broken within the budget;
        ``min_eps_found`` the share of those (on the attack target)."""
        m = self.recorded("min_eps")
        if m.size == 0:
            return {}
        found = m[np.isfinite(m)]
        return {"median_min_eps": float(np.median(m)),
                "mean_min_eps": float(found.mean()) if found.size else math.nan,
                "min_eps_found": found.size / m.size}

    def __repr__(self) -> str:
        return f"minimal-eps({self.inner!r}, search_steps={self.search_steps})"


def wrap_minimal(attack: Attack, search_steps: int = 10) -> MinimalEps:
    """``attack`` in minimal-perturbation mode (see :class:`MinimalEps`)."""
    return MinimalEps(attack, search_steps=search_steps)
