"""``velocity run``: one or more runs from a TOML file and/or flags, with live progress."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from velocity.cli import _options
from velocity.cli._app import app, err_console, out_console, print_json

if TYPE_CHECKING:
    from rich.table import Table

    from velocity.simulation import RunResult, RunSetup

__all__ = ["collect_overrides", "plugin_refs", "result_to_json", "run_command"]


def plugin_refs(values: list[str] | None) -> list[str] | None:
    """--plugin values: files resolved against the current folder now, modules as given."""
    if not values:
        return None
    return [
        str(Path(v).expanduser().resolve()) if v.endswith(".py") or "/" in v else v for v in values
    ]


def collect_overrides(**flags: Any) -> dict[str, Any]:
    """The RunSpec fields given on the command line (flags left at None are not given)."""
    return {key: value for key, value in flags.items() if value is not None}


def result_to_json(result: RunResult) -> dict[str, Any]:
    """JSON-able view of a run result (non-finite numbers become null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return {
        "name": result.spec.name,
        "fingerprint": result.spec.fingerprint,
        "spec": result.spec.canonical(),
        "status": result.status,
        "error": result.error,
        "final": {k: clean(v) for k, v in result.final_metrics().items()},
        "rounds": [{k: clean(v) for k, v in r.items()} for r in result.rounds],
        "wall_seconds": result.wall_seconds,
    }


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _round_table(result: RunResult) -> Table:
    from rich.table import Table

    table = Table(title=f"{result.spec.name}: {result.status}")
    for column in ("round", "test_acc", "test_loss", "train_loss", "clients", "seconds"):
        table.add_column(column, justify="right")
    for r in result.rounds:
        table.add_row(
            str(r["round"]),
            _fmt(r["test_accuracy"]),
            _fmt(r["test_loss"]),
            _fmt(r["train_loss"]),
            str(r["num_clients"]),
            _fmt(r["round_seconds"], 3),
        )
    return table


def _run_with_progress(setup: RunSetup, show: bool) -> RunResult:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from velocity.simulation import run_simulation

    spec = setup.spec
    if not show:
        return run_simulation(spec, setup=setup)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acc {task.fields[acc]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(spec.name, total=spec.rounds, acc="-")

        def on_round(record: dict[str, Any]) -> None:
            progress.update(task, advance=1, acc=_fmt(record.get("test_accuracy")))

        return run_simulation(spec, on_round=on_round, setup=setup)


@app.command("run")
def run_command(
    spec_file: Path | None = typer.Argument(
        None, metavar="SPEC", help="TOML file with [shared] and [[runs]] (optional)."
    ),
    name: str | None = typer.Option(None, "--name", help="Run name."),
    dataset: str | None = _options.DATASET,
    partition: str | None = _options.PARTITION,
    num_clients: int | None = _options.NUM_CLIENTS,
    clients_per_round: int | None = _options.CLIENTS_PER_ROUND,
    rounds: int | None = _options.ROUNDS,
    local_epochs: int | None = _options.LOCAL_EPOCHS,
    batch_size: int | None = _options.BATCH_SIZE,
    lr: float | None = _options.LR,
    momentum: float | None = typer.Option(None, "--momentum", help="Client SGD momentum."),
    weight_decay: float | None = typer.Option(None, "--weight-decay", help="L2 weight decay."),
    model: str | None = _options.MODEL,
    strategy: str | None = typer.Option(None, "--strategy", help="Strategy spec, e.g. fedavg."),
    mu: float | None = typer.Option(None, "--mu", help="FedProx proximal mu."),
    seed: int | None = typer.Option(None, "--seed", help="Run seed."),
    eval_every: int | None = _options.EVAL_EVERY,
    client_momentum: str | None = _options.CLIENT_MOMENTUM,
    plugin: list[str] | None = _options.PLUGIN,
    byzantine: float | None = _options.BYZANTINE,
    attack: str | None = typer.Option(None, "--attack", help="Attack spec, e.g. sign_flip."),
    json_output: bool = typer.Option(
        False, "--json", help="JSON on stdout (progress and logs on stderr)."
    ),
    store: Path | None = _options.STORE,
) -> int:
    """Run federated training: every run of SPEC (or one run from flags), flags overriding."""
    from velocity.experiment import load_experiment
    from velocity.simulation import validate_run
    from velocity.spec import spec_from_mapping
    from velocity.store import open_store, recorded_run

    overrides = collect_overrides(
        name=name,
        dataset=dataset,
        partition=partition,
        num_clients=num_clients,
        clients_per_round=clients_per_round,
        rounds=rounds,
        local_epochs=local_epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        model=model,
        strategy=strategy,
        mu=mu,
        seed=seed,
        eval_every=eval_every,
        client_momentum=client_momentum,
        plugins=plugin_refs(plugin),
        byzantine=byzantine,
        attack=attack,
    )
    if spec_file is not None:
        specs = load_experiment(spec_file, overrides, matrix=False)
    else:
        specs = [spec_from_mapping(overrides, "command line")]
    # Prepare every run against its data (dataset files, partition sizes) before running or
    # recording anything: bad input exits 2 with nothing half-done.
    setups = [validate_run(spec) for spec in specs]
    results = []
    run_store = open_store(store)
    for spec, setup in zip(specs, setups, strict=True):
        with recorded_run(run_store, spec) as record:
            result = _run_with_progress(setup, show=err_console.is_terminal)
            record(result)
        results.append(result)
        if not json_output:
            out_console.print(_round_table(result))
            if result.error:
                err_console.print(f"[red]run {spec.name} failed:[/] {result.error}")
        else:
            err_console.print(f"{spec.name}: {result.status}")
    run_store.close()
    if json_output:
        print_json([result_to_json(r) for r in results])
    return 1 if any(r.status == "failed" for r in results) else 0
