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

__all__ = [
    "collect_overrides",
    "plugin_refs",
    "result_to_json",
    "run_command",
    "shown_rounds",
    "summary_line",
]


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


def result_to_json(result: RunResult, target: float = 0.9) -> dict[str, Any]:
    """A run result as a JSON run record (the shape ``velocity sweep --json`` prints too)."""
    from velocity.records import run_record

    return run_record(
        result.summary(),
        spec=result.spec.canonical(),
        rounds=result.rounds,
        target_accuracy=target,
    )


_TABLE_ROWS = 20
"""At most this many rounds in the table (about): a long run shows every k-th evaluated round."""


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _accuracy(record: dict[str, Any]) -> float | None:
    value = record.get("test_accuracy")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def shown_rounds(rounds: list[dict[str, Any]], limit: int = _TABLE_ROWS) -> tuple[list[int], int]:
    """``(indices into rounds, step)``: the evaluated rounds (the last round always), every
    ``step``-th of them when there are more than ``limit``, keeping the first, best and last."""
    if not rounds:
        return [], 1
    evaluated = [i for i, r in enumerate(rounds) if r.get("test_accuracy") is not None]
    if not evaluated or evaluated[-1] != len(rounds) - 1:
        evaluated.append(len(rounds) - 1)  # where the run ended (e.g. diverged) is always shown
    step = max(1, math.ceil(len(evaluated) / limit))
    picked = set(evaluated[::step]) | {evaluated[0], evaluated[-1]}
    scored = [(a, -i) for i in evaluated if (a := _accuracy(rounds[i])) is not None]
    if scored:
        picked.add(-max(scored)[1])
    return sorted(picked), step


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _round_table(result: RunResult) -> Table:
    from rich.table import Table

    indices, step = shown_rounds(result.rounds)
    evaluated = sum(1 for r in result.rounds if r.get("test_accuracy") is not None)
    caption = None
    if step > 1:
        caption = (
            f"every {_ordinal(step)} of {evaluated} evaluated rounds, with the best and the "
            f"last; all of them: velocity show {result.spec.name} --json"
        )
    elif evaluated < len(result.rounds):
        caption = f"{evaluated} evaluated rounds of {len(result.rounds)} (eval_every)"
    if result.details.get("stopped") == "target_epsilon":
        stop = (
            f"stopped after round {len(result.rounds)}: the next round would spend more than "
            f"target_epsilon={result.spec.target_epsilon:g}"
        )
        caption = f"{caption}; {stop}" if caption else stop
    table = Table(title=f"{result.spec.name}: {result.status}", caption=caption)
    columns = ["round", "test_accuracy", "test_loss", "train_loss", "num_clients", "round_seconds"]
    if any("attack_success_rate" in r for r in result.rounds):
        columns.insert(3, "attack_success_rate")
    if any("epsilon" in r for r in result.rounds):
        columns.append("epsilon")
    for column in columns:
        table.add_column(column, justify="right")
    best = max(
        ((a, -i) for i, r in enumerate(result.rounds) if (a := _accuracy(r)) is not None),
        default=None,
    )
    for i in indices:
        r = result.rounds[i]
        digits = {"round_seconds": 3, "epsilon": 3}
        table.add_row(
            *(
                "∞" if c == "epsilon" and r.get(c) == math.inf else _fmt(r.get(c), digits.get(c, 4))
                for c in columns
            ),
            style="bold" if best is not None and i == -best[1] else None,
        )
    return table


def summary_line(result: RunResult, target: float) -> str:
    """One line per run: status, final and best test accuracy, rounds to target, wall time."""
    from velocity.records import rounds_to_target, summarize_rounds

    best, _ = summarize_rounds(result.rounds)
    parts = [f"{result.spec.name}: {result.status}"]
    final = next(
        (r for r in reversed(result.rounds) if _accuracy(r) is not None),
        None,
    )
    if final is not None:
        parts.append(f"final test_accuracy {_fmt(_accuracy(final))} (round {final['round']})")
        parts.append(f"best {_fmt(best['test_accuracy'])} (round {best['test_accuracy_round']})")
        hit = rounds_to_target(result.rounds, target)
        parts.append(
            f"target {target:g} reached at round {hit}"
            if hit is not None
            else f"target {target:g} not reached"
        )
    else:
        parts.append("no evaluated round")
    parts.append(f"{len(result.rounds)} rounds in {result.wall_seconds:.1f} s")
    return " · ".join(parts)


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
        None,
        metavar="SPEC",
        help="TOML file with [shared] and [[runs]], or one flat table of run fields (optional).",
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
    client_sampling: str | None = _options.CLIENT_SAMPLING,
    device: str | None = _options.DEVICE,
    accountant: str | None = _options.ACCOUNTANT,
    delta: float | None = _options.DELTA,
    target_epsilon: float | None = _options.TARGET_EPSILON,
    system: str | None = _options.SYSTEM,
    partial_work: str | None = _options.PARTIAL_WORK,
    asynchronous: str | None = _options.ASYNCHRONOUS,
    compression: str | None = _options.COMPRESSION,
    target: float = typer.Option(
        0.9, "--target", help="Accuracy target for 'rounds to target' in the summary."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Print only the summary line of each run (no progress)."
    ),
    json_output: bool = typer.Option(
        False, "--json", help="JSON on stdout (progress and logs on stderr)."
    ),
    store: Path | None = _options.STORE,
) -> int:
    """Run federated training: every run of SPEC (or one run from flags), flags overriding."""
    from velocity.experiment import load_experiment
    from velocity.records import check_target_accuracy
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
        client_sampling=client_sampling,
        device=device,
        accountant=accountant,
        delta=delta,
        target_epsilon=target_epsilon,
        system=system,
        partial_work=partial_work,
        asynchronous=asynchronous,
        compression=compression,
    )
    check_target_accuracy(target)
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
            result = _run_with_progress(setup, show=err_console.is_terminal and not quiet)
            record(result)
        results.append(result)
        if json_output:
            err_console.print(summary_line(result, target), highlight=False, soft_wrap=True)
            continue
        if not quiet:
            out_console.print(_round_table(result))
        out_console.print(summary_line(result, target), highlight=False, soft_wrap=True)
        if result.error:
            err_console.print(f"[red]run {spec.name} failed:[/] {result.error}", highlight=False)
    run_store.close()
    if json_output:
        print_json([result_to_json(r, target) for r in results])
    return 1 if any(r.status == "failed" for r in results) else 0
