"""``velocity runs``, ``velocity show`` and ``velocity leaderboard``: read the run store."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from velocity.cli import _options
from velocity.cli._app import app, out_console, print_json
from velocity.errors import InputError

if TYPE_CHECKING:
    from velocity.leaderboards import Leaderboard
    from velocity.store import RunRecord

LEADERBOARD_METRIC_NAMES = (
    "accuracy",
    "rounds-to-target",
    "time-to-target",
    "wall-clock",
    "comm-cost",
    "robustness",
    "pareto",
    "epsilon",
)
PARETO_COST_NAMES = ("comm-cost", "epsilon")
"""``velocity.leaderboards.PARETO_COSTS``'s keys (a test keeps the two equal)."""
"""``velocity.leaderboards.LEADERBOARD_METRICS``'s keys, spelled here so help needs no import
(a test keeps the two equal)."""

__all__ = [
    "LEADERBOARD_METRIC_NAMES",
    "PARETO_COST_NAMES",
    "leaderboard_command",
    "runs_command",
    "show_command",
]

STORE_OPTION = _options.STORE
JSON_OPTION = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")


def _existing_store_path(store: Path | None) -> Path:
    """Reading commands never create a store: a missing one is an input error."""
    from velocity.store import default_store_path

    path = default_store_path(store)
    if not path.is_file():
        raise InputError(
            "no run store here yet (run 'velocity run' or 'velocity sweep' first)", source=str(path)
        )
    return path


