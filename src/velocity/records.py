"""Run records: timestamps, per-round metric names, run summaries and the run-name rule.

The one place below simulation, sweep, store, report and archive that says what a run's records
hold and how they are summarized, so every layer derives the same numbers the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from velocity.errors import InputError

__all__ = [
    "METRICS",
    "RESERVED_RUN_NAMES",
    "RUN_NAME_PATTERN",
    "SUMMARY_SCHEMA",
    "TIMING_METRICS",
    "check_target_accuracy",
    "final_metrics",
    "is_timing",
    "rounds_columns",
    "rounds_to_target",
    "run_name_problem",
    "run_record",
    "summarize_rounds",
    "summarize_run",
    "time_to_target",
    "utc_now",
    "utc_stamp",
]

SUMMARY_SCHEMA = "velocity.run-summary/1"

METRICS = (
    "round",
    "test_loss",
    "test_accuracy",
    "train_loss",
    "num_clients",
    "bytes_up",
    "bytes_down",
    "aggregate_seconds",
    "round_seconds",
)
"""Metrics every round records (attacks add their own, e.g. ``attack_success_rate``)."""

TIMING_METRICS = ("aggregate_seconds", "round_seconds")
"""Wall-clock metrics: recorded, but never part of a reproducibility comparison."""

RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,119}$")

RESERVED_RUN_NAMES = frozenset(
    {"manifest.json", "comparison.json", "comparison.md", "report.html", "plots", "plugins"}
    | {
        "reproduction.json",
        "readme.md",
        "environment.txt",
        "ro-crate-metadata.json",
        "data",
        "code",
    }
)
"""Names of a sweep folder's (or its archive's) own entries: a run folder may not take them."""

_DEVICE_NAMES = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)


def utc_now() -> str:
    """Now, UTC, ISO 8601 with milliseconds and a ``Z`` (the format of every timestamp)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_stamp() -> str:
    """Now, UTC, as a compact folder-name stamp (``20261202T030347Z``)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def run_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a run (and its folder), or None when it can.

    Letters, digits and ``. _ = + -``, at most 120, starting with a letter or digit; never a
    name the sweep folder uses itself, nor a Windows device name.
    """
    if not isinstance(name, str) or not RUN_NAME_PATTERN.match(name):
        return (
            "run names use letters, digits and . _ = + - (max 120, starting with a letter or "
            f"digit), got {name!r}"
        )
    if name.casefold() in RESERVED_RUN_NAMES:
        return f"run name {name!r} is reserved: the sweep folder has an entry of that name"
    if name.split(".")[0].casefold() in _DEVICE_NAMES:
        return f"run name {name!r} is reserved: it is a device name on Windows"
    return None


def check_target_accuracy(value: Any, option: str = "--target") -> float:
    """An accuracy target in (0, 1]; InputError naming ``option`` otherwise."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0.0 < value <= 1.0
    ):
        raise InputError(f"{option} must be an accuracy in (0, 1], got {value!r}")
    return float(value)


def is_timing(metric: str) -> bool:
    """Whether a metric is a wall-clock measurement (never compared for reproducibility).
    Simulated time (``sim_seconds``, ``sim_time``) is deterministic: not a timing."""
    if metric.startswith("sim_"):
        return False
    return metric in TIMING_METRICS or metric.endswith("_seconds")


def rounds_columns(rounds: Sequence[Mapping[str, Any]]) -> list[str]:
    """rounds.csv columns: :data:`METRICS` first, then any extra metric keys sorted."""
    extra = sorted({key for record in rounds for key in record} - set(METRICS))
    return [*METRICS, *extra]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def final_metrics(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The last evaluated round's metrics (the last round when none was evaluated; {} if none)."""
    for record in reversed(rounds):
        if record.get("test_accuracy") is not None:
            return dict(record)
    return dict(rounds[-1]) if rounds else {}


def rounds_to_target(rounds: Sequence[Mapping[str, Any]], target: float) -> int | None:
    """The first round whose test accuracy reaches ``target`` (None if it never does)."""
    for record in rounds:
        accuracy = _finite(record.get("test_accuracy"))
        if accuracy is not None and accuracy >= target:
            return int(record["round"])
    return None


