"""``velocity sweep``: run an experiment file, or ad-hoc strategy x attack x seed lists, at once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from velocity.cli import _options
from velocity.cli._app import app, err_console, out_console, print_json, stop_cleanly
from velocity.cli.run import collect_overrides, plugin_refs
from velocity.errors import InputError

if TYPE_CHECKING:
    from rich.progress import Progress

    from velocity.sweeps import SweepEvent, SweepResult

__all__ = ["command_line", "parse_seeds", "sweep_command"]


def parse_seeds(text: str) -> int | list[int]:
    """``--seeds 3`` (seeds 0, 1, 2) or ``--seeds 0,4,7`` (exactly those)."""
    try:
        if "," not in text and ";" not in text:
            count = int(text)
            if count <= 0:
                raise ValueError
            return count
        seeds = [int(part) for part in text.replace(";", ",").split(",")]
        if any(s < 0 for s in seeds):
            raise ValueError
        return seeds
    except ValueError:
        raise InputError(
            f"--seeds must be a count N > 0 or a comma list of seeds >= 0, got {text!r}"
        ) from None


class _ProgressView:
    """Live progress on stderr when it is a terminal; one line per finished run otherwise."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.progress: Progress | None = None
        self.task: Any = None

    def __call__(self, event: SweepEvent) -> None:
        kind = event["event"]
        if kind == "damaged":  # before the progress starts: --resume found a damaged run
            err_console.print(
                f"[yellow]warning:[/] run {event['name']} is damaged ({event['problem']}); its "
                f"files are kept in {event['moved_to']} and it runs again",
                highlight=False,
                soft_wrap=True,
            )
            return
        if self.live:
            self._live(event)
        elif kind == "run":
            line = f"[{event['done']}/{event['total']}] {event['name']}: {event['status']}"
            if event.get("error"):
                line += f" ({event['error']})"
            err_console.print(line, highlight=False, soft_wrap=True)

    def _live(self, event: SweepEvent) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if event["event"] == "start":
            self.progress = Progress(
                TextColumn("[bold]sweep"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("running {task.fields[running]} · failed {task.fields[failed]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "sweep",
                total=event["total"],
                completed=event["done"],
                running=0,
                failed=event["failed"],
            )
            return
        if self.progress is None:
            return
        self.progress.update(
            self.task, completed=event["done"], running=event["running"], failed=event["failed"]
        )
        if event["event"] == "run" and event["status"] == "failed":
            self.progress.console.print(f"[red]{event['name']} failed:[/] {event['error']}")
        if event["event"] == "end":
            self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _print_result(result: SweepResult) -> None:
    from rich.table import Table

    table = Table(title=f"sweep: {result.out_dir}")
    table.add_column("run")
    table.add_column("status")
    table.add_column("final acc", justify="right")
    table.add_column("error")
    for outcome in result.results.values():
        accuracy = outcome.final.get("test_accuracy")
        shown = f"{accuracy:.4f}" if isinstance(accuracy, float) else "-"
        style = {"failed": "red", "diverged": "yellow"}.get(outcome.status, "")
        status = f"[{style}]{outcome.status}[/]" if style else outcome.status
        table.add_row(outcome.name, status, shown, outcome.error or "")
    out_console.print(table)
    out_console.print(f"report: {result.out_dir / 'report.html'}")


def _result_json(result: SweepResult, target: float) -> list[dict[str, Any]]:
    """The sweep's runs as JSON run records, in manifest order: the shape ``velocity run --json``
    prints, each with ``source`` (the sweep folder) and ``resumed``."""
    from velocity.records import run_record
    from velocity.sweepdir import read_sweep

    records = []
    for run in read_sweep(result.out_dir).runs:
        outcome = result.results.get(run.name)
        summary = run.summary if run.complete and run.summary is not None else None
        if summary is None:  # no trustworthy results on disk: what the sweep itself saw
            summary = {
                "name": run.name,
                "fingerprint": run.spec.fingerprint if run.spec else None,
                "status": outcome.status if outcome else "incomplete",
                "error": outcome.error if outcome else run.problem,
                "final": dict(outcome.final) if outcome else {},
                "best": {},
                "totals": {},
                "rounds_completed": 0,
                "started_at": None,
                "finished_at": None,
                "wall_seconds": outcome.wall_seconds if outcome else None,
                "details": {},
            }
        records.append(
            run_record(
                summary,
                spec=run.spec.canonical() if run.spec else {},
                rounds=(run.rounds or []) if run.complete else [],
                target_accuracy=target,
                source=str(result.out_dir),
                resumed=bool(outcome and outcome.resumed),
                damaged=result.damaged.get(run.name),
            )
        )
    return records


def command_line(ctx: typer.Context) -> list[str]:
    """The invocation, rebuilt from the parsed parameters (independent of how it was called)."""
    words = ["velocity", ctx.info_name or "sweep"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if value is None or value is False or value == param.default:
            continue
        if param.param_type_name == "argument":
            words.append(str(value))
        elif value is True:
            words.append(param.opts[0])
        else:
            words += [param.opts[0], str(value)]
    return words


@app.command("sweep")
def sweep_command(
    ctx: typer.Context,
    experiment: Path | None = typer.Argument(
        None, metavar="EXPERIMENT", help="TOML experiment: [shared], [[runs]], [matrix]."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (default out/<UTC timestamp>-sweep)."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", metavar="OUT_DIR", help="Finish the interrupted sweep in OUT_DIR."
    ),
    parallel: int | None = typer.Option(
        None, "--parallel", help="Worker processes (default: number of cores)."
    ),
    run_timeout: float | None = typer.Option(
        None,
        "--run-timeout",
        metavar="SECONDS",
        help="Stop a run that takes longer and record it as failed (default: no limit).",
    ),
    executor: str = typer.Option(
        "local", "--executor", help="Where runs execute: local (worker processes) or ray."
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        metavar="ADDRESS",
        help="Join this Ray cluster ('auto' or HOST:PORT); default: start a local Ray instance.",
    ),
    run_cpus: float | None = typer.Option(
        None, "--run-cpus", help="CPUs each run's Ray task asks for (default 1; --executor ray)."
    ),
    run_gpus: float | None = typer.Option(
        None, "--run-gpus", help="GPUs each run's Ray task asks for (default 0; --executor ray)."
    ),
    store: Path | None = _options.STORE,
    strategies: str | None = typer.Option(
        None, "--strategies", help="Strategy specs, e.g. 'fedavg,krum:f=2' (';' also separates)."
    ),
    attacks: str | None = typer.Option(
        None, "--attacks", help="Attack specs, e.g. 'sign_flip,alie'; adds no-attack baselines."
    ),
    seeds: str | None = typer.Option(None, "--seeds", help="Seed count N, or a list '0,3,7'."),
    target: float = typer.Option(
        0.9, "--target", help="Accuracy target for 'rounds to target' in the report."
    ),
    dataset: str | None = _options.DATASET,
    partition: str | None = _options.PARTITION,
    num_clients: int | None = _options.NUM_CLIENTS,
    clients_per_round: int | None = _options.CLIENTS_PER_ROUND,
    rounds: int | None = _options.ROUNDS,
    local_epochs: int | None = _options.LOCAL_EPOCHS,
    batch_size: int | None = _options.BATCH_SIZE,
    lr: float | None = _options.LR,
    model: str | None = _options.MODEL,
    byzantine: float | None = _options.BYZANTINE,
    eval_every: int | None = _options.EVAL_EVERY,
    client_sampling: str | None = _options.CLIENT_SAMPLING,
    device: str | None = _options.DEVICE,
    accountant: str | None = _options.ACCOUNTANT,
    delta: float | None = _options.DELTA,
    target_epsilon: float | None = _options.TARGET_EPSILON,
    system: str | None = _options.SYSTEM,
    partial_work: str | None = _options.PARTIAL_WORK,
    asynchronous: str | None = _options.ASYNCHRONOUS,
    compression: str | None = _options.COMPRESSION,
    client_momentum: str | None = _options.CLIENT_MOMENTUM,
    plugin: list[str] | None = _options.PLUGIN,
    json_output: bool = typer.Option(False, "--json", help="Print the outcome as JSON on stdout."),
) -> int:
    """Run many runs in parallel and write a sweep folder with a comparison report."""
    from velocity.experiment import load_experiment, specs_from_flags, split_spec_list
    from velocity.records import check_target_accuracy
    from velocity.store import open_store
    from velocity.sweepdir import sweep_specs
    from velocity.sweeps import default_out_dir, run_sweep, validate_sweep_request
    from velocity.sweeps.executors import open_executor

    overrides = collect_overrides(
        dataset=dataset,
        partition=partition,
        num_clients=num_clients,
        clients_per_round=clients_per_round,
        rounds=rounds,
        local_epochs=local_epochs,
        batch_size=batch_size,
        lr=lr,
        model=model,
        byzantine=byzantine,
        eval_every=eval_every,
        client_sampling=client_sampling,
        device=device,
        accountant=accountant,
        delta=delta,
        target_epsilon=target_epsilon,
        client_momentum=client_momentum,
        plugins=plugin_refs(plugin),
        system=system,
        partial_work=partial_work,
        asynchronous=asynchronous,
        compression=compression,
    )
    adhoc = strategies is not None or attacks is not None or seeds is not None
    if resume is not None:
        if experiment is not None or adhoc or overrides or out is not None:
            raise InputError(
                "--resume takes the runs from OUT_DIR; give no EXPERIMENT, --out or run flags"
            )
        specs = sweep_specs(resume)
        out_dir = resume
    else:
        if experiment is not None and adhoc:
            raise InputError("give either EXPERIMENT or --strategies/--attacks/--seeds, not both")
        if experiment is not None:
            specs = load_experiment(experiment, overrides)
        else:
            specs = specs_from_flags(
                strategies=split_spec_list(strategies, "--strategies") if strategies else None,
                attacks=split_spec_list(attacks, "--attacks") if attacks else None,
                seeds=parse_seeds(seeds) if seeds is not None else None,
                shared=overrides,
            )
        out_dir = out if out is not None else default_out_dir()
    validate_sweep_request(specs, out_dir, parallel, resume is not None)
    check_target_accuracy(target)
    view = _ProgressView(live=err_console.is_terminal and not json_output)
    with open_store(store) as run_store, stop_cleanly():
        pool = open_executor(
            executor, parallel=parallel, address=ray_address, run_cpus=run_cpus, run_gpus=run_gpus
        )
        try:
            result = run_sweep(
                specs,
                out_dir,
                parallel=parallel,
                command=command_line(ctx),
                resume=resume is not None,
                store=run_store,
                on_event=view,
                target_accuracy=target,
                run_timeout=run_timeout,
                executor=pool,
            )
        except BaseException:
            if pool is not None:
                pool.close(cancel=True)
            raise
        finally:
            view.close()
        if pool is not None:
            pool.close()
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if json_output:
        print_json(_result_json(result, target))
    else:
        _print_result(result)
    return result.exit_code
