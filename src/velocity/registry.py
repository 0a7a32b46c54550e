"""Registries of named components (datasets, partitioners, models, aggregators, attacks, ...).

A component is written as a short spec string ``"name:key=value,key=value"`` or a table
``{type = "name", key = value}``; one parser serves every registry. Parameters are declared once
(``Param``) and validated where the spec meets the registry, with errors naming the component,
the parameter, what is allowed and the value received.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from velocity.errors import SpecError

__all__ = [
    "REGISTRIES",
    "REQUIRED",
    "Entry",
    "Param",
    "Registry",
    "format_component",
    "on_unknown_name",
    "parse_component",
    "parse_value",
    "registering_plugin",
]

T = TypeVar("T")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of a parameter that has none: the user must give it."""

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


@dataclass(frozen=True)
class Param:
    """One declared parameter of a registry entry.

    ``low``/``high`` bound numbers (``low_open``/``high_open`` make a bound strict), ``choices``
    restricts strings; ``nullable`` admits ``None`` (written ``none`` in a spec string);
    ``convert`` normalizes a value first (raising ValueError/TypeError when it cannot);
    ``allowed_text`` overrides the generated description of the allowed values;
    ``omit_default`` leaves the parameter out of the canonical table while it has its default
    (a parameter added later: specs written before it keep their canonical form and identity).
    """

    name: str
    type: type
    default: Any = REQUIRED
    doc: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    convert: Callable[[Any], Any] | None = None
    allowed_text: str | None = None
    omit_default: bool = False

    def allowed(self) -> str:
        """Human-readable description of the allowed values."""
        if self.allowed_text is not None:
            return self.allowed_text
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = _TYPE_NAMES.get(self.type, self.type.__name__)
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
            if bounds:
                text += " " + " and ".join(bounds)
        return text + (" or none" if self.nullable else "")

    def coerce(self, value: Any, owner: str) -> Any:
        """Validate ``value`` for this parameter; returns it in canonical type."""
        where = f"{owner}: parameter '{self.name}' must be {self.allowed()}, got {value!r}"
        if self.convert is not None and value is not None:
            try:
                value = self.convert(value)
            except (TypeError, ValueError) as exc:
                raise SpecError(f"{where} ({exc})") from None
        if value is None:
            if self.nullable:
                return None
            raise SpecError(where)
        if self.type is bool:
            if not isinstance(value, bool):
                raise SpecError(where)
            out: Any = value
        elif self.type is int:
            if isinstance(value, bool):
                raise SpecError(where)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise SpecError(where)
            out = value
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SpecError(where)
            out = float(value)
            if not math.isfinite(out):
                raise SpecError(where)
        elif self.type is str:
            if not isinstance(value, str):
                raise SpecError(where)
            out = value
        else:
            if not isinstance(value, self.type):
                raise SpecError(where)
            out = value
        if self.choices is not None and out not in self.choices:
            raise SpecError(where)
        if self.low is not None and (out < self.low or (self.low_open and out == self.low)):
            raise SpecError(where)
        if self.high is not None and (out > self.high or (self.high_open and out == self.high)):
            raise SpecError(where)
        return out


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered component: the object plus what ``velocity <kind>s`` lists about it.

    ``origin`` is the module that defined it; ``plugin`` the record (``{"name", "sha256"}``)
    of the plug-in whose loading registered it, None for velocity's own and inline entries.
    """

    name: str
    obj: T
    params: tuple[Param, ...] = ()
    summary: str = ""
    paper: str = ""
    cost: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    origin: str = ""
    plugin: Mapping[str, str] | None = None

    @property
    def builtin(self) -> bool:
        return self.plugin is None and self.origin.split(".")[0] == "velocity"

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params if p.default is not REQUIRED}


def parse_value(text: str) -> Any:
    """Parse one value of a spec string: bool, none, int, finite float, else the string itself."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text.strip()
    # "nan", "inf", "Infinity" stay text: no parameter takes a non-finite number, and a name or
    # a path may be spelled so (csv:path=NaN).
    return value if math.isfinite(value) else text.strip()


def parse_component(spec: str | Mapping[str, Any], kind: str = "component") -> tuple[str, dict]:
    """Split ``"name:k=v,k=v"`` or ``{"type": name, k: v}`` into ``(name, params)``.

    Names are lower-cased (registries are case-insensitive); values keep their parsed types.
    """
    if isinstance(spec, Mapping):
        if "type" not in spec:
            raise SpecError(f"{kind} table needs a 'type' key, got keys {sorted(spec)}")
        name = spec["type"]
        if not isinstance(name, str) or not name.strip():
            raise SpecError(f"{kind} 'type' must be a non-empty string, got {name!r}")
        return name.strip().lower(), {str(k): v for k, v in spec.items() if k != "type"}
    if not isinstance(spec, str):
        raise SpecError(f"{kind} must be a string like 'name:key=value' or a table, got {spec!r}")
    text = spec.strip()
    if not text:
        raise SpecError(f"{kind} must not be empty")
    name, _, rest = text.partition(":")
    name = name.strip().lower()
    if not name:
        raise SpecError(f"{kind} '{spec}': missing name before ':'")
    params: dict[str, Any] = {}
    if rest.strip():
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise SpecError(f"{kind} '{spec}': expected key=value, got '{item.strip()}'")
            if key in params:
                raise SpecError(f"{kind} '{spec}': parameter '{key}' given twice")
            params[key] = parse_value(value)
    return name, params


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_component(name: str, params: Mapping[str, Any]) -> str:
    """Inverse of :func:`parse_component` for scalar parameters: ``"name:k=v,..."``."""
    if not params:
        return name
    return name + ":" + ",".join(f"{k}={_format_value(v)}" for k, v in params.items())