def _clean(value: Any) -> Any:
    """JSON for humans and tools: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _record_row(record: RunRecord) -> dict[str, Any]:
    from velocity.report import attack_label, strategy_label
    from velocity.store import stale_reason

    stale = stale_reason(record)
    return {
        "run_id": record.run_id,
        "name": record.name,
        "status": "stale" if stale else record.status,
        "stale_reason": stale,
        "source": record.source,
        "seed": record.seed,
        "dataset": record.spec.get("dataset", {}).get("type"),
        "strategy": strategy_label(record.spec),
        "attack": attack_label(record.spec),
        "test_accuracy": record.final.get("test_accuracy"),
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "wall_seconds": record.wall_seconds,
        "fingerprint": record.fingerprint,
    }


_STATUS_STYLES = {"failed": "red", "diverged": "yellow", "running": "cyan", "stale": "magenta"}

_RUNS_COLUMNS = (
    # (key, header, justify, keep, drop order): name, status and accuracy always show; the
    # others give way, last first, when the terminal is too narrow for them.
    ("run_id", "id", "left", False, 3),
    ("name", "name", "left", True, 0),
    ("status", "status", "left", True, 0),
    ("dataset", "dataset", "left", False, 4),
    ("strategy", "strategy", "left", False, 0),
    ("attack", "attack", "left", False, 1),
    ("seed", "seed", "right", False, 2),
    ("test_accuracy", "test_accuracy", "right", True, 0),
    ("started_at", "started", "left", False, 5),
)


def _write_csv(rows: list[dict[str, Any]]) -> None:
    import csv
    import sys

    if not rows:
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(_clean(rows))
    sys.stdout.flush()


def _one_output_format(json_output: bool, csv_output: bool) -> None:
    if json_output and csv_output:
        raise InputError("give either --json or --csv, not both")


def _records_of_sweep(records: list[RunRecord], manifest: dict[str, Any]) -> list[RunRecord]:
    """The records of the sweep the folder holds now: its own sweep id (not an earlier sweep's
    in a folder since removed and reused), its own runs, and the latest record of each (a run
    ``--resume`` re-ran replaces its earlier record here, not in the store)."""
    sweep_id, names = manifest.get("sweep_id"), set(manifest["runs"])
    latest = {r.name: r for r in records if r.sweep_id == sweep_id and r.name in names}
    return [r for r in records if latest.get(r.name) is r]


@app.command("runs")
def runs_command(
    sweep: Path | None = typer.Option(None, "--sweep", help="Only the runs of this sweep folder."),
    store: Path | None = STORE_OPTION,
    json_output: bool = JSON_OPTION,
    csv_output: bool = typer.Option(
        False, "--csv", help="Print CSV on stdout (one row per run, every field)."
    ),
) -> None:
    """List the runs recorded in the run store (oldest first)."""
    from velocity.cli._tables import Column, print_fitted_table
    from velocity.store import open_store

    _one_output_format(json_output, csv_output)
    manifest = None
    if sweep is not None:
        if not (sweep / "manifest.json").is_file():
            # A mistyped folder would otherwise list nothing and look like a sweep without runs.
            raise InputError("not a sweep folder (no manifest.json)", source=str(sweep))
        from velocity.sweepdir import DiskFolder, read_manifest

        manifest = read_manifest(DiskFolder(sweep))
    path = _existing_store_path(store)
    source = str(sweep.resolve()) if sweep is not None else None
    with open_store(path) as run_store:
        records = run_store.list_runs(source=source)
    if manifest is not None:
        records = _records_of_sweep(records, manifest)
    rows = [_record_row(r) for r in records]
    if json_output:
        print_json(_clean(rows))
        return
    if csv_output:
        _write_csv(rows)
        return
    cells = [
        {
            "run_id": row["run_id"][:8],
            "name": row["name"],
            "status": row["status"],
            "dataset": str(row["dataset"]),
            "strategy": row["strategy"],
            "attack": row["attack"],
            "seed": str(row["seed"]),
            "test_accuracy": _fmt(row["test_accuracy"]),
            # Minutes are enough to tell runs apart here; --json keeps the full timestamp.
            "started_at": (row["started_at"] or "-")[:16].replace("T", " "),
        }
        for row in rows
    ]
    columns = [
        Column(key, header, justify, keep=keep, drop_order=order)
        for key, header, justify, keep, order in _RUNS_COLUMNS
    ]
    print_fitted_table(
        out_console,
        columns,
        cells,
        title=f"runs in {path}",
        row_styles=[_STATUS_STYLES.get(row["status"]) for row in rows],
    )


@app.command("show")
def show_command(
    run: str = typer.Argument(..., metavar="RUN", help="Run id, id prefix or name."),
    store: Path | None = STORE_OPTION,
    json_output: bool = JSON_OPTION,
    spec_only: bool = typer.Option(
        False, "--spec", help="Print only the run's spec, as a TOML run file 'velocity run' reads."
    ),
) -> None:
    """Print one stored run: status, final and best metrics, and its spec as TOML."""
    from rich.table import Table

    from velocity.report import attack_label, strategy_label
    from velocity.spec import spec_toml
    from velocity.store import open_store, stale_reason

    if json_output and spec_only:
        raise InputError("give either --json or --spec, not both")
    with open_store(_existing_store_path(store)) as run_store:
        record = run_store.find_run(run)
    if json_output:
        print_json(_clean({**record.to_dict(), "stale_reason": stale_reason(record)}))
        return
    if spec_only:
        sys_stdout_write(spec_toml(record.spec))
        return
    status = "stale" if stale_reason(record) else record.status
    out_console.print(f"[bold]{escape(record.name)}[/] ({record.run_id}) — {status}")
    for label, value in (
        ("source", record.source or "velocity run"),
        ("fingerprint", record.fingerprint),
        ("started", record.started_at),
        ("finished", record.finished_at),
        ("wall seconds", _fmt(record.wall_seconds, 2)),
        ("strategy", strategy_label(record.spec)),
        ("attack", attack_label(record.spec)),
        ("error", record.error),
        ("stale", stale_reason(record)),
    ):
        if value is not None:
            out_console.print(f"  {label}: {value}", highlight=False, markup=False)
    table = Table(title="final / best")
    table.add_column("metric")
    table.add_column("final", justify="right")
    table.add_column("best", justify="right")
    for key in sorted(set(record.final) | set(record.best)):
        table.add_row(key, _fmt(record.final.get(key)), _fmt(record.best.get(key)))
    out_console.print(table)
    out_console.print(
        f"spec (TOML; 'velocity show {record.run_id[:8]} --spec > run.toml' writes it, "
        "'velocity run run.toml' runs it again):",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    sys_stdout_write(spec_toml(record.spec))


def sys_stdout_write(text: str) -> None:
    """Plain text on stdout, as written: no markup, highlighting or wrapping."""
    import sys

    sys.stdout.write(text)
    sys.stdout.flush()


def _fmt_epsilon(value: Any) -> str:
    if isinstance(value, float) and value == math.inf:
        return "∞"
    return _fmt(value, 3)


def _print_leaderboard(board: Leaderboard) -> None:
    from velocity.cli._tables import Column, print_fitted_table
    from velocity.leaderboards import CORRECTION, verdict

    arrow = "higher is better" if board.higher_is_better else "lower is better"
    unit = f" ({board.unit})" if board.unit else ""
    digits = {"rounds-to-target": 1, "time-to-target": 2, "wall-clock": 2, "comm-cost": 3}.get(
        board.metric, 4
    )

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    columns = [Column("rank", "#", "right", keep=True)]
    # The fields that tell the rows apart are the rows' names: never cut, never dropped.
    columns += [Column(f"field:{k}", k, keep=True) for k in board.config_fields]
    columns += [
        Column("n", "n", "right", drop_order=1),
        Column("mean", "mean ± std", "right", keep=True),
        Column("ci", "95% CI", drop_order=0),
        Column("verdict", "vs best", keep=True),
    ]
    if board.metric in ("rounds-to-target", "time-to-target"):
        columns.append(Column("reached", "reached", "right", keep=True))
    show_epsilon = (
        board.cost != "epsilon"
        and board.metric != "epsilon"
        and any("epsilon" in r.extra for r in board.rows)
    )
    if show_epsilon:
        columns.append(Column("epsilon", "ε", "right", keep=True))
    if board.metric == "pareto":
        columns += [
            Column("cost", "ε" if board.cost == "epsilon" else "comm MB", "right", keep=True),
            Column("front", "front", "right", keep=True),
        ]
    cells = []
    for row in board.rows:
        mean = number(row.mean) + ("" if row.std is None else f" ± {number(row.std)}")
        cost = row.extra.get(row.extra.get("pareto_cost", "comm_cost_mb"))
        cell = {
            "rank": str(row.rank),
            "n": str(row.runs),
            "mean": mean,
            "ci": "-" if row.ci_low is None else f"[{number(row.ci_low)}, {number(row.ci_high)}]",
            "verdict": verdict(row),
            "reached": str(row.extra.get("reached")),
            "epsilon": _fmt_epsilon(row.extra.get("epsilon", math.inf)),
            "cost": _fmt_epsilon(cost) if board.cost == "epsilon" else _fmt(cost, 3),
            "front": _fmt(row.extra.get("pareto_front")),
        }
        cell.update({f"field:{k}": row.fields.get(k, "-") for k in board.config_fields})
        cells.append(cell)
    print_fitted_table(
        out_console,
        columns,
        cells,
        title=f"leaderboard: {board.metric}{unit}, {arrow}",
        row_styles=["bold" if row.best else None for row in board.rows],
        hint="--format md/csv/json/latex",
    )
    out_console.print(
        f"'worse': Welch's t-test against the best, p < {board.alpha:g} after {CORRECTION}'s "
        f"correction for {max(len(board.rows) - 1, 0)} comparisons; 'tie': no significant "
        "difference.",
        highlight=False,
    )


@app.command("leaderboard")
def leaderboard_command(
    metric: str = typer.Option(
        "accuracy", "--metric", help=f"One of: {', '.join(LEADERBOARD_METRIC_NAMES)}."
    ),
    target: float = typer.Option(0.9, "--target", help="Accuracy target for rounds-to-target."),
    cost: str = typer.Option(
        "comm-cost", "--cost", help=f"Pareto's cost: one of {', '.join(PARETO_COST_NAMES)}."
    ),
    dataset: str | None = typer.Option(None, "--dataset", help="Only runs on this dataset."),
    attack: str | None = typer.Option(
        None, "--attack", help="Only runs under this attack ('none' for no attack)."
    ),
    sweep: Path | None = typer.Option(
        None, "--sweep", help="Rank the runs of this sweep folder (read from it, not the store)."
    ),
    where: list[str] | None = typer.Option(
        None,
        "--where",
        help="Only runs whose FIELD matches: field=value, e.g. strategy=fedavg (repeatable).",
    ),
    output_format: str = typer.Option(
        "table", "--format", help="table (default), md, csv, json or latex (booktabs)."
    ),
    store: Path | None = STORE_OPTION,
    json_output: bool = typer.Option(False, "--json", help="Same as --format json."),
) -> None:
    """Rank configurations over seeds: mean, std, 95% CI, significance vs the best."""
    from velocity.api import leaderboard
    from velocity.leaderboards import LEADERBOARD_FORMATS, format_leaderboard, parse_where

    if output_format not in LEADERBOARD_FORMATS:
        raise InputError(
            f"--format must be one of {', '.join(LEADERBOARD_FORMATS)}, got {output_format!r}"
        )
    if json_output and output_format not in ("table", "json"):
        raise InputError(f"give either --json or --format {output_format}, not both")
    wanted = parse_where(where or [])
    if sweep is None:
        store = _existing_store_path(store)
    elif store is not None:
        raise InputError("give either --sweep (its own runs) or --store, not both")
    board = leaderboard(
        sweep,
        metric=metric,
        target=target,
        dataset=dataset,
        attack=attack,
        store=store,
        cost=cost,
        where=wanted,
    )
    if json_output or output_format != "table":
        sys_stdout_write(format_leaderboard(board, "json" if json_output else output_format))
    else:
        _print_leaderboard(board)
