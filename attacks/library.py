"""Attacks from ART, Foolbox and torchattacks, run on facebench's verification task.

``--attack art:<Name>``, ``foolbox:<Name>`` and ``torchattacks:<Name>`` take any attack class
of those libraries: the libraries attack classifiers, so each pair is wrapped as a two-class
classifier (:class:`TwoLogitVerifier`, class 1 = accept) and the library runs its
*untargeted* attack with label 1 for dodging rows and 0 for impersonation rows. The result is
projected into facebench's threat ball, so the rows mean the same as for the native attacks,
and a cross-check against an independent implementation is one flag away.

Every library call is made repeatable and finite. Its randomness (numpy's global generator,
ART's unseeded ``np.random.RandomState()``, Python's ``random``, torch) is seeded from the
attack's ``seed`` and a digest of the batch, and the caller's generators are given back
afterwards. Its queries are counted per sample and timed: past ``max_queries`` per probe or
``max_seconds`` per batch the call is stopped and each probe gets the closest adversarial
input the library queried inside the ball (or the clean probe), because some library loops
(ART HopSkipJump's step-size search) have no bound of their own.

The libraries are optional: this module imports none of them; naming an attack of a missing
one fails with the ``pip install`` line to run.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import math
import sys
import time
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from facebench.attack import Attack
from facebench.errors import FacebenchError
from facebench.fingerprint import source_hash
from facebench.registry import ATTACKS

from ._library_support import (BudgetExhausted, QueryBudget, ToyTwoClass,  # noqa: F401
                               TwoLogitVerifier, batch_seed, kept_modes, labels_for, seeded)

#: library prefix -> (module to import, pip install line, backend module in this package)
LIBRARIES = {
    "art": ("art", "pip install adversarial-robustness-toolbox", "_library_art"),
    "foolbox": ("foolbox", "pip install foolbox", "_library_foolbox"),
    "torchattacks": ("torchattacks", "pip install --no-deps torchattacks", "_library_torchattacks"),
}
#: facebench's names for the usual iterative-attack knobs, mapped per library to its own
COMMON = ("steps", "step_size", "random_start")
#: queries per probe when ``max_queries`` is unset: a decision-based attack gets this many, a
#: gradient attack max(this, QUERIES_PER_STEP × steps × restarts) (see LibraryAttack)
DEFAULT_QUERIES = 20000
QUERIES_PER_STEP = 200


class LibraryAttack(Attack):
    """Shared plumbing of the library backends; a factory makes one subclass per name.

    Parameters: ``logit_scale`` (s of :class:`TwoLogitVerifier`), facebench's ``steps``,
    ``step_size`` (threat eps units: /255 for linf) and ``random_start`` mapped to the
    library's names, and any other keyword of the library class, passed verbatim. The budget
    comes from the threat model; an unset step size follows facebench's PGD rule 2.5·eps/steps.

    Facebench-side parameters, never passed to the library:

    * ``seed`` (0): with a digest of the batch it seeds every library call (see
      :func:`seeded`; a class with a ``seed`` keyword of its own gets the same value). The
      runner passes the run's ``--seed`` as ``attack_params["seed"]``.
    * ``max_queries`` (None: 20000 per probe for a decision-based attack, for a gradient
      attack max(20000, 200 × steps × restarts)): samples the library may query per probe.
    * ``max_seconds`` (600): wall time of one batch.

    A call past either bound is stopped; see :class:`QueryBudget` for what it returns.
    """

    defaults = {"logit_scale": 10.0, "seed": 0, "max_queries": None, "max_seconds": 600.0}
    #: set by subclasses: prefix, the class in the library, its name
    library = ""
    library_class: Any = None
    attack_name = ""
    #: facebench name -> candidate library keywords, first one the class takes wins
    param_map: Dict[str, Tuple[str, ...]] = {}
    #: library keywords that control the step size (any given: no default step injected)
    step_keys: Tuple[str, ...] = ()
    #: library keywords facebench sets itself (budget, model, batch, targeting)
    reserved: Tuple[str, ...] = ()
    #: norms this backend supports
    norms: Tuple[str, ...] = ("linf", "l2")
    #: run each pair in a verifier of its own (attacks whose queries cannot be matched back)
    per_pair = False

    #: one budget per batch: no ThreatModel.per_sample, so no --minimal-eps
    per_sample_budget = False
    metric_formats = {"budget_exhausted": "percent"}  # share of probes stopped by a bound
    def __init__(self, threat, **params):
        own = {k: v for k, v in params.items() if k in self.defaults}
        lib = {k: v for k, v in params.items() if k not in self.defaults}
        super().__init__(threat, **own)
        if threat.norm not in self.norms:
            raise FacebenchError(
                f"{self.name} cannot take a {threat.norm} budget (per-image radius); "
                f"use --norm {' or --norm '.join(self.norms)}, or a facebench attack")
        self.params.update(lib)
        self.library_kwargs = self._map_params(lib)
        self.check_norm()
        with seeded(self.seed, torch.device("cpu")):  # the toy model's draws leave no trace
            self.dry_run()

    def validate(self) -> None:
        self._positive("logit_scale")
        self._int_at_least("seed", 0)
        self._positive("max_seconds")
        if self.max_queries is not None:
            self._int_at_least("max_queries", 1)

    # -- parameters --------------------------------------------------------------------
    @classmethod
    def accepted(cls) -> List[str]:
        """Keywords of the library class's constructor (without the ones facebench sets)."""
        sig = inspect.signature(cls.library_class.__init__)
        return [k for k, p in sig.parameters.items()
                if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    @classmethod
    def takes_any_keyword(cls) -> bool:
        sig = inspect.signature(cls.library_class.__init__)
        return any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())

    def _native(self, name: str):
        """The library keyword a facebench name maps to for this class, or None."""
        accepted = self.accepted()
        return next((k for k in self.param_map.get(name, ()) if k in accepted), None)

    def _map_params(self, lib: Dict[str, Any]) -> Dict[str, Any]:
        accepted = self.accepted()
        usable = [k for k in accepted if k not in self.reserved]
        out: Dict[str, Any] = {}
        for key, value in lib.items():
            if key in self.reserved:
                raise FacebenchError(
                    f"{self.name}: {key!r} is set by facebench (budget from --norm/--eps, "
                    "untargeted attack on the whole batch); leave it out")
            if key in COMMON:
                native = self._native(key)
                if native is None:
                    raise FacebenchError(f"{self.name} has no {key} parameter; it takes: "
                                         f"{', '.join(usable + list(self.defaults))}")
                if native != key and native in lib:
                    raise FacebenchError(f"{self.name}: give {key} or {native}, not both")
                out[native] = self.convert(key, value)
            elif key in accepted or self.takes_any_keyword():
                out[key] = value
            else:
                names = list(dict.fromkeys(
                    usable + [c for c in COMMON if self._native(c)] + list(self.defaults)))
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise FacebenchError(f"unknown parameter {key!r} for attack {self.name}{hint}; "
                                     f"accepted: {', '.join(names)}")
        return out

    def convert(self, key: str, value):
        """A facebench-named value in the library's units (step sizes stay in eps units here
        and are turned into pixels per batch by :meth:`kwargs_for`)."""
        if key == "steps":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or value < 1 or not float(value).is_integer():
                raise FacebenchError(f"{self.name} steps must be an integer >= 1, got {value!r}")
            return int(value)
        if key == "step_size":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not value > 0:
                raise FacebenchError(f"{self.name} step_size must be a number > 0, got {value!r}")
            return _EpsUnits(float(value))
        if key == "random_start" and not isinstance(value, bool):
            raise FacebenchError(
                f"{self.name} random_start must be true or false, got {value!r}")
        return value

    def default_steps(self):
        """Steps the attack will take (given or the library default), or None."""
        native = self._native("steps")
        if native is None:
            return None
        if native in self.library_kwargs:
            return self.library_kwargs[native]
        param = inspect.signature(self.library_class.__init__).parameters[native]
        return param.default if isinstance(param.default, int) else None

    def kwargs_for(self, x: torch.Tensor) -> Dict[str, Any]:
        """Library keywords for the batch ``x``: eps-unit step sizes turned into pixels,
        and facebench's default step 2.5·eps/steps where the user set no step size."""
        kwargs = {}
        for key, value in self.library_kwargs.items():
            kwargs[key] = self.pixels(value.value, x) if isinstance(value, _EpsUnits) else value
        step = self._native("step_size")
        steps = self.default_steps()
        if step and steps and not any(k in self.library_kwargs for k in self.step_keys):
            kwargs[step] = self.pixels(2.5 * self.threat.eps / steps, x)
        if "seed" in self.accepted():  # torchattacks' APGD, Square, AutoAttack, ...
            kwargs["seed"] = getattr(self, "_call_seed", self.seed)
        return kwargs

    def pixels(self, eps: float, x: torch.Tensor):
        """``eps`` in the threat's units as the library wants it: a float in [0, 1] pixel
        units for linf (eps/255) and l2; an (N, 1, 1, 1) array for rel-l2 (ART only)."""
        r = self.threat.radius(x, eps=eps)
        if self.threat.norm == "rel-l2":
            return r.detach().cpu().numpy().astype(np.float32).reshape(-1, *[1] * (x.dim() - 1))
        return float(r[0]) if r.numel() else float(eps)

    # -- per-library hooks ---------------------------------------------------------------
    def check_norm(self) -> None:
        """Reject a library attack whose norm is known to differ from the threat's."""

    def dry_run(self) -> None:
        """Build the library object once on a toy model, so bad keywords fail before data."""

    def run_library(self, net: TwoLogitVerifier, x: torch.Tensor, labels: torch.Tensor
                    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # -- bounds ------------------------------------------------------------------------
    def query_limit(self) -> int:
        """Queries per probe: ``max_queries``, or the default the class docstring gives."""
        if self.max_queries is not None:
            return int(self.max_queries)
        if not self.gradient_based:
            return DEFAULT_QUERIES
        steps = self.default_steps() or 1
        native = self._native("random_start")
        restarts = self.library_kwargs.get(native, 1) if native else 1
        restarts = restarts if isinstance(restarts, int) and restarts > 1 else 1
        return max(DEFAULT_QUERIES, QUERIES_PER_STEP * steps * restarts)

    @property
    def budget_exhausted(self) -> int:
        """Probes whose library call was stopped at a bound since the last reset."""
        return int(self.recorded("budget_queries").sum() + self.recorded("budget_seconds").sum())

    def budget_warning(self) -> str | None:
        """The one line that says which bounds stopped how many probes, or None."""
        parts = []
        for key, what in (("queries", f"query budget ({self.query_limit()} queries per probe)"),
                          ("seconds", f"time budget ({self.max_seconds:g} s per batch)")):
            hit = int(self.recorded(f"budget_{key}").sum())
            if hit:
                parts.append(f"its {what} on {hit} probe{'s' * (hit != 1)}")
        return f"{self.name} stopped at " + " and at ".join(parts) if parts else None

    def extra_metrics(self, success: np.ndarray, l2: np.ndarray) -> Dict[str, float]:
        """Warn once per run (the runner calls this at its end) when a bound stopped probes;
        a decision-based attack, never cached, also gets the row ``budget_exhausted``."""
        line = self.budget_warning()
        if line:
            print(line, file=sys.stderr)
        if self.gradient_based:
            return {}
        hit = self.recorded("budget_queries") + self.recorded("budget_seconds")
        share = float(np.mean(hit > 0)) if hit.size and hit.size == len(success) else math.nan
        return {"budget_exhausted": share}

    # -- the attack ----------------------------------------------------------------------
    def perturb(self, model, probe, gallery_emb, dodge, thr):
        x, g, d = self._inputs(probe, gallery_emb, dodge)
        labels = labels_for(d)
        deadline = time.monotonic() + float(self.max_seconds)
        radius = self.threat.radius(x)
        if self.per_pair and x.shape[0] > 1:
            # each pair on its own, with its own seed and query budget, under one deadline
            parts = [self._guarded(TwoLogitVerifier(model, x[i:i + 1], g[i:i + 1], thr,
                                                    self.logit_scale),
                                   x[i:i + 1], labels[i:i + 1], radius[i:i + 1], deadline)
                     for i in range(x.shape[0])]
        else:
            adv, stop = self._guarded(TwoLogitVerifier(model, x, g, thr, self.logit_scale),
                                      x, labels, radius, deadline)
            parts = [(adv, stop)]
        adv = torch.cat([a for a, _ in parts])
        stops = [stop for a, stop in parts for _ in range(a.shape[0])]
        for key in ("queries", "seconds"):  # per probe: which bound, if any, stopped it
            self.record(f"budget_{key}", torch.tensor([s == key for s in stops]))
        return self.threat.project(adv.detach(), x)

    def _guarded(self, net: TwoLogitVerifier, x, labels, radius, deadline):
        """(adversarial batch, None or the bound that stopped it) of one seeded library call."""
        net.budget = QueryBudget(x, labels.bool(), radius, self.threat, self.query_limit(),
                                 deadline)
        self._call_seed = batch_seed(self.seed, x, labels)
        try:
            with seeded(self._call_seed, x.device), kept_modes(net.model):
                adv = self.run_library(net, x, labels)
        except BudgetExhausted:
            adv = None
        except FacebenchError:
            raise
        except (TypeError, ValueError, AssertionError, NotImplementedError, RuntimeError) as exc:
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise FacebenchError(f"{self.name} failed: {msg}") from None
        finally:
            del self._call_seed
        budget, net.budget = net.budget, None
        if budget.reason is not None:  # stopped (or a library swallowed the stop)
            return budget.best, budget.reason
        return torch.as_tensor(adv).to(device=x.device, dtype=x.dtype).reshape(x.shape), None

    def library_version(self) -> str:
        mod = importlib.import_module(LIBRARIES[self.library][0])
        return str(getattr(mod, "__version__", "?"))

    def __repr__(self) -> str:
        # the grey-box cache key hashes this repr: the library's version and the source of
        # the wrapper and backend modules make an upgrade or an edit there craft anew
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return (f"{self.name}({self.threat.describe()}, {args}, "
                f"{self.library}={self.library_version()}, "
                f"wrapper={_source_hash(__name__, type(self).__module__)})")


def _source_hash(*modules: str) -> str:
    return source_hash(*modules)[:8]


class _EpsUnits:
    """A step size in the threat's eps units, converted to pixels once ``x`` is known."""

    def __init__(self, value: float):
        self.value = value

    def __repr__(self) -> str:
        return f"{self.value:g}"


def _require(prefix: str):
    module, pip, _ = LIBRARIES[prefix]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FacebenchError(f"attacks {prefix}:<Name> need the {module} package, which is not "
                             f"importable here ({exc}); {pip}") from None


_CLASSES: Dict[Tuple[str, str], type] = {}


def make_factory(prefix: str):
    """``factory(name)`` -> an :class:`LibraryAttack` subclass for ``prefix:name``."""

    def factory(name: str) -> type:
        _require(prefix)
        backend = importlib.import_module(f"facebench.attacks.{LIBRARIES[prefix][2]}").Backend
        if (prefix, name) in _CLASSES:
            return _CLASSES[(prefix, name)]
        available = backend.available()
        if name not in available:
            close = difflib.get_close_matches(name, list(available), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            some = ", ".join(sorted(available)[:12])
            raise FacebenchError(f"unknown attack {prefix}:{name}; {hint}{prefix} has e.g. "
                                 f"{some} ({len(available)} in all)")
        cls = type(f"{backend.__name__}_{name}", (backend,), {
            "__module__": backend.__module__,
            # cache keys hash the class source: point inspect at the backend's definition
            "__qualname__": backend.__qualname__,
            "library_class": available[name],
            "attack_name": name,
            "gradient_based": name not in backend.query_attacks,
        })
        cls.registry_name = f"{prefix}:{name}"
        cls.registry_description = f"{name} from {prefix}, on the two-logit verifier"
        _CLASSES[(prefix, name)] = cls
        return cls

    return factory


ATTACKS.register_prefix(
    "art", make_factory("art"),
    "any evasion attack of the Adversarial Robustness Toolbox (pip install "
    "adversarial-robustness-toolbox), e.g. art:ProjectedGradientDescent",
    defaults=LibraryAttack.defaults)
ATTACKS.register_prefix(
    "foolbox", make_factory("foolbox"),
    "any Foolbox 3 attack (pip install foolbox), e.g. foolbox:LinfPGD",
    defaults=LibraryAttack.defaults)
ATTACKS.register_prefix(
    "torchattacks", make_factory("torchattacks"),
    "any torchattacks attack (pip install --no-deps torchattacks), e.g. torchattacks:PGD",
    defaults=LibraryAttack.defaults)
