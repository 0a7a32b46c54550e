"""The public Python API: what the CLI and the MCP server call, and what a notebook calls too.

    import velocity as vl
    result = vl.run(vl.RunSpec(dataset="digits", strategy="krum:f=2", attack="alie",
                               byzantine=0.2))
    sweep = vl.sweep("examples/robust_sweep.toml", parallel=2, out="out/x")
    vl.leaderboard(sweep, metric="accuracy")
    vl.archive(sweep)                      # -> out/x.crate.zip
    vl.reproduce("out/x.crate.zip", check=True)

Every function validates its input first and raises :class:`velocity.InputError` (one line,
naming the argument) before anything is run or written.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocity.errors import InputError

if TYPE_CHECKING:
    from velocity.archives import ArchiveInspection, ArchiveResult, ReproductionReport
    from velocity.leaderboards import Leaderboard
    from velocity.simulation import RunResult
    from velocity.spec import RunSpec
    from velocity.store import RunStore
    from velocity.sweeps import SweepResult

__all__ = ["archive", "inspect", "leaderboard", "load", "reproduce", "run", "sweep"]


def _spec_of(spec: Any) -> RunSpec:
    from velocity.spec import RunSpec, spec_from_mapping

    if isinstance(spec, RunSpec):
        return spec
    if isinstance(spec, Mapping):
        return spec_from_mapping(spec, "spec")
    raise InputError(
        f"spec must be a RunSpec or a mapping of its fields, got {type(spec).__name__}"
    )


def _open_store(store: Any) -> tuple[RunStore | None, bool]:
    """``(store, owned)``: None/True = the default store, False = none, a path or a RunStore."""
    from velocity.store import RunStore, open_store

    if store is False:
        return None, False
    if isinstance(store, RunStore):
        return store, False
    if store is None or store is True:
        return open_store(), True
    if isinstance(store, str | Path):
        return open_store(store), True
    raise InputError(f"store must be a path, a RunStore, True or False, got {store!r}")


def load(path: str | Path, **overrides: Any) -> list[RunSpec]:
    """The RunSpecs of a TOML experiment file (``[shared]``, ``[[runs]]``, ``[matrix]``),
    ``overrides`` applying on top of every run."""
    from velocity.experiment import load_experiment

    return load_experiment(path, overrides)


def run(
    spec: RunSpec | Mapping[str, Any],
    *,
    store: str | Path | RunStore | bool | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run one federated training run to the end in this process and return its result.

    The run is checked against its data first (InputError, nothing recorded). ``store``: the
    run store to record it in (default: the same store as the CLI; ``False``: none).
    """
    from velocity.simulation import run_simulation, validate_run
    from velocity.store import recorded_run

    run_spec = _spec_of(spec)
    setup = validate_run(run_spec)
    run_store, owned = _open_store(store)
    try:
        with recorded_run(run_store, run_spec) as record:
            result = run_simulation(run_spec, on_round=on_round, setup=setup)
            record(result)
    finally:
        if owned and run_store is not None:
            run_store.close()
    return result


def sweep(
    experiment: str | Path | Sequence[RunSpec],
    *,
    out: str | Path | None = None,
    parallel: int | None = None,
    resume: bool = False,
    store: str | Path | RunStore | bool | None = None,
    target: float = 0.9,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    overrides: Mapping[str, Any] | None = None,
    run_timeout: float | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    run_cpus: float | None = None,
    run_gpus: float | None = None,
) -> SweepResult:
    """Run every run of ``experiment`` (a TOML file or RunSpecs) in parallel into ``out``
    (default ``out/<UTC timestamp>-sweep``); ``resume=True`` finishes the sweep in ``out``.
    ``run_timeout``: seconds after which a run is stopped and recorded as failed.
    ``executor="ray"`` runs each run as a Ray task (``run_cpus``/``run_gpus`` each) on a local
    Ray instance, or on the cluster at ``ray_address`` (``"auto"`` or ``"host:port"``).

    In a script, call it under ``if __name__ == "__main__":``: worker processes start by
    importing the script, and a call at its top level is refused before anything runs.
    """
    from velocity.experiment import load_experiment
    from velocity.sweepdir import sweep_specs
    from velocity.sweeps import default_out_dir, run_sweep, validate_sweep_request
    from velocity.sweeps.executors import open_executor

    if resume:
        if out is None:
            raise InputError("resume=True needs out: the folder of the sweep to finish")
        specs = sweep_specs(out)
    elif isinstance(experiment, str | Path):
        specs = load_experiment(experiment, overrides)
    else:
        specs = [_spec_of(s) for s in experiment]
    out_dir = Path(out) if out is not None else default_out_dir()
    validate_sweep_request(specs, out_dir, parallel, resume)
    run_store, owned = _open_store(store)
    pool = None
    try:
        pool = open_executor(
            executor, parallel=parallel, address=ray_address, run_cpus=run_cpus, run_gpus=run_gpus
        )
        result = run_sweep(
            specs,
            out_dir,
            parallel=parallel,
            command=list(sys.argv),
            resume=resume,
            store=run_store,
            on_event=on_event,
            target_accuracy=target,
            run_timeout=run_timeout,
            executor=pool,
        )
    except BaseException:
        if pool is not None:
            pool.close(cancel=True)
        raise
    finally:
        if owned and run_store is not None:
            run_store.close()
    if pool is not None:
        pool.close()
    return result


