"""``velocity runs``, ``velocity show`` and ``velocity leaderboard``: read the run store."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from velocity.cli import _options
from velocity.cli._app import app, out_console, print_json
from velocity.errors import InputError

if TYPE_CHECKING:
    from velocity.leaderboards import Leaderboard
    from velocity.store import RunRecord

LEADERBOARD_METRIC_NAMES = (
    "accuracy",
    "rounds-to-target",
    "wall-clock",
    "comm-cost",
    "robustness",
    "pareto",
)
"""``velocity.leaderboards.LEADERBOARD_METRICS``'s keys, spelled here so help needs no import
(a test keeps the two equal)."""

__all__ = ["LEADERBOARD_METRIC_NAMES", "leaderboard_command", "runs_command", "show_command"]

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
) -> None:
    """List the runs recorded in the run store (oldest first)."""
    from rich.table import Table

    from velocity.store import open_store

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
    table = Table(title=f"runs in {path}")
    for column in (
        "id",
        "name",
        "status",
        "dataset",
        "strategy",
        "attack",
        "seed",
        "acc",
        "started",
    ):
        table.add_column(column, justify="right" if column in ("seed", "acc") else "left")
    for row in rows:
        table.add_row(
            row["run_id"][:8],
            row["name"],
            row["status"],
            str(row["dataset"]),
            row["strategy"],
            row["attack"],
            str(row["seed"]),
            _fmt(row["test_accuracy"]),
            row["started_at"],
        )
    out_console.print(table)


@app.command("show")
def show_command(
    run: str = typer.Argument(..., metavar="RUN", help="Run id, id prefix or name."),
    store: Path | None = STORE_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Print one stored run: status, spec, final and best metrics, per-round records."""
    from rich.table import Table

    from velocity.report import attack_label, strategy_label
    from velocity.store import open_store, stale_reason

    with open_store(_existing_store_path(store)) as run_store:
        record = run_store.find_run(run)
    if json_output:
        print_json(_clean({**record.to_dict(), "stale_reason": stale_reason(record)}))
        return
    status = "stale" if stale_reason(record) else record.status
    out_console.print(f"[bold]{record.name}[/] ({record.run_id}) — {status}")
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
            out_console.print(f"  {label}: {value}", highlight=False)
    table = Table(title="final / best")
    table.add_column("metric")
    table.add_column("final", justify="right")
    table.add_column("best", justify="right")
    for key in sorted(set(record.final) | set(record.best)):
        table.add_row(key, _fmt(record.final.get(key)), _fmt(record.best.get(key)))
    out_console.print(table)
    out_console.print("spec:", record.spec)


def _print_leaderboard(board: Leaderboard) -> None:
    from rich.table import Table

    from velocity.leaderboards import CORRECTION

    arrow = "higher is better" if board.higher_is_better else "lower is better"
    unit = f" ({board.unit})" if board.unit else ""
    table = Table(title=f"leaderboard: {board.metric}{unit}, {arrow}")
    for column in (
        "#",
        "configuration",
        "dataset",
        "strategy",
        "attack",
        "n",
        "mean",
        "std",
        "95% CI",
        "vs best",
    ):
        table.add_column(column, justify="right" if column in ("#", "n", "mean", "std") else "left")
    if board.metric == "rounds-to-target":
        table.add_column("reached", justify="right")
    if board.metric == "pareto":
        table.add_column("comm MB", justify="right")
        table.add_column("front", justify="right")
    for row in board.rows:
        if row.best:
            verdict = "best"
        elif row.p_adjusted is None:
            verdict = "n/a (needs 2+ seeds)"
        else:
            verdict = f"{'worse' if row.significant else 'tie'} (p={row.p_adjusted:.3g})"
        interval = "-" if row.ci_low is None else f"[{_fmt(row.ci_low)}, {_fmt(row.ci_high)}]"
        cells = [
            str(row.rank),
            row.label,
            row.dataset,
            row.strategy,
            row.attack,
            str(row.runs),
            _fmt(row.mean),
            _fmt(row.std),
            interval,
            verdict,
        ]
        if board.metric == "rounds-to-target":
            cells.append(str(row.extra.get("reached")))
        if board.metric == "pareto":
            cells += [_fmt(row.extra.get("comm_cost_mb"), 3), _fmt(row.extra.get("pareto_front"))]
        table.add_row(*cells)
    out_console.print(table)
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
    dataset: str | None = typer.Option(None, "--dataset", help="Only runs on this dataset."),
    attack: str | None = typer.Option(
        None, "--attack", help="Only runs under this attack ('none' for no attack)."
    ),
    sweep: Path | None = typer.Option(
        None, "--sweep", help="Rank the runs of this sweep folder (read from it, not the store)."
    ),
    store: Path | None = STORE_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Rank configurations over seeds: mean, std, 95% CI, significance vs the best."""
    from velocity.api import leaderboard

    if sweep is None:
        store = _existing_store_path(store)
    elif store is not None:
        raise InputError("give either --sweep (its own runs) or --store, not both")
    board = leaderboard(
        sweep, metric=metric, target=target, dataset=dataset, attack=attack, store=store
    )
    if json_output:
        print_json(_clean(board.to_dict()))
    else:
        _print_leaderboard(board)
