"""Running a sweep: validate every run, lock the folder, write the manifest, hand runs to an
executor, write each run's artifacts as it finishes, then the reports; ``--resume`` finishes an
interrupted sweep, setting damaged runs aside and running them again.

What survives what (docs/reliability.md): Ctrl-C, SIGTERM or SIGHUP stop the sweep at once (in-
flight runs abandoned, queued ones never started) and raise :class:`SweepInterrupted`; a full disk
raises OutputError naming the file; either way every file written is whole and ``--resume``
finishes the folder. A dead worker costs only its own run, which is tried once more.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import signal
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocity.artifacts import atomic_file, write_bytes_atomic
from velocity.datafiles import check_available, file_sha256, open_copy
from velocity.datafiles import copy_name as data_copy_name
from velocity.errors import InputError, Interrupted, OutputError
from velocity.limits import check_run_count
from velocity.plugins import copy_name, source_of
from velocity.records import check_target_accuracy, utc_now, utc_stamp
from velocity.sizing import check_run_size
from velocity.spec import RunSpec
from velocity.sweepdir import (
    LOCK_NAME,
    SWEEP_SCHEMA,
    SweepData,
    SweepLock,
    config_payload,
    lock_holder,
    read_sweep,
    set_aside,
    set_aside_misplaced,
    write_config,
    write_manifest,
    write_run_results,
)
from velocity.sweeps.environment import collect_environment
from velocity.sweeps.executors import Executor, LocalExecutor, RunTask, TaskResult
from velocity.sweeps.executors.local import check_main_guard

if TYPE_CHECKING:
    from velocity.store import RunStore

__all__ = [
    "RunOutcome",
    "SweepEvent",
    "SweepInterrupted",
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
    damaged: dict[str, str] = field(default_factory=dict)
    """Runs ``--resume`` found damaged and ran again: name -> the problem and where its files
    were set aside."""

    @property
    def exit_code(self) -> int:
        """0 when every run completed or diverged, 1 when any failed (or did not finish)."""
        ok = ("complete", "diverged")
        if not self.complete or any(r.status not in ok for r in self.results.values()):
            return 1
        return 0


class SweepInterrupted(Interrupted, KeyboardInterrupt):
    """A sweep stopped by a signal (Ctrl-C, SIGTERM, SIGHUP): ``done`` of ``total`` runs have
    results on disk, and ``velocity sweep --resume out_dir`` finishes the rest. A
    KeyboardInterrupt too, so that code written for Ctrl-C around a sweep keeps working."""

    def __init__(self, signum: int, out_dir: Path, done: int, total: int, hint: str = "") -> None:
        self.out_dir, self.done, self.total = out_dir, done, total
        hint = hint or f"resume with velocity sweep --resume {shlex.quote(str(out_dir))}"
        super().__init__(signum, f"interrupted: {done} of {total} runs complete; {hint}")

    def with_hint(self, hint: str) -> SweepInterrupted:
        """The same interruption, telling the user another way on (``velocity reproduce``)."""
        return SweepInterrupted(self.signum, self.out_dir, self.done, self.total, hint)


def default_out_dir(root: str | Path = "out", kind: str = "sweep") -> Path:
    """``out/<UTC timestamp>-<kind>`` (a suffix keeps two in one second apart)."""
    base = Path(root) / f"{utc_stamp()}-{kind}"
    candidate, counter = base, 2
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{counter}")
        counter += 1
    return candidate


def validate_sweep_request(
    specs: Sequence[RunSpec],
    out_dir: Path,
    parallel: int | None,
    resume: bool,
    *,
    locked: bool = False,
) -> list[RunSpec]:
    """Check a sweep request before anything is written (InputError naming the problem).
    ``locked``: the caller holds the folder's lock (so no other sweep can be in it)."""
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
    if not locked and out_dir.is_dir():
        holder = lock_holder(out_dir)
        if holder is not None:
            raise InputError(
                f"another sweep (pid {holder}) is writing this folder; wait for it to finish or "
                "stop it first",
                source=str(out_dir),
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
    temp file, the plug-in and data copies written just before it) and the sweep lock."""
    return (
        p
        for p in out_dir.iterdir()
        if not _MANIFEST_TEMP.fullmatch(p.name)
        and p.name != LOCK_NAME
        and not (p.name in ("plugins", "data") and p.is_dir() and not p.is_symlink())
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
    """Remove half-written temp files a killed sweep left behind (never a finished artifact),
    in the sweep folder, its run folders and ``plots/``; a link is never followed."""
    for folder in [out_dir, out_dir / "plots", *(out_dir / n for n in names)]:
        if folder.is_dir() and not folder.is_symlink():
            for leftover in folder.glob(".*.tmp"):
                if leftover.is_symlink() or leftover.is_file():
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
    store: RunStore,
    spec: RunSpec,
    source: str,
    sweep_id: str | None,
    summary: Mapping[str, Any],
    rounds: list,
) -> None:
    from velocity.store import finish_from_summary, run_start

    start = run_start(spec, source, summary["started_at"], sweep_id=sweep_id)
    run_id = store.start_run(start)
    finish_from_summary(store, run_id, summary, rounds)


def _reconcile_store(
    store: RunStore, source: str, sweep_id: str | None, data: SweepData, keep: set[str]
) -> None:
    """After a crash, a kept run may be finished on disk but not (finished) in the store."""
    stored = {r.name: r for r in store.list_runs(source=source) if r.sweep_id == sweep_id}
    for run in data.runs:
        if run.name not in keep or run.spec is None or run.summary is None or run.rounds is None:
            continue
        record = stored.get(run.name)
        if record is None or record.status == "running":
            _record_in_store(store, run.spec, source, sweep_id, run.summary, run.rounds)


def _new_manifest(
    specs: Sequence[RunSpec], command: list[str], workers: int, run_timeout: float | None
) -> dict[str, Any]:
    return {
        "schema": SWEEP_SCHEMA,
        # Tells this sweep apart from an earlier one in the same folder (rm -rf, then reused).
        "sweep_id": uuid.uuid4().hex,
        "command": command,
        "started_at": utc_now(),
        "finished_at": None,
        "complete": False,
        "runs": [s.name for s in specs],
        "configs": {s.name: config_payload(s) for s in specs},
        "plugins": sweep_plugins(specs),
        "data_files": sweep_data_files(specs),
        "parallel": workers,
        "run_timeout": run_timeout,
        "resumes": [],
        **collect_environment(),
    }


def _check_run_timeout(run_timeout: float | None) -> None:
    if run_timeout is None:
        return
    if isinstance(run_timeout, bool) or not isinstance(run_timeout, int | float):
        raise InputError(f"--run-timeout must be a number of seconds > 0, got {run_timeout!r}")
    if not run_timeout > 0 or run_timeout == float("inf"):
        raise InputError(f"--run-timeout must be a number of seconds > 0, got {run_timeout!r}")


def _report_paths() -> tuple[list[str], list[str]]:
    """The files and folders ``write_reports`` writes (to set aside whatever stands there)."""
    from velocity.report import PLOT_NAMES

    plots = [f"plots/{name}.{ext}" for name in PLOT_NAMES for ext in ("png", "svg")]
    return ["comparison.json", "comparison.md", "report.html", *plots], ["plots"]


def _describe_os_error(exc: OSError) -> tuple[str, str | None]:
    """``<path>: No space left on device``, and the path (None when the error names none)."""
    path = None if exc.filename is None else str(exc.filename)
    reason = exc.strerror or str(exc)
    return (f"{path}: {reason}" if path else f"{type(exc).__name__}: {reason}"), path


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
    run_timeout: float | None = None,
) -> SweepResult:
    """Run every spec (whole runs, one per worker) and write the sweep directory ``out_dir``.

    Bad input raises InputError before anything is written, including a run that cannot run on
    its data (checked for every run first) and a folder another sweep holds. ``resume=True``
    finishes the sweep in ``out_dir``: runs whose results are finished and consistent are kept;
    damaged runs are set aside (``<run>.damaged-<n>/``) and, with all others, run again.
    ``executor`` defaults to local worker processes, ``parallel`` of them; ``run_timeout``
    stops (and records as failed) a run that takes longer, in seconds.

    Raises :class:`SweepInterrupted` on Ctrl-C, SIGTERM (with a handler that raises
    :class:`velocity.errors.Interrupted`, as the CLI installs) and SIGHUP, and OutputError when
    a file cannot be written (disk full); the folder is resumable after either.
    """
    out_dir = Path(out_dir)
    specs = validate_sweep_request(specs, out_dir, parallel, resume)
    check_target_accuracy(target_accuracy, "target accuracy")
    _check_run_timeout(run_timeout)
    if executor is None:
        check_main_guard()  # before anything is written: workers would re-run an unguarded script
    if not resume:
        _validate_against_data(specs)
    workers = executor.workers if executor is not None else parallel or os.cpu_count() or 1
    sweep = _Sweep(
        specs=list(specs),
        out_dir=out_dir,
        resume=resume,
        store=store,
        emit=on_event or (lambda event: None),
        command=list(command) if command is not None else list(sys.argv),
        target_accuracy=target_accuracy,
        executor=executor,
        workers=workers,
        run_timeout=run_timeout,
    )
    with SweepLock(out_dir):
        # Again, now that no other sweep can write here: one may have finished meanwhile.
        validate_sweep_request(specs, out_dir, parallel, resume, locked=True)
        return sweep.run()


def _validate_against_data(specs: Sequence[RunSpec], folder: Path | None = None) -> None:
    """Every run checked against its data before anything is written; on resume (``folder``)
    a data file is read from the sweep's own copy, as the run's worker will read it."""
    from velocity.datafiles import provide, scoped
    from velocity.simulation import validate_runs

    with scoped():  # the copies are provided for this check only
        if folder is not None:
            for spec in specs:
                for record in spec.data_files:
                    copy = folder / "data" / data_copy_name(record)
                    if copy.is_file():
                        provide(record["sha256"], copy)  # its content is checked when read
        validate_runs(specs)


@dataclass
class _Sweep:
    """One invocation of a sweep, from the lock to the final manifest."""

    specs: list[RunSpec]
    out_dir: Path
    resume: bool
    store: RunStore | None
    emit: EventCallback
    command: list[str]
    target_accuracy: float
    executor: Executor | None
    workers: int
    run_timeout: float | None
    results: dict[str, RunOutcome] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)
    failed: int = 0
    wrote_results: bool = False
    manifest: dict[str, Any] = field(default_factory=dict)
    pool: Executor | None = None
    data_copies: dict[str, str] = field(default_factory=dict)  # sha256 -> the copy's path
    started: bool = False  # a new sweep's manifest is written: from now on it is resumable

    @property
    def source(self) -> str:
        return str(self.out_dir.resolve())

    @property
    def sweep_id(self) -> str | None:
        value = self.manifest.get("sweep_id")
        return value if isinstance(value, str) else None

    def run(self) -> SweepResult:
        owned = self.executor is None
        try:
            todo, existing = self._plan()
            self._prepare(todo, existing)
            self._emit_progress(
                "start", todo=len(todo), workers=max(min(self.workers, len(todo)), 1)
            )
            self.pool = self.executor
            if self.pool is None and todo:
                self.pool = LocalExecutor(min(self.workers, len(todo)))
            if self.pool is not None and todo:
                self._run_tasks(self.pool, todo)
            complete = self._finish()
        except (KeyboardInterrupt, Interrupted) as exc:
            self._stop_pool(owned, cancel=True)
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            done, hint = len(self.results), ""
            if self._undo_unstarted():
                hint = "nothing was written; start the sweep again"
            raise SweepInterrupted(signum, self.out_dir, done, len(self.specs), hint) from None
        except OSError as exc:
            self._stop_pool(owned, cancel=True)
            self._undo_unstarted()
            message, path = _describe_os_error(exc)
            if self.wrote_results or self.resume:
                hint = f"velocity sweep --resume {shlex.quote(str(self.out_dir))}"
                message += f"; make room, then finish the sweep with {hint}"
            raise OutputError(
                message, path=path, exit_code=1 if self.wrote_results else 2
            ) from None
        except BaseException:
            self._stop_pool(owned, cancel=True)
            raise
        ordered = {s.name: self.results[s.name] for s in self.specs if s.name in self.results}
        for spec in self.specs:
            if spec.name not in ordered:
                ordered[spec.name] = RunOutcome(
                    spec.name, spec.fingerprint, "failed", "did not finish"
                )
        self._emit_progress("end")
        return SweepResult(self.out_dir, self.specs, ordered, complete, self.warnings, self.damaged)

    # ------------------------------------------------------------------ before the first write

    def _plan(self) -> tuple[list[RunSpec], SweepData | None]:
        """What to run: every spec, or on resume those without trustworthy results (read-only:
        nothing is written before the runs to do have been checked against their data)."""
        if not self.resume:
            return list(self.specs), None
        existing = read_sweep(self.out_dir)
        self.manifest = copy.deepcopy(existing.manifest)
        todo = []
        for spec in self.specs:
            run = existing.run(spec.name)
            if run.complete and run.summary is not None:
                self.results[spec.name] = _outcome(run.summary, resumed=True)
                self.failed += run.summary.get("status") == "failed"
            else:
                todo.append(spec)
        _validate_against_data(todo, self.out_dir)
        return todo, existing

    def _prepare(self, todo: Sequence[RunSpec], existing: SweepData | None) -> None:
        """The manifest, the damaged runs set aside, the configs: everything before the runs.

        On resume the manifest is first rewritten as incomplete only when something is to be
        done (a damaged or unfinished run), before the folder changes, so that a resume stopped
        at any point leaves a folder marked incomplete that the next --resume finishes.
        """
        names = [s.name for s in self.specs]
        if existing is None:
            self.manifest = _new_manifest(self.specs, self.command, self.workers, self.run_timeout)
            _clean_temp_files(self.out_dir, [])
            _write_plugins(self.out_dir, self.manifest["plugins"])
            self.data_copies = _write_data_files(self.out_dir, self.specs)
            write_manifest(self.out_dir, self.manifest)
            self.started = True
        else:
            self.manifest["complete"] = False
            self.manifest["finished_at"] = None
            self.manifest.setdefault("resumes", []).append(
                {"command": self.command, "started_at": utc_now(), "run_timeout": self.run_timeout}
            )
            if todo:
                write_manifest(self.out_dir, self.manifest)
                self.data_copies = _write_data_files(self.out_dir, todo)
            for run in existing.runs:
                if run.problem is not None and os.path.lexists(self.out_dir / run.name):
                    aside = set_aside(self.out_dir, run.name, taken=names)
                    self.damaged[run.name] = f"{run.problem}; its files are kept in {aside.name}/"
                    self.emit(
                        {
                            "event": "damaged",
                            "name": run.name,
                            "problem": run.problem,
                            "moved_to": str(aside),
                        }
                    )
            _clean_temp_files(self.out_dir, names)
        for spec in self.specs:
            if not (self.out_dir / spec.name / "config.json").exists():
                write_config(self.out_dir, spec)
        if self.store is not None and existing is not None:
            keep = set(self.results)
            _reconcile_store(self.store, self.source, self.sweep_id, existing, keep)

    # ------------------------------------------------------------------ the runs

    def _run_tasks(self, executor: Executor, todo: Sequence[RunSpec]) -> None:
        """Run ``todo`` on ``executor``, writing each run's artifacts as it finishes."""
        by_name = {spec.name: spec for spec in todo}
        for spec in todo:
            files = {copy_name(r): source_of(r) for r in spec.plugins}
            data = {r["sha256"]: self.data_copies[r["sha256"]] for r in spec.data_files}
            executor.submit(
                RunTask(spec.name, spec.canonical(), files, data, timeout=self.run_timeout)
            )
        while executor.pending:
            done = executor.wait(timeout=0.5)
            for task in done:
                self._record(by_name[task.name], task)
            if not done:
                self._emit_progress("tick")

    def _record(self, spec: RunSpec, task: TaskResult) -> None:
        if task.payload is not None:
            summary, rounds = task.payload["summary"], task.payload["rounds"]
        else:
            # No records came back (its worker died twice, it timed out, or the worker could
            # not start the run): a failed result, recorded like any other failure.
            from velocity.simulation import RunResult

            failed = RunResult.failed(spec, task.error or "no result", utc_now(), 0.0)
            failed.details = {"attempts": task.attempts, "worker_losses": list(task.losses)}
            summary, rounds = failed.summary(), failed.rounds
        if task.losses and task.payload is not None:
            self.warnings.append(
                f"{spec.name}: its worker process died ({'; '.join(task.losses)}); it ran "
                "again in a fresh worker"
            )
        write_run_results(self.out_dir, spec.name, rounds, summary)
        self.wrote_results = True
        outcome = _outcome(summary, resumed=False)
        if self.store is not None:
            try:
                _record_in_store(self.store, spec, self.source, self.sweep_id, summary, rounds)
            except Exception as exc:  # the store records a run, never a reason to lose it
                self.warnings.append(
                    f"{spec.name}: not recorded in the run store ({type(exc).__name__}: {exc})"
                )
        self.results[spec.name] = outcome
        self.failed += outcome.status == "failed"
        self._emit_progress("run", name=spec.name, status=outcome.status, error=outcome.error)

    def _emit_progress(self, kind: str, **extra: Any) -> None:
        running = self.pool.running if self.pool is not None and kind in ("run", "tick") else 0
        self.emit(
            {
                "event": kind,
                "total": len(self.specs),
                "done": len(self.results),
                "failed": self.failed,
                "running": running,
                **extra,
            }
        )

    # ------------------------------------------------------------------ after the runs

    def _finish(self) -> bool:
        """The reports, then the manifest (complete once every run has trustworthy results)."""
        from velocity.report import write_reports

        data = read_sweep(self.out_dir)
        complete = all(run.complete for run in data.runs)
        files, folders = _report_paths()
        for name, aside in set_aside_misplaced(
            self.out_dir, files, folders, taken=self.manifest["runs"]
        ):
            self.warnings.append(
                f"{name} was not a plain file or folder; it is kept in {aside.name}"
            )
        pool = self.pool
        # With several warm workers the plots render in parallel too: the report is the sweep's
        # one serial step otherwise. The bytes do not depend on which process drew them.
        write_reports(data, target_accuracy=self.target_accuracy, map_fn=pool.map if pool else map)
        self._stop_pool(self.executor is None, cancel=False)
        self.manifest["finished_at"] = utc_now()
        self.manifest["complete"] = complete
        write_manifest(self.out_dir, self.manifest)
        return complete

    def _undo_unstarted(self) -> bool:
        """A new sweep stopped before its manifest was written: remove the plug-in and data copies
        written just before it (the lock removes the folder if it made it). True if so."""
        if self.resume or self.started:
            return False
        for copies in ("plugins", "data"):
            folder = self.out_dir / copies
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)
        return True

    def _stop_pool(self, owned: bool, *, cancel: bool) -> None:
        if self.pool is not None and owned:
            self.pool.close(cancel=cancel)
