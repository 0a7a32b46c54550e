"""Experiment files: ``[shared]`` defaults, explicit ``[[runs]]`` and a ``[matrix]`` of values,
or one flat table of run fields (a single run named after its file).

Expands a TOML experiment (or ad-hoc CLI lists) into validated, uniquely named RunSpecs; every
error is one line naming the file and the key. The format is documented in docs/sweep-spec.md.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from velocity.errors import SpecError
from velocity.limits import check_run_count, max_runs
from velocity.plugins import base_dir as plugin_base_dir
from velocity.records import run_name_problem
from velocity.spec import RunSpec, format_validation_error, load_toml

__all__ = [
    "MATRIX_KEYS",
    "expand_experiment",
    "is_flat_run",
    "load_experiment",
    "name_slug",
    "specs_from_flags",
    "split_spec_list",
]

_TOP_LEVEL_KEYS = ("shared", "runs", "matrix")
_RUN_FIELD_KEYS = frozenset({*RunSpec.model_fields, "attack"})
_COMPONENT_KEYS = frozenset({"dataset", "partition", "model", "strategy", "attack", "attacks"})
MATRIX_KEYS: tuple[str, ...] = tuple(
    sorted({*RunSpec.model_fields, "attack", "seeds"} - {"name", "seed", "plugins", "data_files"})
)
"""Keys a ``[matrix]`` may sweep: every RunSpec field but ``name``/``seed``, plus ``attack``
(one attack per run) and ``seeds`` (a count N for seeds 0..N-1, or a list of seeds)."""

_NAME_LIMIT = 120
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class _Axis:
    key: str
    values: tuple[Any, ...]


def _is_none_attack(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in ("", "none")
    if isinstance(value, list | tuple):
        return all(_is_none_attack(v) for v in value)
    return False


def _component_text(value: Any) -> str:
    if isinstance(value, Mapping):
        head = str(value.get("type", ""))
        params = [f"{k}={v}" for k, v in value.items() if k != "type"]
        return head + (":" + ",".join(params) if params else "")
    if isinstance(value, list | tuple):
        return "+".join(_component_text(v) for v in value) or "none"
    return str(value)


def name_slug(key: str, value: Any) -> str:
    """Readable name part of one matrix value: ``krum:f=2`` -> ``krum-f2``, lr 0.1 -> ``lr0.1``."""
    if key in _COMPONENT_KEYS:
        text = "none" if key in ("attack", "attacks") and _is_none_attack(value) else None
        if text is None:
            text = _component_text(value).lower().replace(" ", "")
            text = text.replace(">", "+").replace(":", "-").replace(",", "-").replace("=", "")
    else:
        shown = "none" if value is None else value
        if isinstance(shown, bool):
            shown = str(shown).lower()
        text = f"{key}{shown}"
    text = _UNSAFE_NAME_CHARS.sub("-", text)
    text = re.sub(r"-{2,}", "-", text).strip("-.")
    return text or key


def _join_name(parts: Sequence[str]) -> str:
    name = "__".join(p for p in parts if p)
    if len(name) > _NAME_LIMIT:
        # Keep long generated names unique: a prefix for reading, a hash of the rest for identity.
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = name[: _NAME_LIMIT - 12].rstrip("-_.") + "--" + digest
    return name


def _check_table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where} must be a table, got {type(value).__name__} {value!r}")
    return dict(value)


def _seed_values(value: Any, where: str) -> tuple[int, ...]:
    allowed = "a count N > 0 (seeds 0..N-1) or a non-empty list of distinct integers >= 0"
    if isinstance(value, bool):
        raise SpecError(f"{where}: seeds must be {allowed}, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise SpecError(f"{where}: seeds must be {allowed}, got {value!r}")
        check_run_count(value, "seeds", f"{value} seeds", source=where)
        return tuple(range(value))
    if isinstance(value, list) and value:
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
            raise SpecError(f"{where}: seeds must be {allowed}, got {value!r}")
        if len(set(value)) != len(value):
            raise SpecError(f"{where}: seeds must be distinct, got {value!r}")
        return tuple(value)
    raise SpecError(f"{where}: seeds must be {allowed}, got {value!r}")


def _axes(matrix: Mapping[str, Any], source: str) -> tuple[list[_Axis], tuple[int, ...] | None]:
    if not matrix:
        raise SpecError(f"{source}: [matrix] is empty; give lists of values, e.g. strategy = [...]")
    if "attack" in matrix and "attacks" in matrix:
        raise SpecError(f"{source}: [matrix] give either 'attack' or 'attacks', not both")
    axes: list[_Axis] = []
    seeds: tuple[int, ...] | None = None
    for key, values in matrix.items():
        where = f"{source}: matrix.{key}"
        if key not in MATRIX_KEYS:
            close = difflib.get_close_matches(key, MATRIX_KEYS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            if key == "seed":
                hint = "use 'seeds' (a count or a list) to sweep seeds; "
            raise SpecError(f"{where}: unknown key; {hint}allowed keys: {', '.join(MATRIX_KEYS)}")
        if key == "seeds":
            seeds = _seed_values(values, f"{source}: matrix")
            continue
        if not isinstance(values, list):
            raise SpecError(
                f"{where}: must be a list of values, e.g. {key} = [...], got "
                f"{type(values).__name__} {values!r}"
            )
        if not values:
            raise SpecError(f"{where}: empty list; give at least one value")
        axes.append(_Axis(key, tuple(values)))
    return axes, seeds


def _validate(merged: Mapping[str, Any], where: str, axis_values: Mapping[str, Any]) -> RunSpec:
    try:
        return RunSpec.model_validate(dict(merged))
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else ""
        if field in axis_values:
            where = f"{where}, matrix.{field} = {axis_values[field]!r}"
        elif field == "attacks" and "attack" in axis_values:
            where = f"{where}, matrix.attack = {axis_values['attack']!r}"
        raise SpecError(format_validation_error(exc, where)) from None


def is_flat_run(doc: Mapping[str, Any]) -> bool:
    """Whether a document is one flat table of run fields (no ``[shared]``, ``[[runs]]`` or
    ``[matrix]``): one run, as ``velocity show RUN --spec`` prints it."""
    return bool(doc) and not set(doc) & set(_TOP_LEVEL_KEYS)


def _check_flat_keys(doc: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(doc) - _RUN_FIELD_KEYS)
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, [*_RUN_FIELD_KEYS, *_TOP_LEVEL_KEYS], n=1)
        hint = ""
        if close:
            shown = close[0] if close[0] in _RUN_FIELD_KEYS else f"[{close[0]}]"
            hint = f"did you mean '{shown}'? "
        raise SpecError(
            f"{source}: unknown top-level key '{key}'; {hint}a run file is one flat table of run "
            "fields, or [shared], [[runs]] and [matrix] tables"
        )


def _file_run_name(path: str | Path) -> str | None:
    """The run name a flat file gives its run: the file's name without ``.toml``, made safe."""
    name = _UNSAFE_NAME_CHARS.sub("-", Path(path).stem)
    name = re.sub(r"-{2,}", "-", name).strip("-.")[:_NAME_LIMIT]
    return name if name and run_name_problem(name) is None else None


