"""Name -> class registries for recognizers, defenses and attacks, filled by decorators.

A new attack is one file in ``attacks/`` with ``@register_attack("name")`` on its class; the
package imports every module in its folder, so the name shows up in ``facebench list``, the CLI
and the tables with no other edit (the timm ``@register_model`` pattern).
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Dict, Iterator, Tuple

from .errors import FacebenchError


class Registry:
    """A named collection of classes (or factories) with one-line descriptions."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package  # where the plugins live; imported lazily on first lookup
        self._entries: Dict[str, Callable] = {}
        self._prefixes: Dict[str, Tuple[Callable[[str], Callable], str]] = {}
        self._loaded = False

    def register(self, name: str, description: str | None = None):
        """Decorator: ``@REGISTRY.register("pgd")`` above a class or factory function."""

        def decorate(obj):
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            obj.registry_name = name
            doc = description or (obj.__doc__ or "").strip().splitlines()[0:1]
            obj.registry_description = doc if isinstance(doc, str) else (doc[0] if doc else "")
            self._entries[name] = obj
            return obj

        return decorate

    def register_prefix(self, prefix: str, factory: Callable[[str], Callable],
                        description: str = "") -> None:
        """Names ``prefix:<rest>`` resolve to ``factory(rest)`` (e.g. ``art:<AttackName>``).

        The factory raises :class:`FacebenchError` for a ``rest`` it does not know; it is how
        whole families from another library show up without one file per member.
        """
        if prefix in self._prefixes and self._prefixes[prefix][0] is not factory:
            raise ValueError(f"{self.kind} prefix {prefix!r} is registered twice")
        self._prefixes[prefix] = (factory, description)

    def prefixes(self) -> list[Tuple[str, str]]:
        """(prefix, description) of every registered name family, sorted."""
        self._load()
        return sorted((p, d) for p, (_, d) in self._prefixes.items())

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")

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


RECOGNIZERS = Registry("recognizer", "facebench.models")
DEFENSES = Registry("defense", "facebench.defenses")
ATTACKS = Registry("attack", "facebench.attacks")
DATASETS = Registry("dataset", "facebench.datasets")
#: named `facebench table --layout` renderers: fn(runs DataFrame, filters dict) -> markdown
LAYOUTS = Registry("table layout", "facebench.layouts")

register_recognizer = RECOGNIZERS.register
register_defense = DEFENSES.register
register_attack = ATTACKS.register
register_layout = LAYOUTS.register
register_dataset = DATASETS.register
