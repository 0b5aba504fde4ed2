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

import contextlib
import difflib
import hashlib
import importlib
import inspect
import math
import random
import sys
import time
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from facebench.attack import Attack
from facebench.errors import FacebenchError
from facebench.fingerprint import source_hash
from facebench.registry import ATTACKS

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


class ToyTwoClass(nn.Module):
    """A two-class model on 3×4×4 inputs, only to build a library attack once at construction
    (so bad keyword arguments fail before any data is loaded)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(48, 2)

    def forward(self, x):
        return self.fc(x.reshape(x.shape[0], -1))


class TwoLogitVerifier(nn.Module):
    """Pair verification as a two-class classifier: logits s·[thr − cos, cos − thr].

    Row ``i`` of a batch is compared with gallery embedding ``i``; class 1 (accept) wins
    exactly when cos > thr. The scale ``s`` only shapes the softmax: the loss gradient is a
    positive multiple of ±∇cos (so sign/L2-normalised steps equal facebench's), and s = 10
    keeps the cross-entropy gradient far from float32 underflow even at |cos − thr| = 2.

    Libraries may call the model on sub-batches (ART's ``batch_size``, AutoAttack and APGD on
    the still-robust rows). A batch of the full size is taken in order; any other batch is
    matched row by row to the nearest clean probe, which is unambiguous because adversarial
    rows stay within the budget of their own probe; two identical probes with different
    galleries in one sub-batch raise :class:`FacebenchError` instead of guessing.
    """

    def __init__(self, model: nn.Module, probes: torch.Tensor, gallery_emb: torch.Tensor,
                 thr: float, scale: float = 10.0):
        super().__init__()
        # first parameter: torchattacks reads the device from next(model.parameters())
        self.anchor = nn.Parameter(torch.zeros(0, device=probes.device), requires_grad=False)
        self.model = model
        n = probes.shape[0]
        if gallery_emb.shape[0] != n:
            raise FacebenchError(f"{n} probes but {gallery_emb.shape[0]} gallery embeddings")
        self.register_buffer("probes", probes.detach().reshape(n, -1).float())
        self.register_buffer("gallery", gallery_emb.detach().float())
        self.thr = float(thr)
        self.scale = float(scale)
        #: counts and bounds the library's queries while it runs (see QueryBudget)
        self.budget: QueryBudget | None = None
        # torchattacks restores train() after its call when it found the model training
        self.training = False

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the pair each row of ``x`` belongs to."""
        n, b = self.probes.shape[0], x.shape[0]
        if x[0].numel() != self.probes.shape[1]:
            raise FacebenchError(f"the library passed inputs of shape {tuple(x.shape[1:])}, "
                                 "not the probes' shape")
        if b == n:
            return torch.arange(n, device=self.gallery.device)
        flat = x.detach().reshape(b, -1).float().to(self.probes.device)
        dist = torch.cdist(flat, self.probes)  # (b, n)
        best = dist.argmin(dim=1)
        same = (self.gallery[best][:, None, :] == self.gallery[None, :, :]).all(dim=2)
        rival = dist.masked_fill(same, float("inf")).amin(dim=1)
        if (rival <= dist.gather(1, best[:, None]).squeeze(1) + 1e-6).any():
            raise FacebenchError("a library passed a sub-batch in which two identical probes "
                                 "have different galleries; use --batch-size 1 for this attack")
        return best.to(self.gallery.device)

    def cosine(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.model(x.to(self.probes.dtype)).float()  # ART may hand float64
        g = self.gallery[self.rows(x) if rows is None else rows].to(emb.device)
        return nn.functional.cosine_similarity(emb, g, dim=1, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.rows(x)
        if self.budget is not None:
            self.budget.charge(x.shape[0])
        cos = self.cosine(x, rows)
        if self.budget is not None:
            self.budget.observe(x, rows, cos.detach(), self.thr)
        margin = self.scale * (cos - self.thr)
        return torch.stack([-margin, margin], dim=1)


class BudgetExhausted(BaseException):
    """Stops a library call from inside its loop; a BaseException, so that a library's own
    ``except Exception`` cannot swallow it and loop on."""


class QueryBudget:
    """Counts the samples a library queries (not calls) and the wall time, and keeps per
    pair the queried input closest to its probe that is adversarial and inside the ball, so a
    call stopped at its bound still returns the best the library had found."""

    def __init__(self, probes: torch.Tensor, dodge: torch.Tensor, radius: torch.Tensor,
                 threat, max_queries: int, deadline: float):
        self.probes = probes.detach()
        self.dodge = dodge.bool().to(probes.device)
        self.radius = radius.detach().to(probes.device)
        self.threat = threat
        self.limit = int(max_queries) * probes.shape[0]
        self.deadline = deadline
        self.used = 0
        self.reason: str | None = None  # "queries" or "seconds" once stopped
        self.best = self.probes.clone()
        self.best_dist = torch.full((probes.shape[0],), math.inf, device=probes.device)

    def charge(self, samples: int) -> None:
        """Count ``samples`` queries, or stop the call if they overrun a bound."""
        if self.used + samples > self.limit:
            self.reason = "queries"
        elif time.monotonic() > self.deadline:
            self.reason = "seconds"
        if self.reason is not None:
            raise BudgetExhausted(self.reason)
        self.used += samples

    def observe(self, x: torch.Tensor, rows: torch.Tensor, cos: torch.Tensor, thr: float):
        """Keep the rows of a query that beat the best adversarial input of their pair."""
        x = x.detach().to(self.probes.device, self.probes.dtype).reshape(
            x.shape[0], *self.probes.shape[1:])
        rows, cos = rows.to(self.probes.device), cos.to(self.probes.device)
        won = torch.where(self.dodge[rows], cos < thr, cos >= thr)
        dist = self.threat.norm_of(x - self.probes[rows])
        flat = x.reshape(x.shape[0], -1)
        ok = (won & (dist <= self.radius[rows] * (1 + 1e-5) + 1e-7)
              & (flat.amin(dim=1) >= -1e-6) & (flat.amax(dim=1) <= 1 + 1e-6))
        for i in ok.nonzero().flatten().tolist():
            r = int(rows[i])
            if dist[i] < self.best_dist[r]:
                self.best_dist[r] = dist[i]
                self.best[r] = x[i]


class _AnyRandomState(type):
    """isinstance checks against the stand-in class still accept numpy's own RandomStates."""

    def __instancecheck__(cls, obj):
        return isinstance(obj, _NUMPY_RANDOM_STATE)


_NUMPY_RANDOM_STATE = np.random.RandomState


class _SeededRandomState(_NUMPY_RANDOM_STATE, metaclass=_AnyRandomState):
    """``np.random.RandomState()`` without a seed draws one from numpy's global generator
    (seeded by :func:`seeded`) instead of OS entropy: ART's HopSkipJump, Boundary and
    Brendel-Bethge start from such a generator, which made them unrepeatable."""

    def __init__(self, seed=None):
        super().__init__(int(np.random.randint(0, 2**31 - 1)) if seed is None else seed)


def batch_seed(seed: int, x: torch.Tensor, labels: torch.Tensor) -> int:
    """A 31-bit seed from the run's ``seed`` and the batch's contents, so the randomness a
    batch gets depends on neither the batch order nor what ran before in the process."""
    h = hashlib.sha256(f"facebench-library-seed:{int(seed)}".encode())
    h.update(x.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(labels.detach().long().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:4], "little") & 0x7FFFFFFF


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Seed every generator a library may draw from, and give the caller's back afterwards
    (numpy's and Python's global state, torch's CPU and ``device`` streams)."""
    np_state, py_state = np.random.get_state(), random.getstate()
    random_state = np.random.RandomState
    cuda = [device.index if device.index is not None else torch.cuda.current_device()
            ] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            np.random.seed(seed)
            random.seed(seed)
            torch.random.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(cuda[0]):
                    torch.cuda.manual_seed(seed)
            np.random.RandomState = _SeededRandomState
            yield
    finally:
        np.random.RandomState = random_state
        np.random.set_state(np_state)
        random.setstate(py_state)


@contextlib.contextmanager
def kept_modes(model: nn.Module):
    """Give every submodule its train/eval mode back: torchattacks calls ``eval()`` and then
    ``train()`` on the model it was given, which left the recognizer in training mode."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def labels_for(dodge: torch.Tensor) -> torch.Tensor:
    """The true class the untargeted attack moves away from: 1 (accept) for dodging rows."""
    return dodge.long()


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