def _bases(
    doc: Mapping[str, Any], source: str, flat_name: str | None = None
) -> list[tuple[dict[str, Any], str, str | None]]:
    """``(fields, where, base name)`` for every explicit run (or ``[shared]`` alone, or the one
    run of a flat document, named ``flat_name`` unless it names itself)."""
    if is_flat_run(doc):
        fields = dict(doc)
        return [(fields, source, fields.pop("name", None) or flat_name)]
    shared = _check_table(doc.get("shared", {}), f"{source}: [shared]")
    if "runs" not in doc:
        return [(shared, f"{source}: shared", shared.pop("name", None))]
    runs = doc["runs"]
    if not isinstance(runs, list) or not runs or not all(isinstance(r, Mapping) for r in runs):
        raise SpecError(f"{source}: runs must be a non-empty array of tables ([[runs]])")
    bases = []
    for i, run in enumerate(runs):
        merged = {**shared, **run}
        name = merged.pop("name", None)
        if name is None and len(runs) > 1:
            name = f"run{i}"
        bases.append((merged, f"{source}: runs[{i}]", name))
    return bases


def _matrix_points(
    axes: Sequence[_Axis], seeds: tuple[int, ...] | None
) -> list[tuple[dict[str, Any], list[str], bool]]:
    """Every matrix point as ``(values, name parts, is_generated_baseline)``, baselines first."""
    attack_key = next((a.key for a in axes if a.key in ("attack", "attacks")), None)
    seed_list: tuple[int | None, ...] = seeds if seeds is not None else (None,)
    points: list[tuple[dict[str, Any], list[str], bool]] = []
    for combo in itertools.product(*(a.values for a in axes)):
        values = dict(zip((a.key for a in axes), combo, strict=True))
        variants = [(values, False)]
        if attack_key is not None and not _is_none_attack(values[attack_key]):
            baseline = {**values, attack_key: "none"}
            if "byzantine" in baseline:
                baseline["byzantine"] = 0
            variants.insert(0, (baseline, True))
        for variant, is_baseline in variants:
            for seed in seed_list:
                point = dict(variant)
                parts = [name_slug(key, point[key]) for key in point]
                if seed is not None:
                    point["seed"] = seed
                    parts.append(f"s{seed}")
                points.append((point, parts, is_baseline))
    return points


