"""Running a sweep: validate every run, write the manifest, hand runs to an executor, write each
run's artifacts as it finishes, then the reports; ``--resume`` finishes an interrupted sweep.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocity.artifacts import atomic_file, write_bytes_atomic
from velocity.datafiles import check_available, file_sha256, open_copy
from velocity.datafiles import copy_name as data_copy_name
from velocity.errors import InputError
from velocity.limits import check_run_count
from velocity.plugins import copy_name, source_of
from velocity.records import check_target_accuracy, utc_now, utc_stamp
from velocity.sizing import check_run_size
from velocity.spec import RunSpec
from velocity.sweepdir import (
    SWEEP_SCHEMA,
    DiskFolder,
    SweepData,
    config_payload,
    read_manifest,
    read_sweep,
    write_config,
    write_manifest,
    write_run_results,
)
from velocity.sweeps.environment import collect_environment
from velocity.sweeps.executors import Executor, LocalExecutor, RunTask
from velocity.sweeps.executors.local import check_main_guard

if TYPE_CHECKING:
    from velocity.store import RunStore

__all__ = [
    "RunOutcome",
    "SweepEvent",
    "SweepResult",
    "default_out_dir",
    "run_sweep",
    "validate_sweep_request",
]

SweepEvent = dict[str, Any]
EventCallback = Callable[[SweepEvent], None]


@dataclass
class RunOutcome:
    """How one run of a sweep ended (``resumed``: finished by an earlier invocation)."""

    name: str
    fingerprint: str
    status: str
    error: str | None
    final: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float | None = None
    resumed: bool = False


@dataclass
class SweepResult:
    out_dir: Path
    specs: list[RunSpec]
    results: dict[str, RunOutcome]
    complete: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every run completed or diverged, 1 when any failed (or did not finish)."""
        ok = ("complete", "diverged")
        if not self.complete or any(r.status not in ok for r in self.results.values()):
            return 1
        return 0


def default_out_dir(root: str | Path = "out", kind: str = "sweep") -> Path:
    """``out/<UTC timestamp>-<kind>`` (a suffix keeps two in one second apart)."""
    base = Path(root) / f"{utc_stamp()}-{kind}"
    candidate, counter = base, 2
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{counter}")
        counter += 1
    return candidate


def validate_sweep_request(
    specs: Sequence[RunSpec], out_dir: Path, parallel: int | None, resume: bool
) -> list[RunSpec]:
    """Check a sweep request before anything is written (InputError naming the problem)."""
    from velocity.simulation import plan_privacy

    if not specs:
        raise InputError("a sweep needs at least one run")
    if parallel is not None and (isinstance(parallel, bool) or parallel < 1):
        raise InputError(f"--parallel must be an integer >= 1, got {parallel!r}")
    check_run_count(len(specs), "runs", "the runs given")
    names: set[str] = set()
    seen: dict[str, str] = {}  # casefolded name -> name
    by_fingerprint: dict[str, str] = {}
    for spec in specs:
        if not isinstance(spec, RunSpec):
            raise InputError(f"sweep runs must be RunSpecs, got {type(spec).__name__}")
        if spec.name in names:
            raise InputError(f"duplicate run name '{spec.name}' in the sweep")
        names.add(spec.name)
        twin = seen.setdefault(spec.name.casefold(), spec.name)
        if twin != spec.name:
            raise InputError(
                f"run names '{twin}' and '{spec.name}' differ only in case; their folders "
                "would be one on case-insensitive file systems: give distinct names"
            )
        check_run_size(spec)  # resource-bounded before anything is written
        plan_privacy(spec)  # dp-accounting missing or a budget spent before round 1: exit 2
        # Two names for one configuration would count one result twice (e.g. as two seeds).
        twin = by_fingerprint.setdefault(spec.fingerprint, spec.name)
        if twin != spec.name:
            raise InputError(
                f"runs '{twin}' and '{spec.name}' are the same configuration (fingerprint "
                f"{spec.fingerprint[:12]}); a sweep runs each configuration once"
            )
    if resume:
        saved = read_sweep(out_dir, with_results=False)
        saved_ids = [(r.name, r.fingerprint) for r in saved.runs]
        given_ids = [(s.name, s.fingerprint) for s in specs]
        if saved_ids != given_ids:
            raise InputError(
                "the runs given do not match the sweep being resumed (names or configs differ)",
                source=str(out_dir),
            )
    elif out_dir.exists() and (not out_dir.is_dir() or any(_user_entries(out_dir))):
        raise InputError(
            "output folder exists and is not empty; choose another --out or use --resume",
            source=str(out_dir),
        )
    sweep_data_files(specs)  # copy names clash?
    for spec in specs:
        for record in spec.data_files:
            copy = out_dir / "data" / data_copy_name(record)
            if resume and copy.is_file() and file_sha256(copy) == record["sha256"]:
                continue  # the sweep's own copy (read_sweep checked it)
            check_available(record)
    return list(specs)


