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
from velocity.records import check_target_accuracy, rounds_to_target, time_to_target
from velocity.report import (
    attack_label,
    baseline_fingerprint,
    distinguishing_fields,
    group_label,
    spec_fields,
    strategy_label,
)
from velocity.store import RunRecord
from velocity.sweepdir import SweepData

__all__ = [
    "CORRECTION",
    "LEADERBOARD_FORMATS",
    "LEADERBOARD_METRICS",
    "PARETO_COSTS",
    "WHERE_FIELDS",
    "Leaderboard",
    "LeaderboardRow",
    "build_leaderboard",
    "check_cost",
    "check_metric",
    "format_leaderboard",
    "holm_adjust",
    "latex_escape",
    "mean_confidence_interval",
    "parse_where",
    "records_from_sweep",
    "verdict",
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


_TARGET_METRICS = ("rounds-to-target", "time-to-target")
"""Metrics of reaching the accuracy target: they need each run's rounds."""

LEADERBOARD_METRICS: dict[str, _Metric] = {
    "accuracy": _Metric(True, "", "final test accuracy"),
    "rounds-to-target": _Metric(False, "rounds", "first round with test accuracy >= target"),
    "time-to-target": _Metric(
        False, "sim s", "simulated seconds to the first round with test accuracy >= target"
    ),
    "wall-clock": _Metric(False, "s", "wall-clock seconds per run"),
    "comm-cost": _Metric(False, "MB", "megabytes sent up and down over all rounds"),
    "robustness": _Metric(
        False, "", "accuracy drop vs the matching no-attack run (same spec and seed)"
    ),
    "pareto": _Metric(True, "", "Pareto fronts of final accuracy (up) and a cost (down)"),
    "epsilon": _Metric(False, "", "final privacy budget epsilon at the run's delta"),
}


def _is_private(record: RunRecord) -> bool:
    return bool((record.spec.get("strategy") or {}).get("privacy"))


def _final_epsilon(record: RunRecord) -> float | None:
    """The run's final epsilon; ``inf`` for a run without privacy (it promises none)."""
    if not _is_private(record):
        return math.inf
    value = record.final.get("epsilon")
    return float(value) if isinstance(value, int | float) and not math.isnan(value) else None


def _comm_megabytes(record: RunRecord) -> float | None:
    total = record.totals.get("bytes")
    if total is None and record.rounds is not None:
        total = sum(
            int(r.get("bytes_up") or 0) + int(r.get("bytes_down") or 0) for r in record.rounds
        )
    return None if total is None else float(total) / 1e6


PARETO_COSTS: dict[str, tuple[str, Callable[[RunRecord], float | None]]] = {
    "comm-cost": ("comm_cost_mb", _comm_megabytes),
    "epsilon": ("epsilon", _final_epsilon),
}
"""``--cost`` of the pareto metric: name -> (key in a row's ``extra``, value of a run)."""


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
    if metric == "time-to-target":
        return lambda r: time_to_target(r.rounds or [], target)
    if metric == "wall-clock":
        return lambda r: float(r.wall_seconds) if r.wall_seconds is not None else None
    if metric == "comm-cost":
        return _comm_megabytes
    if metric == "epsilon":
        return lambda r: _final_epsilon(r) if _is_private(r) else None

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
    fields: dict[str, str] = field(default_factory=dict)
    """The settings that tell this configuration apart from the other rows (short strings)."""

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
    cost: str | None = None  # pareto's cost (PARETO_COSTS), None for the other metrics
    config_fields: list[str] = field(default_factory=list)
    """The names of the rows' distinguishing ``fields``, in display order."""

    def to_dict(self) -> dict[str, Any]:
        extra = {"cost": self.cost} if self.cost is not None else {}
        return {
            **extra,
            "config_fields": list(self.config_fields),
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


def check_cost(cost: str) -> str:
    """``cost`` when it is a pareto cost; InputError naming ``--cost`` otherwise."""
    if cost not in PARETO_COSTS:
        raise InputError(f"--cost must be one of {', '.join(PARETO_COSTS)}, got {cost!r}")
    return cost


def _mean_of(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if math.inf in present:
        return math.inf
    return math.fsum(present) / len(present)


def build_leaderboard(
    records: Iterable[RunRecord],
    metric: str = "accuracy",
    *,
    target: float = 0.9,
    dataset: str | None = None,
    attack: str | None = None,
    alpha: float = 0.05,
    cost: str = "comm-cost",
    where: Mapping[str, str | Sequence[str]] | None = None,
) -> Leaderboard:
    """Rank configurations (runs grouped by fingerprint without seed) by ``metric``.

    Records need their rounds for ``rounds-to-target``. Failed and running runs are left out;
    a (fingerprint, seed) stored twice counts once (its latest record). ``cost`` is what
    ``pareto`` trades accuracy against: ``comm-cost`` (MB) or ``epsilon`` (a run without
    privacy costs ``inf``). A private configuration's rows carry its mean final ``epsilon``.
    ``where`` keeps the runs whose field matches one of its values (``{"strategy": ["fedavg",
    "krum"]}``, see :func:`parse_where`); each row is labelled with the fields that tell it
    apart.
    """
    check_metric(metric)
    check_cost(cost)
    if cost != "comm-cost" and metric != "pareto":
        raise InputError(f"--cost is pareto's cost: give it with --metric pareto, not {metric}")
    check_target_accuracy(target)
    wanted = _check_where(where or {})
    spec_info = LEADERBOARD_METRICS[metric]
    finished = _latest_per_run(records)
    baselines = {r.fingerprint: r for r in finished}
    value_of = _value_function(metric, target, baselines)
    groups: dict[str, list[RunRecord]] = {}
    for record in finished:
        if _matches(record, dataset, attack) and _where_matches(record.spec, wanted):
            groups.setdefault(record.fingerprint_without_seed, []).append(record)
    rows: list[LeaderboardRow] = []
    for key, members in groups.items():
        members.sort(key=lambda r: r.seed)
        values = [v for m in members if (v := value_of(m)) is not None and math.isfinite(v)]
        if metric in ("robustness", "epsilon") and not values:
            continue  # no attack/baseline, or no privacy: the metric is undefined
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
        if metric in _TARGET_METRICS:
            row.extra["reached"] = f"{len(values)}/{len(members)}"
        if _is_private(first):
            row.extra["epsilon"] = _mean_of(_final_epsilon(m) for m in members)
        if metric == "pareto":
            key, cost_of = PARETO_COSTS[cost]
            row.extra[key] = _mean_of(cost_of(m) for m in members)
            row.extra["pareto_cost"] = key
        rows.append(row)
    config_fields = _label_rows(rows, groups)
    rows = _rank(rows, metric, spec_info.higher_is_better)
    _mark_significance(rows, alpha)
    return Leaderboard(
        metric,
        spec_info.higher_is_better,
        spec_info.unit,
        target,
        alpha,
        rows,
        cost if metric == "pareto" else None,
        config_fields,
    )


def _label_rows(rows: Sequence[LeaderboardRow], groups: Mapping[str, list[RunRecord]]) -> list[str]:
    """Give every row the fields that tell it apart from the others; returns their names."""
    specs = [groups[row.fingerprint_without_seed][0].spec for row in rows]
    fields = distinguishing_fields(specs)
    for row, own in zip(rows, fields, strict=True):
        row.fields = own
    return list(fields[0]) if fields else []


def _rank(rows: list[LeaderboardRow], metric: str, higher: bool) -> list[LeaderboardRow]:
    def score(row: LeaderboardRow) -> float:
        if row.mean is None:
            return math.inf
        return -row.mean if higher else row.mean

    if metric == "pareto":
        scored = [
            r
            for r in rows
            if r.mean is not None and r.extra.get(r.extra["pareto_cost"]) is not None
        ]
        fronts = _pareto_fronts([(r.mean or 0.0, r.extra[r.extra["pareto_cost"]]) for r in scored])
        for row, front in zip(scored, fronts, strict=True):
            row.extra["pareto_front"] = front
    # A configuration that diverged on any seed ranks after every one that never did, whatever
    # the metric: an early stop is neither accurate nor cheap.
    if metric in _TARGET_METRICS:
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


# ----------------------------------------------------------------------------- filters

WHERE_FIELDS: tuple[str, ...] = (
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
    "mu",
    "seed",
    "eval_every",
    "plugins",
)
"""Fields ``--where`` can filter on: every RunSpec field but ``name`` (``attack`` for
``attacks``)."""


def parse_where(items: Sequence[str]) -> dict[str, list[str]]:
    """``--where`` values (``field=value``, repeatable) as ``{field: [values]}``: a run is kept
    when, for every field given, it matches one of that field's values."""
    wanted: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise InputError(f"--where takes field=value (e.g. strategy=fedavg), got {item!r}")
        wanted.setdefault(key.strip().lower(), []).append(value.strip())
    return _check_where(wanted)


def _check_where(where: Mapping[str, str | Sequence[str]]) -> dict[str, list[str]]:
    checked: dict[str, list[str]] = {}
    for key, values in where.items():
        if key not in WHERE_FIELDS:
            import difflib

            close = difflib.get_close_matches(key, WHERE_FIELDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(
                f"--where: unknown field {key!r}; {hint}allowed: {', '.join(WHERE_FIELDS)}"
            )
        checked[key] = [values] if isinstance(values, str) else list(values)
    return checked


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def _field_values(spec: Mapping[str, Any], key: str) -> set[str]:
    """Every spelling of a spec's field that ``--where key=...`` may use (lower case): the
    short label the tables show, and for components the type name alone."""
    shown = spec_fields(spec)
    values = {shown[key].lower()} if key in shown else set()
    if key == "strategy":
        table = spec.get("strategy") or {}
        values |= {str((table.get("aggregator") or {}).get("type", "")).lower()}
        values |= {str(p.get("type", "")).lower() for p in table.get("pre", [])}
    elif key == "attack":
        values |= {str(a.get("type", "")).lower() for a in spec.get("attacks", [])}
    elif key in ("dataset", "partition", "model"):
        values.add(str((spec.get(key) or {}).get("type", "")).lower())
    elif key == "clients_per_round" and spec.get(key) is None:
        values |= {"none", "all"}
    elif key in ("mu", "seed"):
        values.add(str(spec.get(key)).lower())
    return values - {""}


def _where_matches(spec: Mapping[str, Any], wanted: Mapping[str, Sequence[str]]) -> bool:
    for key, options in wanted.items():
        have = _field_values(spec, key)
        if not any(
            option.lower() in have or any(_same_number(option, h) for h in have)
            for option in options
        ):
            return False
    return True


# ----------------------------------------------------------------------------- formats

LEADERBOARD_FORMATS = ("table", "md", "csv", "json", "latex")
"""``velocity leaderboard --format`` values (``table`` is the terminal's, drawn by the CLI)."""

_DIGITS = {"rounds-to-target": 1, "time-to-target": 2, "wall-clock": 2, "comm-cost": 3}


def _number(board: Leaderboard, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{_DIGITS.get(board.metric, 4)}f}"


def verdict(row: LeaderboardRow) -> str:
    """``best``, ``tie (p=..)``, ``worse (p=..)`` (Holm-adjusted p) or why there is no test."""
    if row.best:
        text = "best"
    elif row.p_adjusted is None:
        text = "n/a (needs 2+ seeds)"
    else:
        text = f"{'worse' if row.significant else 'tie'} (p={row.p_adjusted:.3g})"
    if row.extra.get("diverged"):
        text += f"; diverged {row.extra['diverged']}/{row.runs}"
    return text


def _extra_columns(board: Leaderboard) -> list[tuple[str, Callable[[LeaderboardRow], str]]]:
    if board.metric in _TARGET_METRICS:
        return [("reached", lambda r: str(r.extra.get("reached", "-")))]
    if board.metric == "pareto":
        return [
            ("comm MB", lambda r: _number(board, r.extra.get("comm_cost_mb"))),
            ("front", lambda r: str(r.extra.get("pareto_front", "-"))),
        ]
    return []


def _metric_title(board: Leaderboard) -> str:
    unit = f" ({board.unit})" if board.unit else ""
    arrow = "higher is better" if board.higher_is_better else "lower is better"
    return f"{LEADERBOARD_METRICS[board.metric].describe}{unit}, {arrow}"


def _interval(board: Leaderboard, row: LeaderboardRow) -> str:
    if row.ci_low is None:
        return "-"
    return f"[{_number(board, row.ci_low)}, {_number(board, row.ci_high)}]"


def _markdown(board: Leaderboard) -> str:
    extras = _extra_columns(board)
    header = ["#", *board.config_fields, "n", "mean ± std", "95% CI", "vs best"]
    header += [name for name, _ in extras]
    lines = [
        f"Leaderboard: {_metric_title(board)}. Welch's t-test against the best, "
        f"{CORRECTION}-corrected p-values; worse: p < {board.alpha:g}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if h in ("#", "n") else "---" for h in header) + "|",
    ]
    for row in board.rows:
        mean = _number(board, row.mean)
        if row.std is not None:
            mean += f" ± {_number(board, row.std)}"
        if row.best:
            mean = f"**{mean}**"
        cells = [
            str(row.rank),
            *(row.fields.get(k, "-") for k in board.config_fields),
            str(row.runs),
            mean,
            _interval(board, row),
            verdict(row),
            *(fn(row) for _, fn in extras),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _csv(board: Leaderboard) -> str:
    import csv
    import io

    extras = _extra_columns(board)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "rank",
            "label",
            *board.config_fields,
            "runs",
            "mean",
            "std",
            "ci_low",
            "ci_high",
            "p_value",
            "p_adjusted",
            "significant",
            "best",
            *(name.replace(" ", "_") for name, _ in extras),
        ]
    )

    def raw(value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return ""
        return repr(value) if isinstance(value, float) else str(value).lower()

    for row in board.rows:
        writer.writerow(
            [
                row.rank,
                row.label,
                *(row.fields.get(k, "") for k in board.config_fields),
                row.runs,
                *(raw(v) for v in (row.mean, row.std, row.ci_low, row.ci_high)),
                *(raw(v) for v in (row.p_value, row.p_adjusted, row.significant, row.best)),
                *(fn(row) for _, fn in extras),
            ]
        )
    return buffer.getvalue()


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    ">": r"\textgreater{}",
    "<": r"\textless{}",
}


def latex_escape(text: str) -> str:
    """Text as LaTeX typesets it literally (one pass, so no escape is escaped again)."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def _latex(board: Leaderboard) -> str:
    extras = _extra_columns(board)
    fields = board.config_fields
    metric = LEADERBOARD_METRICS[board.metric]
    unit = f" ({board.unit})" if board.unit else ""
    header = [
        *(latex_escape(k) for k in fields),
        "$n$",
        latex_escape(metric.describe.split(" (")[0]) + latex_escape(unit),
        *(latex_escape(name) for name, _ in extras),
    ]
    columns = "l" * len(fields) + "r" + "l" + "r" * len(extras)
    arrow = "higher" if board.higher_is_better else "lower"
    caption = (
        f"{latex_escape(metric.describe[0].upper() + metric.describe[1:])}{latex_escape(unit)}"
        f" over seeds: mean $\\pm$ std ({arrow} is better); best in bold. "
        f"$^{{*}}$: worse than the best by Welch's $t$-test, $p < {board.alpha:g}$ after "
        f"{CORRECTION}'s correction for {max(len(board.rows) - 1, 0)} comparisons."
    )
    lines = [
        f"% velocity leaderboard --metric {board.metric}: needs \\usepackage{{booktabs}}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{caption}}}",
        f"\\label{{tab:velocity-{board.metric}}}",
        f"\\begin{{tabular}}{{{columns}}}",
        "\\toprule",
        " & ".join(header) + " \\\\",
        "\\midrule",
    ]
    for row in board.rows:
        mean = _number(board, row.mean)
        value = f"\\textbf{{{mean}}}" if row.best else mean
        if row.std is not None:
            value += f" $\\pm$ {_number(board, row.std)}"
        if row.significant:
            value += "$^{*}$"
        cells = [
            *(latex_escape(row.fields.get(k, "-")) for k in fields),
            str(row.runs),
            value,
            *(latex_escape(fn(row)) for _, fn in extras),
        ]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def format_leaderboard(board: Leaderboard, fmt: str) -> str:
    """The leaderboard as text in ``fmt``: ``md`` (a Markdown table), ``csv`` (one row per
    configuration, raw numbers), ``json`` (``Leaderboard.to_dict``) or ``latex`` (a booktabs
    table of mean ± std, the best in bold, the significantly worse starred)."""
    if fmt == "md":
        return _markdown(board)
    if fmt == "csv":
        return _csv(board)
    if fmt == "latex":
        return _latex(board)
    if fmt == "json":
        import json

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        return json.dumps(clean(board.to_dict()), indent=2, sort_keys=True) + "\n"
    raise InputError(f"--format must be one of {', '.join(LEADERBOARD_FORMATS)}, got {fmt!r}")
