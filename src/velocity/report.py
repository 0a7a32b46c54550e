"""Sweep comparison: comparison.json/.md, a self-contained report.html and PNG/SVG plots.

Everything is computed from the sweep directory's own artifacts, so a report can be rebuilt from
files alone; plots are byte-for-byte reproducible (fixed SVG hash salt, no dates).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import stat
import statistics
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocity.artifacts import write_bytes_atomic, write_json_atomic, write_text_atomic
from velocity.attacks import ATTACKS
from velocity.data import DATASETS, PARTITIONERS
from velocity.federation import ASYNC_PROTOCOLS, COMPRESSORS, SYSTEM_PARAMS
from velocity.models import MODELS
from velocity.records import rounds_to_target
from velocity.registry import format_component
from velocity.spec import RunSpec
from velocity.strategies import AGGREGATORS, PRE_AGGREGATORS, SERVER_OPTIMIZERS
from velocity.sweepdir import SweepData

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "COMPARISON_NUMBERS",
    "COMPARISON_SCHEMA",
    "PLOT_NAMES",
    "attack_label",
    "baseline_fingerprint",
    "build_comparison",
    "comparison_markdown",
    "distinguishing_fields",
    "fields_label",
    "frontier_label",
    "group_label",
    "plot_names",
    "render_plots",
    "report_html",
    "spec_fields",
    "strategy_label",
    "use_private_matplotlib_dir",
    "write_reports",
]

COMPARISON_SCHEMA = "velocity.comparison/1"
COMPARISON_NUMBERS: tuple[tuple[str, ...], ...] = (
    ("target_accuracy",),
    *(
        ("runs", "*", key)
        for key in ("final", "best", "totals", "rounds", "wall_seconds", "accuracy_drop")
    ),
    *(
        ("groups", "*", f"{metric}_{stat}")
        for metric in ("test_accuracy", "test_loss", "accuracy_drop")
        for stat in ("mean", "std")
    ),
    ("groups", "*", "mb_sent_mean"),
)
"""Where comparison.json holds numbers: the only places its "NaN"/"Infinity" strings are
floats (elsewhere they are names: a run may be called "NaN")."""
PLOT_NAMES = ("accuracy", "loss", "heatmap", "seeds", "rounds_to_target", "communication")
"""Every sweep gets these plots, each as ``plots/<name>.png`` and ``plots/<name>.svg``."""
PRIVACY_PLOT = "privacy"
"""The privacy-utility frontier, added to a sweep that has a private run (see plot_names)."""

_SVG_HASH_SALT = "velocity"


# ----------------------------------------------------------------------------- labels


def _component_label(registry: Any, table: Mapping[str, Any]) -> str:
    name = str(table.get("type", "?"))
    try:
        defaults = registry.get(name).defaults()
    except Exception:  # a component from a newer velocity: show every parameter
        defaults = {}
    params = {k: v for k, v in table.items() if k != "type" and defaults.get(k, object()) != v}
    return format_component(name, params)


def strategy_label(spec: Mapping[str, Any]) -> str:
    """Short strategy name of a canonical spec: ``fedavg``, ``fedprox:mu=0.01``, ``nnm > krum``,
    ``dp:noise_multiplier=1.0 > mean``."""
    return _strategy_label(spec, with_noise=True)


def _strategy_label(spec: Mapping[str, Any], *, with_noise: bool) -> str:
    table = spec.get("strategy") or {}
    pre = [_component_label(PRE_AGGREGATORS, p) for p in table.get("pre", [])]
    aggregator = table.get("aggregator") or {"type": "?"}
    server = table.get("server") or {}
    default_server = SERVER_OPTIMIZERS.canonical("sgd")
    mu = float(spec.get("mu") or 0.0)
    privacy = (
        [_privacy_label(table["privacy"], with_noise=with_noise)] if table.get("privacy") else []
    )
    if not privacy and not pre and aggregator == {"type": "mean"} and server == default_server:
        return f"fedprox:mu={mu!r}" if mu > 0 else "fedavg"
    parts = [*privacy, *pre, _component_label(AGGREGATORS, aggregator)]
    if server != default_server:
        parts.append(_component_label(SERVER_OPTIMIZERS, server))
    label = " > ".join(parts)
    return f"{label} (mu={mu!r})" if mu > 0 else label


_PRIVACY_DEFAULTS = {"clip_norm": 1.0, "target_quantile": None, "clip_lr": 0.2}


def _privacy_label(stage: Mapping[str, Any], *, with_noise: bool = True) -> str:
    """``dp:noise_multiplier=1.0`` and the parameters off their defaults (the noise always)."""
    params = {
        k: v
        for k, v in stage.items()
        if k not in ("type", "noise_multiplier") and v is not None and _PRIVACY_DEFAULTS.get(k) != v
    }
    if with_noise:
        params = {"noise_multiplier": stage.get("noise_multiplier"), **params}
    return format_component(str(stage.get("type", "?")), params)


def frontier_label(spec: Mapping[str, Any]) -> str:
    """A line of the privacy-utility frontier: the strategy without its noise multiplier, and
    the attack when there is one (runs differing only in noise and seed share a line)."""
    label = _strategy_label(spec, with_noise=False)
    attack = attack_label(spec)
    return label if attack == "none" else f"{label} | attack {attack}"


def attack_label(spec: Mapping[str, Any]) -> str:
    """``none`` or the attacks with their non-default parameters, joined by ``+``."""
    attacks = spec.get("attacks") or []
    if not attacks:
        return "none"
    return "+".join(_component_label(ATTACKS, a) for a in attacks)


def _dataset_label(spec: Mapping[str, Any]) -> str:
    return str((spec.get("dataset") or {}).get("type", "?"))


def group_label(name: str, seed: int) -> str:
    """A run's configuration label across seeds: its name without the ``__s<seed>`` suffix."""
    suffix = f"__s{seed}"
    return name[: -len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else name


_FIELD_ORDER = (
    "strategy",
    "attack",
    "byzantine",
    "dataset",
    "partition",
    "model",
    "num_clients",
    "clients_per_round",
    "rounds",
    "local_epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "eval_every",
    "plugins",
)
"""Display order of a configuration's settings (``mu`` shows inside the strategy's label)."""

_SELF_DESCRIBING = frozenset({"dataset", "partition", "model", "strategy", "attack"})
"""Fields whose value reads alone (``krum:f=2``); the others read as ``rounds=20``."""


def spec_fields(spec: Mapping[str, Any]) -> dict[str, str]:
    """A canonical spec's settings as short display strings, in :data:`_FIELD_ORDER` (name,
    seed and mu left out: a configuration is all its seeds, and mu is in the strategy label)."""
    fields: dict[str, str] = {}
    registries = {"dataset": DATASETS, "partition": PARTITIONERS, "model": MODELS}
    for key in _FIELD_ORDER:
        if key == "strategy":
            fields[key] = strategy_label(spec)
        elif key == "attack":
            fields[key] = attack_label(spec)
        elif key == "plugins":
            plugins = spec.get("plugins") or []
            fields[key] = "+".join(str(p.get("name", "?")) for p in plugins) or "none"
        elif key in registries:
            fields[key] = _component_label(registries[key], spec.get(key) or {})
        elif key in spec:
            value = spec[key]
            fields[key] = "all" if value is None and key == "clients_per_round" else str(value)
    federation = {"asynchronous": ASYNC_PROTOCOLS, "compression": COMPRESSORS}
    for key in sorted(set(spec) - {*_FIELD_ORDER, "name", "seed", "mu", "attacks"}):
        value = spec[key]
        if key in federation and isinstance(value, Mapping) and value:
            fields[key] = _component_label(federation[key], value)
        elif key == "system" and isinstance(value, Mapping):
            defaults = {p.name: p.default for p in SYSTEM_PARAMS}
            changed = {k: v for k, v in value.items() if defaults.get(k, object()) != v}
            fields[key] = (
                ",".join(
                    f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changed.items()
                )
                or "none"
            )
        else:
            fields[key] = str(value)  # a field this version does not know: still told apart
    return fields


def distinguishing_fields(specs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """For each spec, the settings that tell it apart from the others, in display order.

    The malicious-client count counts only where it varies among attacked runs (a no-attack
    baseline's ``byzantine = 0`` goes with its attack ``none``). When nothing differs, every
    spec gets its strategy, so a label is never empty."""
    all_fields = [spec_fields(spec) for spec in specs]
    keys = list(dict.fromkeys(k for fields in all_fields for k in fields))
    varying = [k for k in keys if len({fields.get(k) for fields in all_fields}) > 1]
    if "byzantine" in varying:
        attacked = {f.get("byzantine") for f in all_fields if f.get("attack") != "none"}
        if len(attacked) < 2:
            varying.remove("byzantine")
    if not varying:
        varying = ["strategy"]
    return [{k: fields.get(k, "-") for k in varying} for fields in all_fields]


def fields_label(fields: Mapping[str, str]) -> str:
    """One line for a configuration's distinguishing fields: ``krum:f=2, sign_flip, rounds=20``
    (a component reads alone; ``attack none`` reads ``no attack``)."""
    parts = []
    for key, value in fields.items():
        if key == "attack" and value == "none":
            parts.append("no attack")
        elif key in _SELF_DESCRIBING:
            parts.append(value)
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def _fingerprint(data: Mapping[str, Any]) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def baseline_fingerprint(spec: Mapping[str, Any]) -> str:
    """Fingerprint of the matching no-attack run: same spec, ``attacks=[]``, ``byzantine=0``."""
    data = {k: v for k, v in spec.items() if k != "name"}
    data["attacks"] = []
    data["byzantine"] = 0
    return _fingerprint(data)


# ----------------------------------------------------------------------------- numbers


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


# ----------------------------------------------------------------------------- comparison


def build_comparison(data: SweepData, *, target_accuracy: float = 0.9) -> dict[str, Any]:
    """comparison.json content: every run's spec, status, final metrics, full trajectory, the
    accuracy drop against its no-attack baseline, and seed groups with mean and std."""
    runs: list[dict[str, Any]] = []
    for run in data.runs:
        if run.spec is None:
            raise ValueError(f"run {run.name!r} has no config: no comparison can be built")
        spec = run.spec.canonical()
        # Results that disagree with their files are not results: the run shows as incomplete.
        summary = (run.summary or {}) if run.complete else {}
        rounds = (run.rounds or []) if run.complete else []
        runs.append(
            {
                "name": run.name,
                "fingerprint": run.spec.fingerprint,
                "fingerprint_without_seed": run.spec.fingerprint_without_seed,
                "spec": spec,
                "seed": run.spec.seed,
                "status": summary.get("status", "incomplete"),
                "error": summary.get("error"),
                "final": summary.get("final", {}),
                "best": summary.get("best", {}),
                "totals": summary.get("totals", {}),
                "rounds_completed": summary.get("rounds_completed", 0),
                "wall_seconds": summary.get("wall_seconds"),
                "rounds": rounds,
                "rounds_to_target": rounds_to_target(rounds, target_accuracy),
                "strategy": strategy_label(spec),
                "attack": attack_label(spec),
                "dataset": _dataset_label(spec),
                "group": group_label(run.name, run.spec.seed),
                "baseline": None,
                "accuracy_drop": None,
            }
        )
    by_fingerprint = {r["fingerprint"]: r for r in runs}
    for entry in runs:
        if not entry["spec"]["attacks"]:
            continue
        baseline = by_fingerprint.get(baseline_fingerprint(entry["spec"]))
        if baseline is None:
            continue
        entry["baseline"] = baseline["name"]
        base_acc = _finite(baseline["final"].get("test_accuracy"))
        own_acc = _finite(entry["final"].get("test_accuracy"))
        if base_acc is not None and own_acc is not None:
            entry["accuracy_drop"] = base_acc - own_acc
    comparison: dict[str, Any] = {
        "schema": COMPARISON_SCHEMA,
        "target_accuracy": target_accuracy,
        "runs": runs,
        "ranking": [r["name"] for r in _ranked(runs)],
        "groups": _describe_groups(_groups(runs), runs),
    }
    # The distinguishing fields in display order (JSON objects do not keep an order).
    groups = comparison["groups"]
    comparison["config_fields"] = list(groups[0]["fields"]) if groups else []
    return comparison


def _describe_groups(
    groups: list[dict[str, Any]], runs: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each group's distinguishing ``fields`` (against the other groups) and their one-line
    ``config``, its seeds' ``rounds_to_target`` and its mean megabytes sent."""
    by_name = {r["name"]: r for r in runs}
    specs = [by_name[g["runs"][0]]["spec"] for g in groups]
    for group, fields in zip(groups, distinguishing_fields(specs), strict=True):
        members = [by_name[name] for name in group["runs"]]
        sent = [float(b) / 1e6 for m in members if (b := m["totals"].get("bytes")) is not None]
        group["fields"] = fields
        group["config"] = fields_label(fields)
        group["rounds_to_target"] = [m["rounds_to_target"] for m in members]
        group["mb_sent_mean"] = math.fsum(sent) / len(sent) if sent else None
    return groups


def _rank_key(entry: Mapping[str, Any]) -> tuple[int, float, str]:
    """Complete runs by final accuracy, then diverged runs (whatever accuracy they last
    showed), then runs without a finite accuracy (failed, incomplete)."""
    accuracy = _finite(entry["final"].get("test_accuracy"))
    if accuracy is None or entry["status"] not in ("complete", "diverged"):
        tier = 2
    else:
        tier = 0 if entry["status"] == "complete" else 1
    return (tier, -(accuracy or 0.0), entry["name"])


def _ranked(runs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(runs, key=_rank_key)


def _groups(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for entry in runs:
        grouped.setdefault(entry["fingerprint_without_seed"], []).append(entry)
    groups = []
    for key, members in grouped.items():
        accuracies = [
            a for m in members if (a := _finite(m["final"].get("test_accuracy"))) is not None
        ]
        losses = [a for m in members if (a := _finite(m["final"].get("test_loss"))) is not None]
        drops = [d for m in members if (d := _finite(m["accuracy_drop"])) is not None]
        acc_mean, acc_std = _mean_std(accuracies)
        loss_mean, loss_std = _mean_std(losses)
        drop_mean, drop_std = _mean_std(drops)
        groups.append(
            {
                "diverged": sum(m["status"] == "diverged" for m in members),
                "fingerprint_without_seed": key,
                "label": members[0]["group"],
                "strategy": members[0]["strategy"],
                "attack": members[0]["attack"],
                "runs": [m["name"] for m in members],
                "seeds": [m["seed"] for m in members],
                "test_accuracy_mean": acc_mean,
                "test_accuracy_std": acc_std,
                "test_loss_mean": loss_mean,
                "test_loss_std": loss_std,
                "accuracy_drop_mean": drop_mean,
                "accuracy_drop_std": drop_std,
            }
        )
    # A configuration that diverged on some seed ranks after every one that never did.
    groups.sort(
        key=lambda g: (
            g["test_accuracy_mean"] is None,
            g["diverged"] > 0,
            -(g["test_accuracy_mean"] or 0),
        )
    )
    return groups


# ----------------------------------------------------------------------------- markdown


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}f}"
    return str(value)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_TABLE_HEADER = (
    "rank",
    "run",
    "strategy",
    "attack",
    "seed",
    "status",
    "final acc",
    "final loss",
    "acc drop",
    "rounds to target",
    "wall s",
    "MB sent",
)


def _is_private(entry: Mapping[str, Any]) -> bool:
    return bool((entry.get("spec") or {}).get("strategy", {}).get("privacy"))


def _has_privacy(comparison: Mapping[str, Any]) -> bool:
    """Whether any run of the sweep is private (its tables then get an epsilon column)."""
    return any(_is_private(r) for r in comparison["runs"])


def _fmt_epsilon(value: Any) -> str:
    number = _finite(value)
    if number is None:
        return "∞" if isinstance(value, float) and value == math.inf else "-"
    return f"{number:.3g}" if number < 1000 else f"{number:.0f}"


def _table_header(comparison: Mapping[str, Any]) -> tuple[str, ...]:
    return (*_TABLE_HEADER, "epsilon") if _has_privacy(comparison) else _TABLE_HEADER


def _table_rows(comparison: Mapping[str, Any]) -> list[list[str]]:
    rows = _plain_table_rows(comparison)
    if _has_privacy(comparison):
        by_name = {r["name"]: r for r in comparison["runs"]}
        for rank, name in enumerate(comparison["ranking"]):
            entry = by_name[name]
            final = entry["final"]
            shown = _fmt_epsilon(final.get("epsilon")) if _is_private(entry) else "∞"
            rows[rank].append(shown if final else "-")
    return rows


def _plain_table_rows(comparison: Mapping[str, Any]) -> list[list[str]]:
    by_name = {r["name"]: r for r in comparison["runs"]}
    rows = []
    for rank, name in enumerate(comparison["ranking"], start=1):
        entry = by_name[name]
        total_bytes = entry["totals"].get("bytes")
        rows.append(
            [
                str(rank),
                name,
                entry["strategy"],
                entry["attack"],
                str(entry["seed"]),
                entry["status"],
                _fmt(entry["final"].get("test_accuracy")),
                _fmt(entry["final"].get("test_loss")),
                _fmt(entry["accuracy_drop"]),
                _fmt(entry["rounds_to_target"]),
                _fmt(entry["wall_seconds"], 2),
                _fmt(total_bytes / 1e6 if total_bytes is not None else None, 2),
            ]
        )
    return rows


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return _fmt(mean) + (f" ± {std:.4f}" if std is not None else "")


def _field_keys(comparison: Mapping[str, Any]) -> list[str]:
    return list(comparison.get("config_fields", []))


def _rounds_to_target_cell(group: Mapping[str, Any]) -> str:
    reached = [r for r in group.get("rounds_to_target", []) if r is not None]
    total = len(group.get("rounds_to_target", []))
    if not reached:
        return f"- (0/{total})" if total else "-"
    mean = math.fsum(reached) / len(reached)
    return f"{mean:.1f} ({len(reached)}/{total})"


def _group_header(comparison: Mapping[str, Any]) -> list[str]:
    return [
        "configuration",
        *_field_keys(comparison),
        "seeds",
        "final acc",
        "final loss",
        "acc drop",
        "rounds to target",
        "MB sent",
    ]


def _group_rows(comparison: Mapping[str, Any]) -> list[list[str]]:
    keys = _field_keys(comparison)
    return [
        [
            g["label"],
            *(g.get("fields", {}).get(k, "-") for k in keys),
            str(len(g["runs"])) + (f" ({g['diverged']} diverged)" if g.get("diverged") else ""),
            _pm(g["test_accuracy_mean"], g["test_accuracy_std"]),
            _pm(g["test_loss_mean"], g["test_loss_std"]),
            _pm(g["accuracy_drop_mean"], g["accuracy_drop_std"]),
            _rounds_to_target_cell(g),
            _fmt(g.get("mb_sent_mean"), 2),
        ]
        for g in comparison["groups"]
    ]


def comparison_markdown(comparison: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    """comparison.md: ranked run table, seed groups (mean ± std) and the errors of failed runs."""
    target = comparison["target_accuracy"]
    lines = [
        "# Sweep comparison",
        "",
        f"{len(comparison['runs'])} runs; velocity {manifest.get('velocity_version', '?')}; "
        f"started {manifest.get('started_at', '?')}. Ranked by final test accuracy; "
        "diverged runs after every complete one, runs without results last. "
        f"*acc drop*: final accuracy of the matching no-attack run (same spec, no attack, "
        f"same seed) minus the run's own. *rounds to target*: first round with test accuracy "
        f">= {target:g}."
        + (
            " *epsilon*: the run's privacy budget spent, at its delta (∞: not private)."
            if _has_privacy(comparison)
            else ""
        ),
        "",
        "| " + " | ".join(_table_header(comparison)) + " |",
        "|"
        + "|".join(
            "---:" if h not in ("run", "strategy", "attack", "status") else "---"
            for h in _table_header(comparison)
        )
        + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in _table_rows(comparison)]
    lines += ["", "## Over seeds (mean ± std)", ""]
    group_header = _group_header(comparison)
    lines += [
        "| " + " | ".join(group_header) + " |",
        "|" + "|".join("---" for _ in group_header) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in _group_rows(comparison)]
    failed = [r for r in comparison["runs"] if r["error"]]
    if failed:
        lines += ["", "## Errors", ""]
        lines += [f"- `{r['name']}` ({r['status']}): {_md_cell(str(r['error']))}" for r in failed]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    png: bytes
    svg: str


def _series(rounds: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for record in rounds:
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            xs.append(int(record["round"]))
            ys.append(float(value))
    return xs, ys


def _grid(count: int) -> tuple[int, int]:
    cols = min(3, max(count, 1))
    return math.ceil(max(count, 1) / cols), cols


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # Agg, chosen explicitly: no GUI backend, no global pyplot state
    return figure


def _attack_free_key(entry: Mapping[str, Any]) -> str:
    spec = {
        k: v for k, v in entry["spec"].items() if k not in ("name", "seed", "attacks", "byzantine")
    }
    return json.dumps(spec, sort_keys=True)


_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#999999")
"""Okabe and Ito's colour-blind-safe palette (yellow swapped for grey, which reads on white)."""
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = (None, "o", "s", "^", "D", "v")
_TARGET_COLOUR = "#444444"


def _line_style(index: int) -> dict[str, Any]:
    """The index-th configuration's colour, line style and marker: each pair (colour, style) is
    used once for the first 32 configurations (so lines that coincide stay visible), markers
    tell further ones apart."""
    marker = _MARKERS[(index // 32) % len(_MARKERS)]
    return {
        "color": _COLOURS[index % len(_COLOURS)],
        "linestyle": _LINESTYLES[(index + index // len(_COLOURS)) % len(_LINESTYLES)],
        "marker": marker,
        "markevery": 0.2 if marker else None,
        "markersize": 4,
    }


@dataclass(frozen=True)
class _Curve:
    family: int
    xs: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]


def _group_curve(members: Sequence[Mapping[str, Any]], key: str, x_axis: str) -> _Curve | None:
    """Mean and min-max over seeds of ``key`` at each evaluated round; x is the round or the
    cumulative megabytes sent up and down by then (``x_axis`` ``round`` or ``mb``)."""
    values: dict[int, list[float]] = {}
    xs: dict[int, list[float]] = {}
    for entry in members:
        sent = 0.0
        for record in entry["rounds"]:
            sent += float(record.get("bytes_up") or 0) + float(record.get("bytes_down") or 0)
            value = _finite(record.get(key))
            if value is None:
                continue
            at = int(record["round"])
            values.setdefault(at, []).append(value)
            xs.setdefault(at, []).append(sent / 1e6 if x_axis == "mb" else float(at))
    if not values:
        return None
    rounds = sorted(values)
    return _Curve(
        family=0,
        xs=[math.fsum(xs[r]) / len(xs[r]) for r in rounds],
        mean=[math.fsum(values[r]) / len(values[r]) for r in rounds],
        low=[min(values[r]) for r in rounds],
        high=[max(values[r]) for r in rounds],
    )


def _panel_label(group: Mapping[str, Any]) -> str:
    """The attack panel a group's curve goes in (with its malicious count where that varies)."""
    fields = group.get("fields", {})
    attack = {k: fields[k] for k in ("attack", "byzantine") if k in fields}
    if not attack:
        return "attack: none" if group["attack"] == "none" else f"attack: {group['attack']}"
    return "attack: " + fields_label(attack).replace("no attack", "none")


def _families(comparison: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
    """Configurations up to their attack, numbered in sweep order, with labels that tell them
    apart: a strategy keeps its colour and line style in every attack's panel."""
    runs = comparison["runs"]
    keys = list(dict.fromkeys(_attack_free_key(r) for r in runs))
    first: dict[str, Mapping[str, Any]] = {}
    for entry in runs:
        first.setdefault(_attack_free_key(entry), entry["spec"])
    specs = [{**first[k], "attacks": [], "byzantine": 0} for k in keys]
    labels = [fields_label(f) for f in distinguishing_fields(specs)]
    return {k: i for i, k in enumerate(keys)}, labels


def _panels(
    comparison: Mapping[str, Any], key: str, x_axis: str
) -> tuple[dict[str, list[_Curve]], list[str]]:
    """Per attack panel (no-attack first), one curve per configuration; and family labels."""
    families, labels = _families(comparison)
    by_name = {r["name"]: r for r in comparison["runs"]}
    order = {r["name"]: i for i, r in enumerate(comparison["runs"])}
    groups = sorted(comparison["groups"], key=lambda g: min(order[n] for n in g["runs"]))
    panels: dict[str, list[_Curve]] = {}
    for group in sorted(groups, key=lambda g: g["attack"] != "none"):
        members = [by_name[n] for n in group["runs"]]
        curve = _group_curve(members, key, x_axis)
        panel = panels.setdefault(_panel_label(group), [])
        if curve is not None:
            family = families[_attack_free_key(members[0])]
            panel.append(_Curve(family, curve.xs, curve.mean, curve.low, curve.high))
    return panels, labels


def _curves(
    comparison: Mapping[str, Any],
    key: str,
    ylabel: str,
    *,
    x_axis: str = "round",
    target: float | None = None,
) -> Figure:
    """One line per configuration (mean over seeds, band min-max), a panel per attack, one
    legend for all panels under them, and the target accuracy as a dashed reference line."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    panels, labels = _panels(comparison, key, x_axis)
    rows, cols = _grid(len(panels))
    entries = len(labels) + (target is not None)
    # The legend's entries, at about 0.075 in per character of a 9 pt label, plus the line.
    entry_width = 0.9 + 0.075 * max([len(label) for label in labels] + [10])
    if cols == 1:  # one panel: the legend beside it, one entry per line
        legend_cols, legend_rows = 1, 0
        width = 5.4 + entry_width
    else:
        width = 4.4 * cols + 0.6
        legend_cols = max(1, min(entries, int(width // entry_width)))
        legend_rows = math.ceil(entries / legend_cols)
    figure = _new_figure(width, 3.0 * rows + 0.9 + 0.22 * legend_rows)
    axes = figure.subplots(rows, cols, squeeze=False, sharey=True)
    finite = [v for curves in panels.values() for c in curves for v in (*c.low, *c.high) if v > 0]
    log_scale = bool(finite) and key.endswith("loss") and max(finite) / min(finite) > 100
    for index, (title, curves) in enumerate(panels.items()):
        ax = axes[index // cols][index % cols]
        for curve in curves:
            style = _line_style(curve.family)
            ax.fill_between(curve.xs, curve.low, curve.high, color=style["color"], alpha=0.12)
            ax.plot(curve.xs, curve.mean, linewidth=1.5, **style)
            if len(curve.xs) == 1 or x_axis == "mb":
                ax.plot(curve.xs[-1:], curve.mean[-1:], "o", color=style["color"], markersize=4)
        if target is not None:
            ax.axhline(target, color=_TARGET_COLOUR, linewidth=1.0, linestyle=(0, (5, 3)))
        ax.set_title(title, fontsize=10)
        if x_axis == "round":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log_scale:
            ax.set_yscale("log")
        ax.set_xlabel("round" if x_axis == "round" else "MB sent (up + down, cumulative)")
        if index % cols == 0:
            ax.set_ylabel(ylabel)
        ax.tick_params(labelleft=True)
        ax.grid(alpha=0.3)
    for index in range(len(panels), rows * cols):
        axes[index // cols][index % cols].set_visible(False)
    handles: list[Any] = []
    for family, label in enumerate(labels):
        style = _line_style(family)
        handles.append(Line2D([], [], linewidth=1.5, label=label, **style))
    if target is not None:
        handles.append(
            Line2D(
                [],
                [],
                color=_TARGET_COLOUR,
                linewidth=1.0,
                linestyle=(0, (5, 3)),
                label=f"target {target:g}",
            )
        )
    if handles:
        figure.legend(
            handles=handles,
            loc="outside right center" if cols == 1 else "outside lower center",
            ncols=legend_cols,
            fontsize=9,
            frameon=False,
        )
    what = "vs round" if x_axis == "round" else "vs MB sent"
    figure.suptitle(f"{ylabel} {what} (line: mean over seeds; band: min-max)", fontsize=10)
    return figure


def _heatmap_cells(
    comparison: Mapping[str, Any],
) -> tuple[str, str | None, list[str], list[str], dict[tuple[str, str], Mapping[str, Any]]]:
    """What the heatmap shows: ``(row title, column field, rows, columns, cells)``. The
    columns are the attack when attacks were swept, else the swept field with the fewest
    values other than the strategy; the rows are every other field that varies."""
    groups = comparison["groups"]
    keys = _field_keys(comparison)
    if "attack" in keys:
        column: str | None = "attack"
    else:
        candidates = [k for k in keys if k != "strategy"] if len(keys) > 1 else []
        counts = {k: len({g["fields"][k] for g in groups}) for k in candidates}
        column = min(candidates, key=lambda k: (counts[k], -keys.index(k))) if candidates else None
    column_keys: tuple[str, ...] = (
        ("attack", "byzantine") if column == "attack" else (column,) if column else ()
    )
    row_keys = [k for k in keys if k not in column_keys]
    order = {r["name"]: i for i, r in enumerate(comparison["runs"])}
    cells: dict[tuple[str, str], Mapping[str, Any]] = {}
    rows: list[tuple[int, str]] = []
    cols: list[tuple[tuple[bool, int], str]] = []
    for group in groups:
        fields = group["fields"]
        row = fields_label({k: fields[k] for k in row_keys}) if row_keys else "all runs"
        col = fields_label({k: fields[k] for k in column_keys if k in fields})
        first = min(order[n] for n in group["runs"])
        rows.append((first, row))
        cols.append(((not col.startswith("no attack"), first), col))
        cells[(row, col)] = group
    row_names = list(dict.fromkeys(name for _, name in sorted(rows)))
    col_names = list(dict.fromkeys(name for _, name in sorted(cols)))
    title = " x ".join(row_keys) if row_keys else ""
    return title, column, row_names, col_names, cells


def _text_colour(rgba: Sequence[float]) -> str:
    return "white" if 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5 else "black"


def _draw_heatmap(
    figure: Figure,
    ax: Any,
    grid: list[list[float]],
    rows: Sequence[str],
    cols: Sequence[str],
    *,
    cmap: str,
    vmin: float,
    vmax: float,
    colourbar: str,
) -> None:
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    norm = Normalize(vmin=vmin, vmax=vmax)
    image = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
    long = any(len(c) > 10 for c in cols)
    ax.set_xticks(
        range(len(cols)), cols, rotation=30 if long else 0, ha="right" if long else "center"
    )
    ax.set_yticks(range(len(rows)), rows)
    ax.tick_params(labelsize=9, length=0)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            colour = "black" if math.isnan(value) else _text_colour(colormaps[cmap](norm(value)))
            ax.text(
                j,
                i,
                "n/a" if math.isnan(value) else f"{value:.3f}",
                ha="center",
                va="center",
                fontsize=9,
                color=colour,
            )
    figure.colorbar(image, ax=ax, label=colourbar, shrink=0.9)


def _heatmap(comparison: Mapping[str, Any]) -> Figure:
    """Final accuracy over what the sweep swept (mean over seeds), its colours scaled to the
    data; beside it, under attack, the accuracy drop against the no-attack runs."""
    title, column, rows, cols, cells = _heatmap_cells(comparison)
    if len(comparison["groups"]) < 2:
        figure = _new_figure(6.0, 1.6)
        figure.text(0.5, 0.5, "one configuration: nothing to compare", ha="center", va="center")
        return figure
    grid = [
        [_finite(cells[(r, c)]["test_accuracy_mean"]) if (r, c) in cells else None for c in cols]
        for r in rows
    ]
    values = [v for row in grid for v in row if v is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-3:
        low, high = low - 0.005, high + 0.005
    drop_cols = [c for c in cols if column == "attack" and not c.startswith("no attack")]
    drops = [
        [
            _finite(cells[(r, c)]["accuracy_drop_mean"]) if (r, c) in cells else None
            for c in drop_cols
        ]
        for r in rows
    ]
    has_drops = any(v is not None for row in drops for v in row)
    label_width = max(len(r) for r in rows) * 0.075
    width = 1.8 + label_width + 1.0 * len(cols) + (1.6 + 1.0 * len(drop_cols) if has_drops else 0)
    figure = _new_figure(max(width, 5.5), 2.2 + 0.42 * len(rows))
    figure.get_layout_engine().set(w_pad=0.12)  # type: ignore[union-attr, call-arg]
    axes = figure.subplots(1, 2 if has_drops else 1, squeeze=False)[0]
    nan = math.nan
    _draw_heatmap(
        figure,
        axes[0],
        [[nan if v is None else v for v in row] for row in grid],
        rows,
        cols,
        cmap="viridis",
        vmin=low,
        vmax=high,
        colourbar="test accuracy\n(colours scaled to the data)",
    )
    axes[0].set_title(
        f"final test accuracy, mean over seeds\n(colour scale {low:.3f} to {high:.3f}, not 0 to 1)",
        fontsize=10,
    )
    axes[0].set_ylabel(title)
    axes[0].set_xlabel(column or "")
    if column is None:
        axes[0].set_xticks([])
    if has_drops:
        worst = max(abs(v) for row in drops for v in row if v is not None) or 0.01
        _draw_heatmap(
            figure,
            axes[1],
            [[nan if v is None else v for v in row] for row in drops],
            rows,
            drop_cols,
            cmap="RdBu_r",
            vmin=-worst,
            vmax=worst,
            colourbar="accuracy drop\n(red: lost, blue: gained)",
        )
        axes[1].set_title(
            "accuracy drop vs the no-attack run\n(same spec and seed), mean over seeds",
            fontsize=10,
        )
        axes[1].set_xlabel("attack")
        axes[1].set_yticks([])
    return figure


def _rounds_to_target(comparison: Mapping[str, Any]) -> Figure:
    """Rounds each configuration needs to reach the target (mean over the seeds that do, with
    their min and max), fastest first; those that never do are listed as such."""
    target = comparison["target_accuracy"]
    rows = []
    for group in comparison["groups"]:
        reached = [float(r) for r in group.get("rounds_to_target", []) if r is not None]
        total = len(group.get("rounds_to_target", []))
        mean = math.fsum(reached) / len(reached) if reached else None
        rows.append((group["config"], reached, total, mean))
    rows.sort(key=lambda r: (-len(r[1]) / max(r[2], 1), r[3] if r[3] is not None else 0, r[0]))
    figure = _new_figure(9.0, 1.4 + 0.32 * max(len(rows), 1))
    ax = figure.subplots()
    longest = max((r[3] + 0 for r in rows if r[3] is not None), default=1.0)
    top = max((max(r[1]) for r in rows if r[1]), default=1.0)
    for index, (_, reached, total, mean) in enumerate(rows):
        if mean is None:
            ax.text(0, index, f"  not reached (0/{total} seeds)", va="center", fontsize=8)
            continue
        ax.barh(
            index,
            mean,
            color=_COLOURS[0],
            alpha=0.85,
            xerr=[[mean - min(reached)], [max(reached) - mean]],
            error_kw={"ecolor": "#333333", "capsize": 3, "linewidth": 1},
        )
        ax.text(
            max(reached) + top * 0.02,
            index,
            f"{mean:.1f} ({len(reached)}/{total} seeds)",
            va="center",
            fontsize=8,
        )
    from matplotlib.ticker import MaxNLocator

    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=9)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top; rows without a bar keep their place
    ax.set_xlim(0, max(longest, top) * 1.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"rounds to reach test accuracy >= {target:g} (bar: mean, whiskers: min-max)")
    ax.set_title("rounds to target, over the seeds that reach it", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return figure


def _seed_bands(comparison: Mapping[str, Any]) -> Figure:
    """Final test accuracy of every seed (dots) with each configuration's mean and std (bar),
    best first: how much of a difference is seed noise."""
    by_name = {r["name"]: r for r in comparison["runs"]}
    groups = [g for g in comparison["groups"] if g["test_accuracy_mean"] is not None]
    figure = _new_figure(9.0, 1.4 + 0.32 * max(len(groups), 1))
    ax = figure.subplots()
    for index, group in enumerate(groups):
        values = [
            v
            for n in group["runs"]
            if (v := _finite(by_name[n]["final"].get("test_accuracy"))) is not None
        ]
        mean, std = group["test_accuracy_mean"], group["test_accuracy_std"] or 0.0
        ax.errorbar(
            mean,
            index,
            xerr=std,
            fmt="|",
            color=_COLOURS[1],
            markersize=14,
            capsize=4,
            linewidth=1.5,
        )
        ax.plot(values, [index] * len(values), "o", color=_COLOURS[0], alpha=0.7, markersize=5)
    ax.set_yticks(range(len(groups)), [g["config"] for g in groups], fontsize=9)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xlabel("final test accuracy (dots: seeds; bar: mean ± std)")
    ax.set_title("final test accuracy per seed, best configuration first", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return figure


def _noise_free_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec without what a frontier line varies along: name, seed and noise multiplier."""
    out = {k: v for k, v in spec.items() if k not in ("name", "seed")}
    strategy = dict(out.get("strategy") or {})
    if strategy.get("privacy"):
        strategy["privacy"] = {
            k: v for k, v in strategy["privacy"].items() if k != "noise_multiplier"
        }
    out["strategy"] = strategy
    return out


def _field(spec: Mapping[str, Any], key: str) -> Any:
    """A canonical spec's field, its default when the canonical JSON leaves it out."""
    if key in spec:
        return spec[key]
    field = RunSpec.model_fields.get(key)
    return None if field is None else field.default


def _short(value: Any) -> str:
    if isinstance(value, Mapping) and "type" in value:
        return format_component(str(value["type"]), {k: v for k, v in value.items() if k != "type"})
    return str(value)


def _frontier_points(
    comparison: Mapping[str, Any],
) -> dict[str, list[tuple[float, float, int]]]:
    """Frontier line label -> ``(epsilon, accuracy, seeds)`` per configuration (means over
    seeds); a non-private configuration (or noise 0) has epsilon ``inf``. Runs share a line
    when their specs differ only in noise multiplier and seed."""
    configs: dict[str, tuple[dict[str, Any], list[float], list[float]]] = {}
    for entry in comparison["runs"]:
        accuracy = _finite(entry["final"].get("test_accuracy"))
        if accuracy is None or entry["status"] not in ("complete", "diverged"):
            continue
        epsilon = entry["final"].get("epsilon") if _is_private(entry) else math.inf
        if not isinstance(epsilon, int | float) or math.isnan(epsilon):
            continue
        _, epsilons, accuracies = configs.setdefault(
            entry["fingerprint_without_seed"], (entry["spec"], [], [])
        )
        epsilons.append(float(epsilon))
        accuracies.append(accuracy)
    lines: dict[str, tuple[dict[str, Any], list[tuple[float, float, int]]]] = {}
    for spec, epsilons, accuracies in configs.values():
        key = json.dumps(_noise_free_spec(spec), sort_keys=True)
        mean_eps = math.inf if math.inf in epsilons else math.fsum(epsilons) / len(epsilons)
        point = (mean_eps, math.fsum(accuracies) / len(accuracies), len(accuracies))
        lines.setdefault(key, (_noise_free_spec(spec), []))[1].append(point)
    by_label: dict[str, list[dict[str, Any]]] = {}
    for spec, _ in lines.values():
        by_label.setdefault(frontier_label(spec), []).append(spec)
    out: dict[str, list[tuple[float, float, int]]] = {}
    for spec, points in lines.values():
        label = frontier_label(spec)
        twins = by_label[label]
        if len(twins) > 1:  # same strategy, other settings: name the settings that differ
            keys = sorted({k for t in twins for k in t})
            differing = [k for k in keys if any(_field(t, k) != _field(spec, k) for t in twins)]
            label += " (" + ", ".join(f"{k}={_short(_field(spec, k))}" for k in differing) + ")"
        out[label] = sorted(points)
    return out


def _frontier(comparison: Mapping[str, Any]) -> Figure:
    lines = _frontier_points(comparison)
    figure = _new_figure(8.0, 4.8)
    ax = figure.subplots()
    colors = [_line_style(i)["color"] for i in range(len(lines))]
    finite_eps = [e for points in lines.values() for e, _, _ in points if math.isfinite(e)]
    for color, (label, points) in zip(colors, lines.items(), strict=True):
        private = [(e, a) for e, a, _ in points if math.isfinite(e)]
        if private:
            ax.plot(
                [e for e, _ in private],
                [a for _, a in private],
                color=color,
                marker="o",
                linewidth=1.4,
                label=label,
            )
        for _, accuracy, _ in (p for p in points if not math.isfinite(p[0])):
            # No finite epsilon to place it at: the non-private accuracy is a reference line.
            ax.axhline(
                accuracy,
                color=color,
                linestyle="--",
                linewidth=1.0,
                label=f"{label} (ε = ∞)" if not private else f"{label}: ε = ∞",
            )
    if finite_eps and min(finite_eps) > 0:
        ax.set_xscale("log")
    ax.set_xlabel("ε (final, at the run's δ)")
    ax.set_ylabel("final test accuracy")
    ax.set_title("privacy-utility frontier: accuracy vs ε, one line per strategy", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if lines:
        ax.legend(fontsize=6, loc="best")
    return figure


def _encode(figure: Figure) -> tuple[bytes, str]:
    import matplotlib

    # Text stays text in SVG (small, fast, searchable); the salt makes element ids reproducible.
    with matplotlib.rc_context({"svg.hashsalt": _SVG_HASH_SALT, "svg.fonttype": "none"}):
        png, svg = io.BytesIO(), io.StringIO()
        figure.savefig(png, format="png", metadata={"Software": None})
        figure.set_layout_engine("none")  # keep the layout just computed: no second solve
        figure.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return png.getvalue(), svg.getvalue()


def use_private_matplotlib_dir() -> None:
    """matplotlib keeps its configuration and font cache in ``$MPLCONFIGDIR``, else under
    ``$HOME``; unless the user chose a folder, point it at this user's own folder in the temp
    directory (created 0700; a fresh temp folder if that one is not safely ours), so drawing a
    report writes nothing under ``$HOME``. Call it before matplotlib is first imported."""
    if os.environ.get("MPLCONFIGDIR"):
        return
    uid = os.getuid() if hasattr(os, "getuid") else None
    folder = Path(tempfile.gettempdir()) / f"velocity-matplotlib-{uid if uid is not None else 'u'}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
        ours = stat.S_ISDIR(info.st_mode) and not info.st_mode & 0o022
        if uid is not None:
            ours = ours and info.st_uid == uid
    except OSError:
        ours = False
    if not ours:
        folder = Path(tempfile.mkdtemp(prefix="velocity-matplotlib-"))
    os.environ["MPLCONFIGDIR"] = str(folder)


def render_plot(name: str, comparison: Mapping[str, Any]) -> Plot:
    """One of the sweep's plots (a name of PLOT_NAMES) as PNG bytes and SVG text."""
    use_private_matplotlib_dir()
    target = comparison["target_accuracy"]
    if name == "accuracy":
        title, figure = (
            "Test accuracy per round",
            _curves(comparison, "test_accuracy", "test accuracy", target=target),
        )
    elif name == "loss":
        title, figure = "Test loss per round", _curves(comparison, "test_loss", "test loss")
    elif name == "heatmap":
        title, figure = "Final accuracy over what was swept", _heatmap(comparison)
    elif name == "rounds_to_target":
        title, figure = f"Rounds to reach accuracy {target:g}", _rounds_to_target(comparison)
    elif name == "communication":
        title, figure = (
            "Accuracy vs communication",
            _curves(comparison, "test_accuracy", "test accuracy", x_axis="mb", target=target),
        )
    elif name == PRIVACY_PLOT:
        title, figure = "Privacy-utility frontier: accuracy vs epsilon", _frontier(comparison)
    else:
        title, figure = "Final accuracy per seed", _seed_bands(comparison)
    png, svg = _encode(figure)
    return Plot(name=name, title=title, png=png, svg=svg)


PluginSources = tuple[tuple[dict[str, str], bytes], ...]
"""The sweep's plug-ins as ``(record, source)`` pairs, carried with every render job."""


def render_plots(
    comparison: Mapping[str, Any],
    map_fn: Callable[..., Iterable[Plot]] = map,
    *,
    plugins: PluginSources = (),
) -> list[Plot]:
    """The sweep's plots (see plot_names); ``map_fn`` may be a process pool's ``map``, as each
    plot is rendered independently (the bytes do not depend on where). ``plugins``: the sources
    of the sweep's plug-ins, loaded by whichever process draws a plot before it draws it (their
    components' labels leave out default parameters, which only a loaded plug-in knows)."""
    names = plot_names(comparison)
    n = len(names)
    return list(map_fn(_render_job, names, [comparison] * n, [plugins] * n))


def _render_job(name: str, comparison: Mapping[str, Any], plugins: PluginSources) -> Plot:
    """One plot, in a process that first loads the sweep's plug-ins (by their sha256)."""
    if plugins:
        from velocity.plugins import copy_name, load_plugins, provide_sources

        provide_sources({copy_name(r): source for r, source in plugins}, origin="report")
        load_plugins([r for r, _ in plugins])
    return render_plot(name, comparison)


def _plugin_sources(data: SweepData) -> PluginSources:
    """Every plug-in the sweep's runs name, with the source this process loaded it from."""
    from velocity.plugins import source_of

    records: dict[str, dict[str, str]] = {}
    for run in data.runs:
        for record in run.spec.plugins if run.spec is not None else ():
            records.setdefault(record["sha256"], dict(record))
    return tuple((r, source_of(r)) for r in records.values())


def plot_names(comparison: Mapping[str, Any]) -> tuple[str, ...]:
    """PLOT_NAMES, plus the privacy-utility frontier when a run of the sweep is private."""
    return (*PLOT_NAMES, PRIVACY_PLOT) if _has_privacy(comparison) else PLOT_NAMES


# ----------------------------------------------------------------------------- html

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f2f2f2; }
td.text, th.text { text-align: left; }
.failed { color: #b00020; }
.diverged { color: #b36b00; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-weight: 600; margin-bottom: 0.25rem; }
figcaption span { display: block; font-weight: normal; color: #555; font-size: 0.85rem; }
.meta { color: #555; font-size: 0.85rem; }
.scroll { overflow-x: auto; }
nav a { margin-right: 1rem; }
summary { cursor: pointer; font-size: 1.2rem; font-weight: 600; margin: 1rem 0; }
"""

_PLOT_NOTES = {
    "accuracy": "One line per configuration: the mean over its seeds; the band spans the lowest "
    "and highest seed; one panel per attack; dashed: the target accuracy.",
    "loss": "As above, for the test loss.",
    "heatmap": "Final test accuracy (mean over seeds) over what the sweep varied; the colours "
    "span the data's range. Under attack, the drop against the same spec's no-attack run.",
    "seeds": "Every seed's final accuracy (dots) with its configuration's mean and std: how "
    "much of a difference is seed noise.",
    "rounds_to_target": "Rounds until test accuracy first reaches the target, over the seeds "
    "that reach it (k/n: how many do).",
    "communication": "Test accuracy against the megabytes sent up and down so far (mean over "
    "seeds); the dot is the last round.",
}
"""How to read each plot: the caption under its title on the report page."""


def _html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    text_cols: set[int],
    status_col: int | None = None,
) -> str:
    head = "".join(
        f'<th class="text">{html.escape(h)}</th>'
        if i in text_cols
        else f"<th>{html.escape(h)}</th>"
        for i, h in enumerate(header)
    )
    body = []
    for row in rows:
        css = f' class="{html.escape(row[status_col])}"' if status_col is not None else ""
        cells = "".join(
            f'<td class="text">{html.escape(c)}</td>'
            if i in text_cols
            else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def report_html(
    comparison: Mapping[str, Any], manifest: Mapping[str, Any], plots: Sequence[Plot]
) -> str:
    """One self-contained page: tables and plots inlined as base64 PNG; no scripts, no network."""
    host = manifest.get("host") or {}
    meta = (
        f"{len(comparison['runs'])} runs · velocity {manifest.get('velocity_version', '?')} · "
        f"started {manifest.get('started_at', '?')} · {host.get('cpu_model', '?')}, "
        f"{host.get('cores', '?')} cores"
    )
    figures = "\n".join(
        f'<figure id="plot-{p.name}"><figcaption>{html.escape(p.title)}'
        f"<span>{html.escape(_PLOT_NOTES.get(p.name, ''))}</span></figcaption>"
        f'<img alt="{html.escape(p.title)}" '
        f'src="data:image/png;base64,{base64.b64encode(p.png).decode("ascii")}"></figure>'
        for p in plots
    )
    errors = [r for r in comparison["runs"] if r["error"]]
    error_html = ""
    if errors:
        items = "".join(
            f"<li><code>{html.escape(r['name'])}</code> ({html.escape(r['status'])}): "
            f"{html.escape(str(r['error']))}</li>"
            for r in errors
        )
        error_html = f'<h2 id="errors">Errors</h2><ul>{items}</ul>'
    links = [("configurations", "Configurations"), ("plots", "Plots"), ("runs", "Runs")]
    if errors:
        links.append(("errors", "Errors"))
    nav = "<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in links) + "</nav>"
    runs_table = _html_table(
        _table_header(comparison), _table_rows(comparison), {1, 2, 3, 5}, status_col=5
    )
    # A long run list is folded away (no script needed): the configurations come first.
    fold = " open" if len(comparison["runs"]) <= 30 else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>velocity sweep report</title><style>{_CSS}</style></head><body>"
        f'<h1>Sweep report</h1><p class="meta">{html.escape(meta)}</p>{nav}'
        '<h2 id="configurations">Configurations, over seeds (mean ± std)</h2>'
        '<p class="meta">Columns before <i>seeds</i>: the settings that tell the '
        "configurations apart. acc drop: accuracy of the matching no-attack run minus the "
        "run's own; rounds to target: mean first round with accuracy &ge; "
        f"{comparison['target_accuracy']:g} over the seeds that reach it (k/n: how many "
        "do).</p>"
        + '<div class="scroll">'
        + _html_table(
            _group_header(comparison),
            _group_rows(comparison),
            set(range(1 + len(_field_keys(comparison)))),
        )
        + f'</div><h2 id="plots">Plots</h2>{figures}'
        + f'<details id="runs"{fold}><summary>Runs, ranked by final test accuracy '
        f"({len(comparison['runs'])})</summary>"
        + f'<div class="scroll">{runs_table}</div></details>'
        + f"{error_html}</body></html>\n"
    )


def write_reports(
    data: SweepData,
    *,
    target_accuracy: float = 0.9,
    map_fn: Callable[..., Iterable[Plot]] = map,
) -> dict[str, Any]:
    """Write comparison.json, comparison.md, report.html and plots/ into the sweep folder
    (``map_fn``: how to render the plots, e.g. a process pool's ``map``)."""
    out_dir = Path(data.out_dir)
    comparison = build_comparison(data, target_accuracy=target_accuracy)
    use_private_matplotlib_dir()
    plots = render_plots(comparison, map_fn, plugins=_plugin_sources(data))
    for plot in plots:
        write_bytes_atomic(out_dir / "plots" / f"{plot.name}.png", plot.png)
        write_text_atomic(out_dir / "plots" / f"{plot.name}.svg", plot.svg)
    write_json_atomic(out_dir / "comparison.json", comparison)
    write_text_atomic(out_dir / "comparison.md", comparison_markdown(comparison, data.manifest))
    write_text_atomic(out_dir / "report.html", report_html(comparison, data.manifest, plots))
    return comparison