_MANIFEST_TEMP = re.compile(r"\.manifest\.json\..+\.tmp")


def _user_entries(out_dir: Path) -> Iterator[Path]:
    """Entries of a folder other than what a sweep killed before its manifest left (a manifest
    temp file, the plug-in copies written just before it)."""
    return (
        p
        for p in out_dir.iterdir()
        if not _MANIFEST_TEMP.fullmatch(p.name)
        and not (p.name in ("plugins", "data") and p.is_dir())
    )


def sweep_plugins(specs: Sequence[RunSpec]) -> list[dict[str, str]]:
    """Every plug-in record of the sweep's runs, sorted by name; two different sources under
    one file name would overwrite each other's copy, so they are an InputError."""
    records: dict[str, dict[str, str]] = {}
    for spec in specs:
        for record in spec.plugins:
            name = copy_name(record)
            known = records.setdefault(name, dict(record))
            if known["sha256"] != record["sha256"]:
                raise InputError(
                    f"two different plug-ins are named {record['name']!r} in this sweep (run "
                    f"{spec.name!r}); give them different file names"
                )
    return [records[name] for name in sorted(records)]


def _write_plugins(out_dir: Path, records: Sequence[Mapping[str, str]]) -> None:
    """Copy every plug-in's source into ``plugins/`` (the sweep travels with them)."""
    for record in records:
        write_bytes_atomic(out_dir / "plugins" / copy_name(record), source_of(record))


def sweep_data_files(specs: Sequence[RunSpec]) -> list[dict[str, str]]:
    """The manifest's ``data_files``: ``{name, sha256}`` of every user data file the runs
    read, sorted by name; two different files under one copy name are an InputError."""
    records: dict[str, dict[str, str]] = {}
    for spec in specs:
        for record in spec.data_files:
            name = data_copy_name(record)
            known = records.setdefault(name, {"name": name, "sha256": record["sha256"]})
            if known["sha256"] != record["sha256"]:
                raise InputError(
                    f"two different data files are named {name!r} in this sweep (run "
                    f"{spec.name!r} reads {record['path']!r}); the sweep folder keeps one copy "
                    "per file name: give the files different names"
                )
    return [records[name] for name in sorted(records)]


def _write_data_files(out_dir: Path, specs: Sequence[RunSpec]) -> dict[str, str]:
    """Copy every data file the runs read into ``data/`` (checked against its sha256 while
    copying; from a provided copy, else its path) unless the copy is there already; returns
    sha256 -> the copy's absolute path, the only place the runs' workers read it from."""
    copies: dict[str, str] = {}
    for spec in specs:
        for record in spec.data_files:
            sha = record["sha256"]
            if sha in copies:
                continue
            target = out_dir / "data" / data_copy_name(record)
            if not (target.is_file() and file_sha256(target) == sha):
                with open_copy(record) as reader:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_file(target) as handle:
                        shutil.copyfileobj(reader, handle, 1 << 20)
            copies[sha] = str(target.resolve())
    return copies


