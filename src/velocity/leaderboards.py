"""Leaderboard: stored runs grouped by configuration across seeds, ranked with honest statistics.

Each group gets mean, std and a 95% Student-t confidence interval; Welch's t-test (scipy) says
whether its difference from the best group is significant, with Holm's step-down correction for
comparing several groups with the best at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from velocity.errors import InputError
from velocity.records import check_target_accuracy, rounds_to_target
from velocity.report import attack_label, baseline_fingerprint, group_label, strategy_label
from velocity.store import RunRecord
from velocity.sweepdir import SweepData

__all__ = [
    "CORRECTION",
    "LEADERBOARD_METRICS",
    "Leaderboard",
    "LeaderboardRow",
    "build_leaderboard",
    "check_metric",
    "holm_adjust",
    "mean_confidence_interval",
    "records_from_sweep",
    "welch_t_test",
]

CORRECTION = "Holm"
"""The multiple-comparison correction applied to the p-values against the best group."""


# ----------------------------------------------------------------------------- statistics


def mean_confidence_interval(
    values: Sequence[float], level: float = 0.95
) -> tuple[float, float | None, float | None, float | None]:
    """``(mean, std, ci_low, ci_high)``; std and the interval need at least two values."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None, None, None
    from scipy import stats  # imported here: scipy costs start-up time every command would pay

    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2.0, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's unequal-variance t-test (None with fewer than 2 values)."""
    if len(a) < 2 or len(b) < 2:
        return None
    if max(a) == min(a) and max(b) == min(b):
        # No spread at all (deterministic runs): any difference is certain, none is none.
        return 1.0 if a[0] == b[0] else 0.0
    from scipy import stats

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None): the i-th smallest of m p-values is
    multiplied by m - i + 1, then made non-decreasing and capped at 1."""
    order = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(order)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


# ----------------------------------------------------------------------------- metrics


def _final_accuracy(record: RunRecord) -> float | None:
    value = record.final.get("test_accuracy")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


@dataclass(frozen=True)
class _Metric:
    higher_is_better: bool
    unit: str
    describe: str


LEADERBOARD_METRICS: dict[str, _Metric] = {
    "accuracy": _Metric(True, "", "final test accuracy"),
    "rounds-to-target": _Metric(False, "rounds", "first round with test accuracy >= target"),
    "wall-clock": _Metric(False, "s", "wall-clock seconds per run"),
    "comm-cost": _Metric(False, "MB", "megabytes sent up and down over all rounds"),
    "robustness": _Metric(
        False, "", "accuracy drop vs the matching no-attack run (same spec and seed)"
    ),
    "pareto": _Metric(True, "", "Pareto fronts of final accuracy (up) and comm-cost (down)"),
}


def _comm_megabytes(record: RunRecord) -> float | None:
    total = record.totals.get("bytes")
    if total is None and record.rounds is not None:
        total = sum(
            int(r.get("bytes_up") or 0) + int(r.get("bytes_down") or 0) for r in record.rounds
        )
    return None if total is None else float(total) / 1e6


def _value_function(
    metric: str, target: float, baselines: Mapping[str, RunRecord]
) -> Callable[[RunRecord], float | None]:
    if metric in ("accuracy", "pareto"):
        return _final_accuracy
    if metric == "rounds-to-target":

        def reached(record: RunRecord) -> float | None:
            hit = rounds_to_target(record.rounds or [], target)
            return None if hit is None else float(hit)

        return reached
    if metric == "wall-clock":
        return lambda r: float(r.wall_seconds) if r.wall_seconds is not None else None
    if metric == "comm-cost":
        return _comm_megabytes

    def drop(record: RunRecord) -> float | None:
        if not record.spec.get("attacks"):
            return None
        baseline = baselines.get(baseline_fingerprint(record.spec))
        own, base = _final_accuracy(record), _final_accuracy(baseline) if baseline else None
        return None if own is None or base is None else base - own

    return drop


# ----------------------------------------------------------------------------- leaderboard


@dataclass
class LeaderboardRow:
    """One configuration (all its seeds): statistics of the chosen metric over its runs."""

    rank: int
    label: str
    fingerprint_without_seed: str
    dataset: str
    strategy: str
    attack: str
    runs: int
    values: list[float]
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None = None
    p_adjusted: float | None = None
    significant: bool | None = None
    best: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Leaderboard:
    metric: str
    higher_is_better: bool
    unit: str
    target: float
    alpha: float
    rows: list[LeaderboardRow]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "unit": self.unit,
            "target": self.target,
            "alpha": self.alpha,
            "correction": CORRECTION,
            "description": LEADERBOARD_METRICS[self.metric].describe,
            "rows": [row.to_dict() for row in self.rows],
        }


def records_from_sweep(data: SweepData) -> list[RunRecord]:
    """The finished runs of a sweep folder as run records (a leaderboard of one sweep, read
    from its own files rather than the run store)."""
    records = []
    for run in data.runs:
        if not run.complete or run.spec is None or run.summary is None:
            continue
        summary = run.summary
        records.append(
            RunRecord(
                run_id=run.spec.fingerprint[:16],
                name=run.name,
                source=str(data.out_dir),
                fingerprint=run.spec.fingerprint,
                fingerprint_without_seed=run.spec.fingerprint_without_seed,
                seed=run.spec.seed,
                spec=run.spec.canonical(),
                status=str(summary["status"]),
                started_at=str(summary.get("started_at")),
                error=summary.get("error"),
                finished_at=summary.get("finished_at"),
                wall_seconds=summary.get("wall_seconds"),
                final=dict(summary.get("final") or {}),
                best=dict(summary.get("best") or {}),
                totals=dict(summary.get("totals") or {}),
                rounds_completed=len(run.rounds or []),
                rounds=list(run.rounds or []),
            )
        )
    return records


def _latest_per_run(records: Iterable[RunRecord]) -> list[RunRecord]:
    """One record per (fingerprint, seed): a re-run of the same run is not another sample."""
    latest: dict[str, RunRecord] = {}
    for record in records:
        if record.status not in ("complete", "diverged"):
            continue
        current = latest.get(record.fingerprint)
        if current is None or (record.finished_at or "") >= (current.finished_at or ""):
            latest[record.fingerprint] = record
    return list(latest.values())


def _matches(record: RunRecord, dataset: str | None, attack: str | None) -> bool:
    if dataset is not None and str(record.spec.get("dataset", {}).get("type", "")).lower() != (
        dataset.lower()
    ):
        return False
    if attack is not None:
        wanted = attack.strip().lower()
        label = attack_label(record.spec).lower()
        types = {str(a.get("type", "")).lower() for a in record.spec.get("attacks", [])}
        if wanted != label and wanted not in types:
            return False
    return True


def _pareto_fronts(points: Sequence[tuple[float, float]]) -> list[int]:
    """Front index (1 = non-dominated) of each (accuracy up, cost down) point."""
    fronts = [0] * len(points)
    remaining = set(range(len(points)))
    front = 1
    while remaining:
        current = {
            i
            for i in remaining
            if not any(
                points[j][0] >= points[i][0]
                and points[j][1] <= points[i][1]
                and points[j] != points[i]
                for j in remaining
            )
        }
        for i in current:
            fronts[i] = front
        remaining -= current
        front += 1
    return fronts


def check_metric(metric: str) -> str:
    """``metric`` when it is a leaderboard metric; InputError naming ``--metric`` otherwise."""
    if metric not in LEADERBOARD_METRICS:
        raise InputError(
            f"--metric must be one of {', '.join(LEADERBOARD_METRICS)}, got {metric!r}"
        )
    return metric


def build_leaderboard(
    records: Iterable[RunRecord],
    metric: str = "accuracy",
    *,
    target: float = 0.9,
    dataset: str | None = None,
    attack: str | None = None,
    alpha: float = 0.05,
) -> Leaderboard:
    """Rank configurations (runs grouped by fingerprint without seed) by ``metric``.

    Records need their rounds for ``rounds-to-target``. Failed and running runs are left out;
    a (fingerprint, seed) stored twice counts once (its latest record).
    """
    check_metric(metric)
    check_target_accuracy(target)
    spec_info = LEADERBOARD_METRICS[metric]
    finished = _latest_per_run(records)
    baselines = {r.fingerprint: r for r in finished}
    value_of = _value_function(metric, target, baselines)
    groups: dict[str, list[RunRecord]] = {}
    for record in finished:
        if _matches(record, dataset, attack):
            groups.setdefault(record.fingerprint_without_seed, []).append(record)
    rows: list[LeaderboardRow] = []
    for key, members in groups.items():
        members.sort(key=lambda r: r.seed)
        values = [v for m in members if (v := value_of(m)) is not None and math.isfinite(v)]
        if metric == "robustness" and not values:
            continue  # no attack, or no matching baseline stored: robustness is undefined
        mean = std = low = high = None
        if values:
            mean, std, low, high = mean_confidence_interval(values)
        first = members[0]
        row = LeaderboardRow(
            rank=0,
            label=group_label(first.name, first.seed),
            fingerprint_without_seed=key,
            dataset=str(first.spec.get("dataset", {}).get("type", "?")),
            strategy=strategy_label(first.spec),
            attack=attack_label(first.spec),
            runs=len(members),
            values=values,
            mean=mean,
            std=std,
            ci_low=low,
            ci_high=high,
            extra={"seeds": [m.seed for m in members], "run_ids": [m.run_id for m in members]},
        )
        row.extra["diverged"] = sum(m.status == "diverged" for m in members)
        if metric == "rounds-to-target":
            row.extra["reached"] = f"{len(values)}/{len(members)}"
        if metric == "pareto":
            cost = [c for m in members if (c := _comm_megabytes(m)) is not None]
            row.extra["comm_cost_mb"] = math.fsum(cost) / len(cost) if cost else None
        rows.append(row)
    rows = _rank(rows, metric, spec_info.higher_is_better)
    _mark_significance(rows, alpha)
    return Leaderboard(metric, spec_info.higher_is_better, spec_info.unit, target, alpha, rows)


def _rank(rows: list[LeaderboardRow], metric: str, higher: bool) -> list[LeaderboardRow]:
    def score(row: LeaderboardRow) -> float:
        if row.mean is None:
            return math.inf
        return -row.mean if higher else row.mean

    if metric == "pareto":
        scored = [r for r in rows if r.mean is not None and r.extra.get("comm_cost_mb") is not None]
        fronts = _pareto_fronts([(r.mean or 0.0, r.extra["comm_cost_mb"]) for r in scored])
        for row, front in zip(scored, fronts, strict=True):
            row.extra["pareto_front"] = front
    # A configuration that diverged on any seed ranks after every one that never did, whatever
    # the metric: an early stop is neither accurate nor cheap.
    if metric == "rounds-to-target":
        # Configurations that reach the target on more seeds rank first, then by speed.
        def key(r: LeaderboardRow) -> tuple[Any, ...]:
            return (r.extra["diverged"] > 0, -len(r.values) / max(r.runs, 1), score(r), r.label)
    else:

        def key(r: LeaderboardRow) -> tuple[Any, ...]:
            return (
                r.extra["diverged"] > 0,
                r.extra.get("pareto_front", math.inf) if metric == "pareto" else 0,
                score(r),
                r.label,
            )

    rows.sort(key=key)
    for rank, row in enumerate(rows, start=1):
        row.rank = rank
    return rows


def _mark_significance(rows: Sequence[LeaderboardRow], alpha: float) -> None:
    """Welch's test of every row against the best, Holm-adjusted over all those comparisons."""
    if not rows or rows[0].mean is None:
        return
    best = rows[0]
    best.best = True
    others = rows[1:]
    for row in others:
        row.p_value = welch_t_test(best.values, row.values)
    for row, adjusted in zip(others, holm_adjust([r.p_value for r in others]), strict=True):
        row.p_adjusted = adjusted
        row.significant = None if adjusted is None else adjusted < alpha