def expand_experiment(
    doc: Mapping[str, Any],
    source: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    matrix: bool = True,
    flat_name: str | None = None,
) -> list[RunSpec]:
    """RunSpecs of an experiment document (``[shared]``, ``[[runs]]``, ``[matrix]``, or one
    flat table of run fields: a single run, named ``flat_name`` unless it sets ``name``).

    ``[matrix]`` expands on top of every ``[[runs]]`` entry (or ``[shared]`` alone);
    ``overrides`` (CLI flags) apply on top of every run. ``matrix=False`` refuses a
    ``[matrix]`` (``velocity run`` runs the listed runs only). Raises SpecError naming the key.
    """
    if is_flat_run(doc):
        _check_flat_keys(doc, source)
    keys = _TOP_LEVEL_KEYS if matrix else ("shared", "runs")
    unknown = [] if is_flat_run(doc) else sorted(set(doc) - set(keys))
    if unknown:
        allowed = ", ".join(f"[[{k}]]" if k == "runs" else f"[{k}]" for k in keys)
        hint = "" if matrix else " (use 'velocity sweep' for [matrix])"
        if unknown[0] in _RUN_FIELD_KEYS:
            hint += "; a run field beside tables belongs in [shared]"
        raise SpecError(f"{source}: unknown top-level key '{unknown[0]}'; allowed: {allowed}{hint}")
    overrides = dict(overrides or {})
    bases = _bases(doc, source, flat_name)
    has_matrix = "matrix" in doc
    if has_matrix:
        axes, seeds = _axes(_check_table(doc["matrix"], f"{source}: [matrix]"), source)
        _check_expansion(len(bases), axes, seeds, source)
        points = _matrix_points(axes, seeds)
    else:
        points = [({}, [], False)]
    specs: list[RunSpec] = []
    seen: dict[str, tuple[str, bool]] = {}  # name -> (fingerprint, is a generated baseline)
    folded: dict[str, str] = {}  # casefolded name -> the name, for names differing in case
    for fields, where, base_name in bases:
        for values, parts, is_baseline in points:
            merged = {**fields, **values, **overrides}
            if "plugins" in overrides and "plugins" in fields:
                # --plugin adds to the plug-ins the file names; it replaces nothing.
                merged["plugins"] = [*_as_list(fields["plugins"]), *_as_list(overrides["plugins"])]
            for swept, other in (("attack", "attacks"), ("attacks", "attack")):
                if swept in values and other not in values:
                    merged.pop(other, None)  # the swept attack replaces the shared one
            if is_baseline:
                merged["byzantine"] = 0
            name = overrides.get("name") or _join_name([base_name or "", *parts]) or "run"
            merged["name"] = name
            axis_values = {k: v for k, v in values.items() if k != "seed"}
            spec = _validate(merged, where, axis_values)
            if name in seen:
                fingerprint, seen_as_baseline = seen[name]
                if fingerprint == spec.fingerprint and (is_baseline or seen_as_baseline):
                    # One run reached twice: a generated baseline, and another attacked point's
                    # baseline or an explicit "none" value, in either order.
                    continue
                raise SpecError(
                    f"{source}: duplicate run name '{name}'; give runs distinct 'name's "
                    "(or matrix values that differ in their readable name)"
                )
            twin = folded.setdefault(name.casefold(), name)
            if twin != name:
                raise SpecError(
                    f"{source}: run names '{twin}' and '{name}' differ only in case; their "
                    "folders would be one on case-insensitive file systems: give distinct names"
                )
            seen[name] = (spec.fingerprint, is_baseline)
            specs.append(spec)
    return specs