def _clean_temp_files(out_dir: Path, names: Sequence[str]) -> None:
    """Remove half-written temp files a killed sweep left behind (never a finished artifact)."""
    for folder in [out_dir, *(out_dir / n for n in names)]:
        if folder.is_dir():
            for leftover in folder.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)


def _outcome(summary: Mapping[str, Any], resumed: bool) -> RunOutcome:
    return RunOutcome(
        name=summary["name"],
        fingerprint=summary["fingerprint"],
        status=summary["status"],
        error=summary.get("error"),
        final=dict(summary.get("final") or {}),
        wall_seconds=summary.get("wall_seconds"),
        resumed=resumed,
    )


def _record_in_store(
    store: RunStore, spec: RunSpec, source: str, summary: Mapping[str, Any], rounds: list
) -> None:
    from velocity.store import finish_from_summary, run_start

    run_id = store.start_run(run_start(spec, source, summary["started_at"]))
    finish_from_summary(store, run_id, summary, rounds)


def _reconcile_store(store: RunStore, source: str, data: SweepData) -> None:
    """After a crash, a run may be finished on disk but not (finished) in the store."""
    stored = {r.name: r for r in store.list_runs(source=source)}
    for run in data.runs:
        if not run.complete or run.spec is None or run.summary is None or run.rounds is None:
            continue
        record = stored.get(run.name)
        if record is None or record.status == "running":
            _record_in_store(store, run.spec, source, run.summary, run.rounds)


def _new_manifest(specs: Sequence[RunSpec], command: list[str], workers: int) -> dict[str, Any]:
    return {
        "schema": SWEEP_SCHEMA,
        "command": command,
        "started_at": utc_now(),
        "finished_at": None,
        "complete": False,
        "runs": [s.name for s in specs],
        "configs": {s.name: config_payload(s) for s in specs},
        "plugins": sweep_plugins(specs),
        "data_files": sweep_data_files(specs),
        "parallel": workers,
        "resumes": [],
        **collect_environment(),
    }


def run_sweep(
    specs: list[RunSpec],
    out_dir: Path,
    *,
    parallel: int | None = None,
    command: list[str] | None = None,
    resume: bool = False,
    store: RunStore | None = None,
    on_event: EventCallback | None = None,
    target_accuracy: float = 0.9,
    executor: Executor | None = None,
) -> SweepResult:
    """Run every spec (whole runs, one per worker) and write the sweep directory ``out_dir``.

    Bad input raises InputError before anything is written. ``resume=True`` finishes the sweep
    in ``out_dir``: runs whose results are finished and consistent are kept, all others are run
    again. ``executor`` defaults to a local process pool of ``parallel`` workers.
    """
    from velocity.report import write_reports

    out_dir = Path(out_dir)
    specs = validate_sweep_request(specs, out_dir, parallel, resume)
    check_target_accuracy(target_accuracy, "target accuracy")
    if executor is None:
        check_main_guard()  # before anything is written: workers would re-run an unguarded script
    workers = executor.workers if executor is not None else parallel or os.cpu_count() or 1
    emit = on_event or (lambda event: None)
    command = list(command) if command is not None else list(sys.argv)
    source = str(out_dir.resolve())

    # The manifest (run list and every config) is written first and the configs after it, so a
    # sweep killed at any point leaves either an empty folder or one that --resume finishes.
    if resume:
        manifest = read_manifest(DiskFolder(out_dir))
        manifest["complete"] = False
        manifest["finished_at"] = None
        manifest.setdefault("resumes", []).append({"command": command, "started_at": utc_now()})
        _clean_temp_files(out_dir, [s.name for s in specs])
    else:
        manifest = _new_manifest(specs, command, workers)
        out_dir.mkdir(parents=True, exist_ok=True)
        _clean_temp_files(out_dir, [])
        _write_plugins(out_dir, manifest["plugins"])
    data_copies = _write_data_files(out_dir, specs)
    write_manifest(out_dir, manifest)
    for spec in specs:
        if not (out_dir / spec.name / "config.json").exists():
            write_config(out_dir, spec)

    results: dict[str, RunOutcome] = {}
    warnings: list[str] = []
    todo: list[RunSpec] = []
    existing = read_sweep(out_dir) if resume else None
    for spec in specs:
        run = existing.run(spec.name) if existing is not None else None
        if run is not None and run.complete and run.summary is not None:
            results[spec.name] = _outcome(run.summary, resumed=True)
        else:
            todo.append(spec)
    if store is not None and existing is not None:
        _reconcile_store(store, source, existing)

    total, failed = len(specs), sum(r.status == "failed" for r in results.values())
    pool_size = min(workers, len(todo))
    emit(
        {
            "event": "start",
            "total": total,
            "done": len(results),
            "todo": len(todo),
            "failed": failed,
            "running": 0,
            "workers": max(pool_size, 1),
        }
    )
    pool: Executor | None = executor
    if pool is None and todo:
        pool = LocalExecutor(pool_size)
    owned = executor is None
    try:
        if pool is not None and todo:
            failed += _run_tasks(
                pool, todo, out_dir, store, source, results, warnings, emit, total, data_copies
            )
        data = read_sweep(out_dir)
        all_finished = all(run.complete for run in data.runs)
        # With several warm workers the plots render in parallel too: the report is the sweep's
        # one serial step otherwise. The bytes do not depend on which process drew them.
        write_reports(data, target_accuracy=target_accuracy, map_fn=pool.map if pool else map)
    except BaseException:
        if pool is not None and owned:
            pool.close(cancel=True)
        raise
    if pool is not None and owned:
        pool.close()
    manifest["finished_at"] = utc_now()
    manifest["complete"] = all_finished
    write_manifest(out_dir, manifest)
    ordered = {s.name: results[s.name] for s in specs if s.name in results}
    for spec in specs:
        if spec.name not in ordered:
            ordered[spec.name] = RunOutcome(spec.name, spec.fingerprint, "failed", "did not finish")
    emit({"event": "end", "total": total, "done": len(results), "failed": failed, "running": 0})
    return SweepResult(out_dir, specs, ordered, all_finished, warnings)


