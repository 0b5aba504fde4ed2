"""One way to declare a plugin's parameters: defaults, command-line coercion, checks, listing.

Attacks, defenses and training presets all take ``KEY=VALUE`` options from the command line.
A :class:`ParamSpec` says what each key is, so ``steps=10`` arrives as an int, ``lambdas=8,1,3``
as a list, and a typo or a bad value fails with one line that names the plugin and the key.
A plugin that only has a ``defaults`` dict gets a *loose* spec derived from it
(:meth:`ParamSpec.from_defaults`): its keys are known and strings are coerced to each
default's type, but checking the values is left to the plugin.
"""
from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from .errors import FacebenchError

KINDS = ("int", "float", "bool", "str", "list", "choice", "any")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null")


def guess(text: str):
    """A value of unknown type from its text: bool, int, float, a comma-separated list of
    numbers (e.g. ``lambdas=8,1,0.0004``), else the string itself."""
    low = text.lower()
    if "," in text:
        try:
            return [float(part) for part in text.split(",")]
        except ValueError:
            return text
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _kind_name(kind) -> str:
    name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    name = {"tuple": "list"}.get(name, name)
    if name not in KINDS:
        raise ValueError(f"parameter kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return name


def _kind_of(default) -> str:
    """The kind a loose parameter takes from its default (bool before int: True is an int)."""
    for typ, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"),
                      ((list, tuple), "list")):
        if isinstance(default, typ):
            return name
    return "any"


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        type(value).__name__ != "bool_"