def _check_expansion(
    bases: int, axes: Sequence[_Axis], seeds: tuple[int, ...] | None, source: str
) -> None:
    """Refuse a matrix that expands to more runs than the limit, before expanding it."""
    count = bases * math.prod(len(a.values) for a in axes) * len(seeds or (None,))
    if any(a.key in ("attack", "attacks") for a in axes):
        count *= 2  # at most one generated no-attack baseline per attacked point
    if count <= max_runs():
        return
    sizes = [(len(a.values), f"matrix.{a.key}") for a in axes]
    if seeds is not None:
        sizes.append((len(seeds), "matrix.seeds"))
    if bases > 1:
        sizes.append((bases, "runs"))
    field = max(sizes)[1] if sizes else "matrix"
    detail = " x ".join(f"{n} {name.removeprefix('matrix.')}" for n, name in sizes)
    check_run_count(count, field, detail, source=source)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def load_experiment(
    path: str | Path, overrides: Mapping[str, Any] | None = None, *, matrix: bool = True
) -> list[RunSpec]:
    """RunSpecs of a TOML experiment file (the one loader of ``velocity run`` and ``velocity
    sweep``); errors name the file and the key. Plug-in files it names are found next to it.
    A flat file of run fields is one run named after the file (``fedavg.toml``: ``fedavg``)."""
    doc = load_toml(path)
    with plugin_base_dir(Path(path).resolve().parent):
        return expand_experiment(
            doc, str(path), overrides, matrix=matrix, flat_name=_file_run_name(path)
        )


def split_spec_list(text: str, option: str = "list") -> list[str]:
    """Split a CLI list of component specs: ``"fedavg,krum:f=2,m=3;median"``.

    ``;`` always separates. A ``,`` separates only when the text after it starts a new spec (a
    name, or ``name:...``); a ``key=value`` piece (``=`` before any ``:``/``>``) continues the
    previous spec's parameters, so ``krum:f=2,m=3`` stays one spec.
    """
    items: list[str] = []
    for group in text.split(";"):
        current: list[str] = []
        for piece in group.split(","):
            head = re.split(r"[:>]", piece, maxsplit=1)[0]
            if "=" in head and current:
                current.append(piece)
                continue
            if current:
                items.append(",".join(current).strip())
            current = [piece]
        if current:
            items.append(",".join(current).strip())
    if not items or any(not item for item in items):
        raise SpecError(f"{option}: empty entry in {text!r}; separate specs with ',' or ';'")
    return items


def specs_from_flags(
    *,
    strategies: Sequence[str] | None,
    attacks: Sequence[str] | None,
    seeds: int | Sequence[int] | None,
    shared: Mapping[str, Any],
) -> list[RunSpec]:
    """RunSpecs of ad-hoc CLI lists: ``--strategies`` x ``--attacks`` x ``--seeds`` on shared."""
    matrix: dict[str, Any] = {}
    if strategies:
        matrix["strategy"] = list(strategies)
    if attacks:
        matrix["attack"] = list(attacks)
    if seeds is not None:
        matrix["seeds"] = seeds if isinstance(seeds, int) else list(seeds)
    doc: dict[str, Any] = {"shared": dict(shared)}
    if matrix:
        doc["matrix"] = matrix
    return expand_experiment(doc, "command line")
