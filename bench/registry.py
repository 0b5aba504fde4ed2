"""Name -> class registries for recognizers, defenses and attacks, filled by decorators.

A new attack is one file in ``attacks/`` with ``@register_attack("name")`` on its class; the
package imports every module in its folder, so the name shows up in ``facebench list``, the CLI
and the tables with no other edit (the timm ``@register_model`` pattern).
"""
from __future__ import annotations

import difflib
import importlib
import math
import pkgutil
import re
from typing import Callable, Dict, Iterator, Optional, Tuple

from .errors import FacebenchError


class Registry:
    """A named collection of classes (or factories) with one-line descriptions."""

    def __init__(self, kind: str, package: str, companions: tuple = ()):
        self.kind = kind
        self.package = package  # where the plugins live; imported lazily on first lookup
        # registries whose plugins may register entries here too (a paper-table layout lives
        # with the attack or defense it tabulates): loaded before this one is looked up
        self.companions = companions
        self._entries: Dict[str, Callable] = {}
        self._prefixes: Dict[str, Tuple[Callable[[str], Callable], str]] = {}
        self._prefix_defaults: Dict[str, Optional[dict]] = {}
        self._defaults: Dict[str, str] = {}  # role ("run", "train") -> name
        self._loaded = False

    def register(self, name: str, description: str | None = None,
                 default: str | bool | None = None):
        """Decorator: ``@REGISTRY.register("name")`` above a class or factory function.

        ``default="run"`` (or ``True``) makes it what a run uses when the user names none
        (``"train"``: what training uses), so the core never names a plugin."""

        def decorate(obj):
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if default:
                role = "run" if default is True else default
                if self._defaults.get(role, name) != name:
                    raise ValueError(f"two default {self.kind}s for {role}: "
                                     f"{self._defaults[role]!r} and {name!r}")
                self._defaults[role] = name
            obj.registry_name = name
            doc = description or (obj.__doc__ or "").strip().splitlines()[0:1]
            obj.registry_description = doc if isinstance(doc, str) else (doc[0] if doc else "")
            self._entries[name] = obj
            for pattern, fmt in (getattr(obj, "metric_formats", None) or {}).items():
                METRICS.register(pattern, fmt, f"from {self.kind} {name}")
            return obj

        return decorate

    def register_prefix(self, prefix: str, factory: Callable[[str], Callable],
                        description: str = "", defaults: Optional[dict] = None) -> None:
        """Names ``prefix:<rest>`` resolve to ``factory(rest)`` (e.g. ``art:<AttackName>``).

        The factory raises :class:`FacebenchError` for a ``rest`` it does not know; it is how
        whole families from another library show up without one file per member.
        ``defaults`` (else the factory's ``defaults`` attribute) are the parameters every
        member takes, shown by ``facebench list`` without importing the library.
        """
        if prefix in self._prefixes and self._prefixes[prefix][0] is not factory:
            raise ValueError(f"{self.kind} prefix {prefix!r} is registered twice")
        self._prefixes[prefix] = (factory, description)
        self._prefix_defaults[prefix] = defaults or getattr(factory, "defaults", None)

    def prefixes(self) -> list[Tuple[str, str]]:
        """(prefix, description) of every registered name family, sorted."""
        self._load()
        return sorted((p, d) for p, (_, d) in self._prefixes.items())

    def prefix_defaults(self, prefix: str) -> Optional[dict]:
        """The parameters every ``prefix:<Name>`` member takes, if its family declared them."""
        self._load()
        return self._prefix_defaults.get(prefix)

    def default(self, role: str = "run") -> str:
        """The name a plugin registered as the default for ``role``."""
        self._load()
        if role not in self._defaults:
            raise FacebenchError(f"no {self.kind} is registered as the default for {role}; "
                                 f"name one (`facebench list`)")
        return self._defaults[role]

    def roles(self, name: str) -> list[str]:
        """The roles (``run``, ``train``) ``name`` is the default for."""
        self._load()
        return sorted(role for role, n in self._defaults.items() if n == name)

    def declared(self, name: str, attr: str, default=None):
        """Attribute ``attr`` a registered entry declares (``default`` for unknown names).

        Only exact names: a ``prefix:<Name>`` member is not built just to read an attribute
        (that would import its library), so families get ``default`` too.
        """
        self._load()
        return getattr(self._entries.get(name), attr, default)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for other in self.companions:
            other._load()
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                _declare_metrics(importlib.import_module(f"{self.package}.{mod.name}"), self.kind)

    def get(self, name: str) -> Callable:
        self._load()
        if name not in self._entries and ":" in name:
            prefix, rest = name.split(":", 1)
            if prefix in self._prefixes:
                return self._prefixes[prefix][0](rest)
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FacebenchError(
                f"unknown {self.kind} {name!r}{hint}; choose from: "
                f"{', '.join(self.names() + [p + ':<Name>' for p in sorted(self._prefixes)])}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> Iterator[Tuple[str, Callable]]:
        self._load()
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries or name.split(":", 1)[0] in self._prefixes and ":" in name


def _declare_metrics(module, kind: str) -> None:
    """Register the ``metric_formats`` of classes a plugin module defines without registering
    them by name (e.g. a base class whose members a prefix factory makes)."""
    for obj in list(vars(module).values()):
        if (isinstance(obj, type) and obj.__module__ == module.__name__
                and "metric_formats" in vars(obj) and not hasattr(obj, "registry_name")):
            for pattern, fmt in obj.metric_formats.items():
                METRICS.register(pattern, fmt, f"from {kind} module {module.__name__}")


class MetricFormats:
    """How tables show each metric: ``percent``, ``scientific`` or ``number`` (the default).

    The core declares the metrics it computes itself (below); an attack or defense declares
    the ones it emits, with ``register_metric`` or a class attribute ``metric_formats``
    (pattern -> format). A pattern is a metric name where ``<...>`` stands for any text
    (``tau_asr_<tau>``); exact names win over patterns, longer patterns over shorter.
    """

    FORMATS = {"percent": lambda v: f"{100 * v:.2f}%", "scientific": lambda v: f"{v:.2e}",
               "number": lambda v: f"{v:.4f}"}

    def __init__(self, plugins=()):
        self._plugins = plugins  # registries whose plugins emit metrics: loaded on lookup
        self._entries: Dict[str, Tuple[str, str]] = {}

    def register(self, pattern: str, fmt: str = "number", description: str = "") -> None:
        """Declare how metric ``pattern`` is shown; a conflicting second format is an error."""
        if fmt not in self.FORMATS:
            raise ValueError(f"metric format must be one of {', '.join(self.FORMATS)}, got {fmt!r}")
        old = self._entries.get(pattern)
        if old is not None and old[0] != fmt:
            raise ValueError(f"metric {pattern!r} is declared {old[0]} and {fmt}")
        self._entries[pattern] = (fmt, old[1] if old and old[1] else description)

    def _load(self) -> None:
        for reg in self._plugins:
            reg._load()

    @staticmethod
    def _matches(pattern: str, name: str) -> bool:
        parts = re.split(r"<[^>]*>", pattern)
        return re.fullmatch(".+".join(map(re.escape, parts)), name) is not None

    def format_of(self, name: str) -> str:
        """The declared format of metric ``name`` (``number`` when nobody declared it)."""
        if name not in self._entries:
            self._load()
        if name in self._entries:
            return self._entries[name][0]
        hits = [p for p in self._entries if "<" in p and self._matches(p, name)]
        best = max(hits, key=lambda p: len(re.sub(r"<[^>]*>", "", p)), default=None)
        return self._entries[best][0] if best else "number"

    def format(self, name: str, value) -> str:
        """``value`` of metric ``name`` as tables show it; missing or NaN is an en dash."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        return self.FORMATS[self.format_of(name)](value)

    def items(self) -> list[Tuple[str, str, str]]:
        """(pattern, format, description) of every declared metric, sorted."""
        self._load()
        return sorted((p, f, d) for p, (f, d) in self._entries.items())


RECOGNIZERS = Registry("recognizer", "facebench.models")
DEFENSES = Registry("defense", "facebench.defenses")
ATTACKS = Registry("attack", "facebench.attacks")
DATASETS = Registry("dataset", "facebench.datasets")
#: alignment geometries (``factory(out_size) -> Aligner``); they live beside the recognizer
#: that declares them, so their plugins are the recognizers' package
ALIGNERS = Registry("aligner", "facebench.models")
#: named `facebench table --layout` renderers: fn(runs DataFrame, filters dict) -> markdown
LAYOUTS = Registry("table layout", "facebench.layouts", companions=(ATTACKS, DEFENSES))
#: metric name -> table format; attacks and defenses fill it for the metrics they emit
METRICS = MetricFormats(plugins=(ATTACKS, DEFENSES))

register_recognizer = RECOGNIZERS.register
register_defense = DEFENSES.register
register_attack = ATTACKS.register
register_layout = LAYOUTS.register
register_dataset = DATASETS.register
register_aligner = ALIGNERS.register
register_metric = METRICS.register

# the metrics the core computes itself (runner, minimal-eps); plugins declare their own
for _pattern, _fmt, _what in (
        ("eer", "percent", "equal error rate (FAR = FRR)"),
        ("tar_at_far_<far>", "percent", "true accept rate at the highest FAR <= far"),
        ("roc_auc", "number", "area under the ROC curve"),
        ("acc_at_clean_thr", "percent", "accuracy at the clean EER threshold"),
        ("asr", "percent", "attack success rate: correct clean decisions flipped"),
        ("accuracy_10fold", "percent", "LFW 10-fold protocol accuracy"),
        ("accuracy_10fold_std", "percent", "its standard deviation over the folds"),
        ("mean_linf", "number", "mean L-inf of the perturbation, [0, 1] pixels"),
        ("mean_rel_l2", "number", "mean ||d||/||x|| of the perturbation"),
        ("median_min_eps", "number", "--minimal-eps: median smallest successful budget"),
        ("mean_min_eps", "number", "--minimal-eps: mean over the probes broken in budget"),
        ("min_eps_found", "number", "--minimal-eps: share of probes broken in budget")):
    register_metric(_pattern, _fmt, _what)