def _run_tasks(
    executor: Executor,
    todo: Sequence[RunSpec],
    out_dir: Path,
    store: RunStore | None,
    source: str,
    results: dict[str, RunOutcome],
    warnings: list[str],
    emit: EventCallback,
    total: int,
    data_copies: Mapping[str, str],
) -> int:
    """Run ``todo`` on ``executor``, writing each run's artifacts as it finishes; returns how
    many runs failed."""
    failed = 0
    by_name = {spec.name: spec for spec in todo}
    for spec in todo:
        files = {copy_name(r): source_of(r) for r in spec.plugins}
        data = {r["sha256"]: data_copies[r["sha256"]] for r in spec.data_files}
        executor.submit(RunTask(spec.name, spec.canonical(), files, data))
    while executor.pending:
        done = executor.wait(timeout=0.5)
        for task in done:
            spec = by_name[task.name]
            if task.payload is None:
                # No records (the worker died): no summary is written, so --resume redoes it.
                outcome = RunOutcome(spec.name, spec.fingerprint, "failed", task.error)
            else:
                summary, rounds = task.payload["summary"], task.payload["rounds"]
                write_run_results(out_dir, spec.name, rounds, summary)
                outcome = _outcome(summary, resumed=False)
                if store is not None:
                    try:
                        _record_in_store(store, spec, source, summary, rounds)
                    except Exception as exc:  # the store records a run, never a reason to lose it
                        warnings.append(
                            f"{spec.name}: not recorded in the run store "
                            f"({type(exc).__name__}: {exc})"
                        )
            results[spec.name] = outcome
            failed += outcome.status == "failed"
            emit(
                {
                    "event": "run",
                    "name": spec.name,
                    "status": outcome.status,
                    "error": outcome.error,
                    "total": total,
                    "done": len(results),
                    "failed": failed,
                    "running": executor.running,
                }
            )
        if not done:
            emit(
                {
                    "event": "tick",
                    "total": total,
                    "done": len(results),
                    "failed": failed,
                    "running": executor.running,
                }
            )
    return failed