@dataclass(frozen=True)
class Param:
    """One parameter. ``kind`` is a type (int, float, bool, str, list) or "choice"; ``low`` and
    ``high`` bound numbers (``low_open``: strictly above ``low``); a None default also
    allows None. ``loose`` params (derived from a defaults dict) coerce text but check nothing.
    """

    name: str
    default: Any = None
    kind: Any = "any"
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Optional[Sequence[str]] = None
    doc: str = ""
    low_open: bool = False
    loose: bool = False

    def __post_init__(self):
        object.__setattr__(self, "kind", _kind_name(self.kind))
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"choice parameter {self.name} needs choices")

    # -- what a value must be, in words ------------------------------------------------
    def expected(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind == "str":
            return "a string"
        if self.kind == "list":
            return "a comma-separated list of numbers"
        if self.kind not in ("int", "float"):
            return "a value"
        noun = "an integer" if self.kind == "int" else "a number"
        if self.low is not None and self.high is not None:
            return f"{noun} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{noun} <= {self.high:g}"
        return noun

    def _fail(self, owner: str, value) -> FacebenchError:
        return FacebenchError(f"{owner}: {self.name} must be {self.expected()}, got {value!r}")

    # -- text -> value -----------------------------------------------------------------
    def coerce(self, text: str, owner: str = "plugin"):
        """The value ``text`` stands for (checked), or a one-line FacebenchError."""
        text = text.strip()
        try:
            value = self._parse(text)
        except ValueError:
            if self.loose:
                return guess(text)
            raise self._fail(owner, text) from None
        return value if self.loose else self.check(value, owner)

    def _parse(self, text: str):
        if self.default is None and text.lower() in _NONE:
            return None
        if self.kind == "int":
            return int(text)
        if self.kind == "float":
            return float(text)
        if self.kind == "bool":
            if text.lower() in _TRUE + _FALSE:
                return text.lower() in _TRUE
            raise ValueError(text)
        if self.kind == "list":
            return [float(part) for part in text.split(",") if part.strip()]
        if self.kind == "any":
            return guess(text)
        return text

    # -- value -> checked value --------------------------------------------------------
    def check(self, value, owner: str = "plugin"):
        """``value`` if it is what this parameter takes (integral floats become ints)."""
        if self.loose or self.kind == "any" or (value is None and self.default is None):
            return value
        if self.kind in ("int", "float"):
            ok = _is_number(value) and math.isfinite(value)
            if ok and self.kind == "int":
                ok = float(value).is_integer()
                value = int(value) if ok else value
            if ok and self.low is not None:
                ok = value > self.low if self.low_open else value >= self.low
            if ok and self.high is not None:
                ok = value <= self.high
        elif self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind == "str":
            ok = isinstance(value, str)
        elif self.kind == "choice":
            ok = isinstance(value, str) and value in self.choices
        else:  # list
            ok = isinstance(value, (list, tuple)) and all(_is_number(v) for v in value)
        if not ok:
            raise self._fail(owner, value)
        return value


class ParamSpec:
    """The parameters of one plugin; ``owner`` (e.g. ``attack pgd``) heads every message."""

    def __init__(self, *params: Param, owner: str = "plugin"):
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"parameter names repeat: {names}")
        self.params: Tuple[Param, ...] = tuple(params)
        self.owner = owner
        self.by_name: Dict[str, Param] = {p.name: p for p in params}

    def __repr__(self) -> str:
        return f"ParamSpec({self.describe()}; owner={self.owner!r})"

    @classmethod
    def from_defaults(cls, defaults: Optional[Dict[str, Any]], owner: str = "plugin") -> "ParamSpec":
        """A loose spec for a plugin that declares only ``{name: default}``."""
        return cls(*(Param(k, v, kind=_kind_of(v), loose=True)
                     for k, v in (defaults or {}).items()), owner=owner)

    def named(self, owner: str) -> "ParamSpec":
        """The same spec with messages headed by ``owner``."""
        return ParamSpec(*self.params, owner=owner)

    def __contains__(self, key: str) -> bool:
        return key in self.by_name

    def __iter__(self):
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def names(self) -> list:
        return [p.name for p in self.params]

    def defaults(self) -> Dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def unknown(self, key: str) -> FacebenchError:
        """The one-line error for a key this plugin does not take, with a suggestion."""
        close = difflib.get_close_matches(key, self.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(self.names()) or "none"
        return FacebenchError(f"unknown parameter {key!r} for {self.owner}{hint}; accepted: {known}")

    def coerce(self, key: str, text: str):
        """The value of ``KEY=VALUE`` text for ``key``."""
        if key not in self.by_name:
            raise self.unknown(key)
        return self.by_name[key].coerce(text, self.owner)

    def validate(self, values: Dict[str, Any]) -> Dict[str, Any]:
        """Defaults overlaid with checked ``values``, in declaration order then the rest."""
        for key in values:
            if key not in self.by_name:
                raise self.unknown(key)
        out = self.defaults()
        for key, value in values.items():
            out[key] = self.by_name[key].check(value, self.owner)
        return out

    def describe(self) -> str:
        """``steps=40, step_size=None, random_start=True``, as ``facebench list`` shows it."""
        return ", ".join(f"{p.name}={p.default}" for p in self.params)


def spec_of(obj, owner: str = "plugin") -> Optional[ParamSpec]:
    """A registered object's spec: its ``param_spec()``, else one derived from a ``defaults``
    dict, else None."""
    getter = getattr(obj, "param_spec", None)
    if callable(getter):
        return getter()
    defaults = getattr(obj, "defaults", None)
    return ParamSpec.from_defaults(defaults, owner) if isinstance(defaults, dict) else None


def parse_pairs(pairs: Iterable[str], flag: str, spec: Optional[ParamSpec] = None) -> Dict[str, Any]:
    """``KEY=VALUE`` texts as a dict; keys the spec knows are coerced by it, others guessed
    (the plugin itself rejects keys it does not take)."""
    out = {}
    for item in pairs or []:
        if "=" not in item:
            raise FacebenchError(f"{flag} expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip().replace("-", "_")
        out[key] = spec.coerce(key, text) if spec is not None and key in spec else guess(text.strip())
    return out


class Parameterized:
    """Mixin of the plugin bases: a class declares ``spec`` (a :class:`ParamSpec`) or, as
    older plugins do, a ``defaults`` dict; either way :meth:`param_spec` answers, and a
    declared spec also provides ``defaults`` (read by ``facebench list`` and the caches)."""

    #: "attack", "defense": heads the messages, with the registered name
    plugin_kind = "plugin"
    spec: Optional[ParamSpec] = None
    defaults: Dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is not None:
            if not isinstance(spec, ParamSpec):
                raise TypeError(f"{cls.__name__}.spec must be a ParamSpec, got {type(spec).__name__}")
            cls.defaults = spec.defaults()

    @classmethod
    def param_owner(cls) -> str:
        return f"{cls.plugin_kind} {getattr(cls, 'registry_name', cls.__name__.lower())}"

    @classmethod
    def param_spec(cls) -> ParamSpec:
        """The most derived declaration wins: a ``spec``, else a spec made from ``defaults``."""
        owner = cls.param_owner()
        for klass in cls.__mro__:
            spec = klass.__dict__.get("spec")
            if isinstance(spec, ParamSpec):
                return spec.named(owner)
            if "defaults" in klass.__dict__:
                return ParamSpec.from_defaults(klass.__dict__["defaults"], owner)
        return ParamSpec(owner=owner)