def leaderboard(
    source: SweepResult | str | Path | None = None,
    *,
    metric: str = "accuracy",
    target: float = 0.9,
    dataset: str | None = None,
    attack: str | None = None,
    store: str | Path | RunStore | None = None,
    cost: str = "comm-cost",
    where: Mapping[str, str | Sequence[str]] | None = None,
) -> Leaderboard:
    """Rank configurations over seeds. ``source`` is a sweep (its result or folder: its own
    runs, read from the folder) or None (every run in the run store). ``cost``: what the
    ``pareto`` metric trades accuracy against, ``comm-cost`` or ``epsilon``. ``where`` keeps the
    runs whose fields match (``{"strategy": "fedavg", "rounds": ["15", "20"]}``: every field,
    any of its values)."""
    from velocity.leaderboards import (
        build_leaderboard,
        check_cost,
        check_metric,
        records_from_sweep,
    )
    from velocity.records import check_target_accuracy
    from velocity.sweepdir import read_sweep
    from velocity.sweeps import SweepResult

    check_metric(metric)
    check_cost(cost)
    check_target_accuracy(target, "target")
    if source is not None:
        folder = source.out_dir if isinstance(source, SweepResult) else Path(source)
        records = records_from_sweep(read_sweep(folder))
    else:
        run_store, owned = _open_store(store)
        assert run_store is not None
        try:
            records = run_store.list_runs(
                with_rounds=metric in ("rounds-to-target", "time-to-target")
            )
        finally:
            if owned:
                run_store.close()
    return build_leaderboard(
        records,
        metric,
        target=target,
        dataset=dataset,
        attack=attack,
        cost=cost,
        where=where,
    )


def archive(
    sweep_dir: SweepResult | str | Path,
    output: str | Path | None = None,
    *,
    author: str | None = None,
    affiliation: str | None = None,
    affiliation_url: str | None = None,
    license_id: str | None = "CC-BY-4.0",
    allow_incomplete: bool = False,
    include_data: bool = True,
    include_code: bool = False,
    force: bool = False,
) -> ArchiveResult:
    """Pack a finished sweep into one deterministic RO-Crate zip (default
    ``<sweep folder>.crate.zip``; an existing file is replaced only with ``force``).
    ``include_data=False`` leaves the runs' user data files out (reproduce then needs
    ``data_dir``); ``include_code`` adds the wheel of the running velocity."""
    from velocity.archives import archive_sweep
    from velocity.sweeps import SweepResult

    folder = sweep_dir.out_dir if isinstance(sweep_dir, SweepResult) else sweep_dir
    return archive_sweep(
        folder,
        output,
        author=author,
        affiliation=affiliation,
        affiliation_url=affiliation_url,
        license_id=license_id,
        allow_incomplete=allow_incomplete,
        include_data=include_data,
        include_code=include_code,
        force=force,
    )


def reproduce(
    archive_path: str | Path,
    *,
    check: bool = True,
    exact: bool = False,
    tolerance: float | None = None,
    out: str | Path | None = None,
    runs: Sequence[str] | None = None,
    parallel: int | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    on_verified: Callable[..., None] | None = None,
    command: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
) -> ReproductionReport:
    """Verify an archive, re-run its runs with the archived specs and compare them;
    ``report.exit_code`` is 1 on any mismatch when ``check`` is true. ``on_verified(sweep,
    drift, platform_notes)`` is called once the archive verified, before any run.
    ``data_dir``: a folder holding the data files an archive made with ``--no-data`` leaves
    out (each checked against its recorded sha256)."""
    from velocity.archives import reproduce_archive

    return reproduce_archive(
        archive_path,
        out,
        check=check,
        exact=exact,
        tolerance=tolerance,
        runs=runs,
        parallel=parallel,
        command=list(command) if command is not None else None,
        on_event=on_event,
        on_verified=on_verified,
        data_dir=data_dir,
    )


def inspect(archive_path: str | Path) -> ArchiveInspection:
    """Describe an archive and whether it verifies, without running anything."""
    from velocity.archives import inspect_archive

    return inspect_archive(archive_path)