def time_to_target(rounds: Sequence[Mapping[str, Any]], target: float) -> float | None:
    """Simulated seconds (``sim_time``) at the first round whose test accuracy reaches
    ``target``; None if it never does or the run has no simulated time (no ``system``)."""
    for record in rounds:
        accuracy = _finite(record.get("test_accuracy"))
        if accuracy is not None and accuracy >= target:
            return _finite(record.get("sim_time"))
    return None


def _finite_values(rounds: Sequence[Mapping[str, Any]], key: str) -> list[tuple[float, int]]:
    out = []
    for record in rounds:
        value = _finite(record.get(key))
        if value is not None:
            out.append((value, int(record.get("round", 0))))
    return out


def summarize_rounds(rounds: Sequence[Mapping[str, Any]]) -> tuple[dict, dict]:
    """``(best, totals)`` of per-round records: best accuracy/losses and summed costs."""
    best: dict[str, Any] = {}
    accuracy = _finite_values(rounds, "test_accuracy")
    if accuracy:
        value, round_index = max(accuracy, key=lambda item: (item[0], -item[1]))
        best.update(test_accuracy=value, test_accuracy_round=round_index)
    for key in ("test_loss", "train_loss"):
        values = _finite_values(rounds, key)
        if values:
            best[key] = min(v for v, _ in values)
    bytes_up = sum(int(r.get("bytes_up") or 0) for r in rounds)
    bytes_down = sum(int(r.get("bytes_down") or 0) for r in rounds)
    totals = {
        "bytes_up": bytes_up,
        "bytes_down": bytes_down,
        "bytes": bytes_up + bytes_down,
        "aggregate_seconds": math.fsum(float(r.get("aggregate_seconds") or 0.0) for r in rounds),
    }
    sim_times = [t for r in rounds if (t := _finite(r.get("sim_time"))) is not None]
    if sim_times:  # runs with simulated time (a system table or asynchronous mode)
        totals["sim_time"] = sim_times[-1]
    return best, totals


def summarize_run(
    *,
    name: str,
    fingerprint: str,
    status: str,
    error: str | None,
    rounds: Sequence[Mapping[str, Any]],
    started_at: str,
    finished_at: str,
    wall_seconds: float,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of a run's summary.json: everything but ``details`` and the times is derived
    from ``rounds``, so a reader can re-derive it to check the file."""
    best, totals = summarize_rounds(rounds)
    return {
        "schema": SUMMARY_SCHEMA,
        "name": name,
        "fingerprint": fingerprint,
        "status": status,
        "error": error,
        "final": final_metrics(rounds),
        "best": best,
        "totals": totals,
        "rounds_completed": len(rounds),
        "started_at": started_at,
        "finished_at": finished_at,
        "wall_seconds": wall_seconds,
        "details": dict(details or {}),
    }


def _json_safe(value: Any) -> Any:
    """Strict JSON: non-finite floats (a diverged run's NaN loss) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def run_record(
    summary: Mapping[str, Any],
    *,
    spec: Mapping[str, Any],
    rounds: Sequence[Mapping[str, Any]],
    target_accuracy: float,
    source: str | None = None,
    resumed: bool = False,
    damaged: str | None = None,
) -> dict[str, Any]:
    """One run as ``velocity run --json`` and ``velocity sweep --json`` print it (one shape for
    both): the summary.json fields (no ``schema``), the canonical ``spec``, every round's record,
    ``target_accuracy`` and ``rounds_to_target``, ``source`` (the sweep folder, or None for a
    lone run), ``resumed`` (finished by an earlier invocation of the sweep) and ``damaged``
    (what ``--resume`` found wrong with the run's files before it ran the run again)."""
    record = {key: value for key, value in summary.items() if key != "schema"}
    record.update(
        spec=dict(spec),
        rounds=[dict(r) for r in rounds],
        target_accuracy=target_accuracy,
        rounds_to_target=rounds_to_target(rounds, target_accuracy),
        source=source,
        resumed=resumed,
        damaged=damaged,
    )
    if any("sim_time" in r for r in rounds):
        record["sim_time_to_target"] = time_to_target(rounds, target_accuracy)
    return _json_safe(record)
