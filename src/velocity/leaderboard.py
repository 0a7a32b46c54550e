"""Leaderboard: stored runs grouped by configuration across seeds, ranked with honest statistics.

Each group gets mean, std and a 95% Student-t confidence interval; Welch's t-test says whether
its difference from the best group is statistically significant. No scipy needed.
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

__all__ = [
    "LEADERBOARD_METRICS",
    "Leaderboard",
    "LeaderboardRow",
    "build_leaderboard",
    "check_metric",
    "mean_confidence_interval",
    "regularized_incomplete_beta",
    "student_t_cdf",
    "student_t_ppf",
    "welch_t_test",
]


# ----------------------------------------------------------------------------- statistics


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function, evaluated with modified Lentz."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 10_000):
        m2 = 2 * m
        numerator = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + numerator / c
        c = c if abs(c) > tiny else tiny
        result *= d * c
        numerator = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + numerator / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        result *= delta
        if abs(delta - 1.0) < eps:
            return result
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0) or not 0.0 <= x <= 1.0:
        raise ValueError(f"need a, b > 0 and 0 <= x <= 1, got a={a}, b={b}, x={x}")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    # The fraction converges fast only below the mean; use the symmetry I_x(a,b) = 1 - I_1-x(b,a).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_ppf(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on the CDF; exact to ~1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -student_t_ppf(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if student_t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)


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
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t_ppf(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's unequal-variance t-test (None with fewer than 2 values)."""
    if len(a) < 2 or len(b) < 2:
        return None
    mean_a, std_a, _, _ = mean_confidence_interval(a)
    mean_b, std_b, _, _ = mean_confidence_interval(b)
    assert std_a is not None and std_b is not None
    var_a, var_b = std_a**2 / len(a), std_b**2 / len(b)
    if var_a + var_b == 0.0:
        # No spread at all (deterministic runs): any difference is certain, none is none.
        return 1.0 if mean_a == mean_b else 0.0
    t = (mean_a - mean_b) / math.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


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
            "description": LEADERBOARD_METRICS[self.metric].describe,
            "rows": [row.to_dict() for row in self.rows],
        }


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
    if metric == "rounds-to-target":
        # Configurations that reach the target on more seeds rank first, then by speed.
        def key(r: LeaderboardRow) -> tuple[Any, ...]:
            return (-len(r.values) / max(r.runs, 1), score(r), r.label)
    else:

        def key(r: LeaderboardRow) -> tuple[Any, ...]:
            return (
                r.extra.get("pareto_front", math.inf) if metric == "pareto" else 0,
                score(r),
                r.label,
            )

    rows.sort(key=key)
    for rank, row in enumerate(rows, start=1):
        row.rank = rank
    return rows


def _mark_significance(rows: Sequence[LeaderboardRow], alpha: float) -> None:
    if not rows or rows[0].mean is None:
        return
    best = rows[0]
    best.best = True
    for row in rows[1:]:
        row.p_value = welch_t_test(best.values, row.values)
        row.significant = None if row.p_value is None else row.p_value < alpha