REGISTRIES: list[Registry[Any]] = []
"""Every registry, in creation order (plug-in loading rolls back across all of them)."""

_LOADING: ContextVar[tuple[Mapping[str, str], list[tuple[Registry[Any], str]]] | None] = ContextVar(
    "velocity_plugin_loading", default=None
)
_UNKNOWN_NAME_HOOKS: list[Callable[[], None]] = []
_HOOKS_RAN = False


@contextlib.contextmanager
def registering_plugin(record: Mapping[str, str]) -> Iterator[None]:
    """Tag every entry registered in the block with the plug-in ``record``; if the block
    raises, remove them all again (a plug-in registers whole or not at all)."""
    added: list[tuple[Registry[Any], str]] = []
    token = _LOADING.set((dict(record), added))
    try:
        yield
    except BaseException:
        for registry, key in reversed(added):
            registry._remove(key)
        raise
    finally:
        _LOADING.reset(token)


def on_unknown_name(hook: Callable[[], None]) -> None:
    """Run ``hook`` (once, for all hooks) the first time any registry misses a name; it may
    register more entries (installed plug-in packages) before the lookup is retried."""
    _UNKNOWN_NAME_HOOKS.append(hook)


def _run_unknown_name_hooks() -> bool:
    global _HOOKS_RAN
    if _HOOKS_RAN or not _UNKNOWN_NAME_HOOKS:
        return False
    _HOOKS_RAN = True
    for hook in list(_UNKNOWN_NAME_HOOKS):
        hook()
    return True


class Registry(Generic[T]):
    """Name -> Entry map for one kind of component (case-insensitive names, optional aliases)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        REGISTRIES.append(self)

    def register(
        self,
        name: str,
        *,
        params: tuple[Param, ...] = (),
        summary: str = "",
        paper: str = "",
        cost: str = "",
        aliases: tuple[str, ...] = (),
        **extra: Any,
    ) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; returns ``obj`` unchanged."""

        def decorate(obj: T) -> T:
            self.add(
                Entry(
                    name=name.lower(),
                    obj=obj,
                    params=params,
                    summary=summary or _first_line(getattr(obj, "__doc__", None)),
                    paper=paper,
                    cost=cost,
                    extra=dict(extra),
                    origin=str(getattr(obj, "__module__", "") or ""),
                ),
                aliases=aliases,
            )
            return obj

        return decorate

    def add(self, entry: Entry[T], aliases: tuple[str, ...] = ()) -> None:
        key = entry.name.lower()
        for name in (key, *(a.lower() for a in aliases)):
            if name in self._entries or name in self._aliases:
                owner = self._entries.get(self._aliases.get(name, name))
                where = "a built-in" if owner is not None and owner.builtin else "already"
                raise SpecError(f"{self.kind} '{name}' is {where} registered; choose another name")
        loading = _LOADING.get()
        if loading is not None:
            entry = replace(entry, plugin=loading[0])
            loading[1].append((self, key))
        self._entries[key] = entry
        for alias in aliases:
            self._aliases[alias.lower()] = key

    def _remove(self, key: str) -> None:
        self._entries.pop(key, None)
        for alias in [a for a, k in self._aliases.items() if k == key]:
            del self._aliases[alias]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.strip().lower()
        if key in self._entries or key in self._aliases:
            return True
        return _run_unknown_name_hooks() and (key in self._entries or key in self._aliases)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Entry[T]:
        key = name.strip().lower()
        key = self._aliases.get(key, key)
        if key not in self._entries and _run_unknown_name_hooks():
            key = self._aliases.get(key, key)
        try:
            return self._entries[key]
        except KeyError:
            raise SpecError(
                f"unknown {self.kind} '{name}'; available: {', '.join(self.names())}"
            ) from None

    def resolve(self, spec: str | Mapping[str, Any]) -> tuple[Entry[T], dict[str, Any]]:
        """Look up a spec and validate its parameters, defaults filled, in declaration order."""
        name, given = parse_component(spec, self.kind)
        entry = self.get(name)
        owner = f"{self.kind} '{entry.name}'"
        known = {p.name for p in entry.params}
        unknown = sorted(set(given) - known)
        if unknown:
            allowed = ", ".join(sorted(known)) or "none"
            raise SpecError(f"{owner}: unknown parameter '{unknown[0]}'; allowed: {allowed}")
        params: dict[str, Any] = {}
        for p in entry.params:
            if p.name in given:
                params[p.name] = p.coerce(given[p.name], owner)
            elif p.default is REQUIRED:
                raise SpecError(f"{owner}: parameter '{p.name}' is required ({p.allowed()})")
            else:
                params[p.name] = p.default
        return entry, params

    def canonical(self, spec: str | Mapping[str, Any]) -> dict[str, Any]:
        """The defaults-filled table form ``{"type": name, **params}`` used in fingerprints."""
        entry, params = self.resolve(spec)
        omitted = {p.name for p in entry.params if p.omit_default and params[p.name] == p.default}
        return {"type": entry.name, **{k: v for k, v in params.items() if k not in omitted}}


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""
