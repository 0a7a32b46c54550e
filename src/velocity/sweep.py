"""Sweeps: run many RunSpecs in a process pool and write the whole sweep directory.

``run_sweep`` validates everything first, then runs each spec whole in one worker (BLAS pinned to
one thread), writes every run's artifacts atomically and resumes an interrupted sweep exactly.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import multiprocessing
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from velocity.artifacts import (
    CONFIG_SCHEMA,
    SUMMARY_SCHEMA,
    SWEEP_SCHEMA,
    read_json,
    read_rounds_csv,
    rounds_csv_text,
    write_json_atomic,
    write_text_atomic,
)
from velocity.errors import InputError
from velocity.spec import RUN_NAME_PATTERN, RunSpec

if TYPE_CHECKING:
    from velocity.simulation import RunResult
    from velocity.store import RunStore

__all__ = [
    "BLAS_THREAD_ENV",
    "RunOutcome",
    "SweepData",
    "SweepEvent",
    "SweepResult",
    "SweepRun",
    "collect_environment",
    "default_out_dir",
    "load_sweep",
    "load_sweep_specs",
    "rounds_columns",
    "run_sweep",
    "summarize_result",
    "utc_now",
    "validate_sweep_request",
]

BLAS_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "BLIS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
"""Set in every worker before numpy loads, so BLAS never starts extra threads."""

SweepEvent = dict[str, Any]
EventCallback = Callable[[SweepEvent], None]


def utc_now() -> str:
    """Now, UTC, ISO 8601 with milliseconds and a ``Z`` (the format of every timestamp)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------- run artifacts


def rounds_columns(rounds: Sequence[Mapping[str, Any]]) -> list[str]:
    """rounds.csv columns: ``simulation.METRICS`` first, then any extra metric keys sorted."""
    from velocity.simulation import METRICS

    extra = sorted({key for record in rounds for key in record} - set(METRICS))
    return [*METRICS, *extra]


def _finite_values(rounds: Sequence[Mapping[str, Any]], key: str) -> list[tuple[float, int]]:
    out = []
    for record in rounds:
        value = record.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            out.append((float(value), int(record.get("round", 0))))
    return out


def summarize_rounds(rounds: Sequence[Mapping[str, Any]]) -> tuple[dict, dict]:
    """``(best, totals)`` of per-round records: best accuracy/losses and summed costs."""
    best: dict[str, Any] = {}
    accuracy = _finite_values(rounds, "test_accuracy")
    if accuracy:
        value, round_index = max(accuracy, key=lambda item: (item[0], -item[1]))
        best.update(test_accuracy=value, test_accuracy_round=round_index)
    for key in ("test_loss", "train_loss"):
        values = _finite_values(rounds, key)
        if values:
            best[key] = min(v for v, _ in values)
    bytes_up = sum(int(r.get("bytes_up") or 0) for r in rounds)
    bytes_down = sum(int(r.get("bytes_down") or 0) for r in rounds)
    totals = {
        "bytes_up": bytes_up,
        "bytes_down": bytes_down,
        "bytes": bytes_up + bytes_down,
        "aggregate_seconds": math.fsum(float(r.get("aggregate_seconds") or 0.0) for r in rounds),
    }
    return best, totals


def summarize_result(result: RunResult) -> dict[str, Any]:
    """The content of a run's summary.json."""
    best, totals = summarize_rounds(result.rounds)
    summary: dict[str, Any] = {
        "schema": SUMMARY_SCHEMA,
        "name": result.spec.name,
        "fingerprint": result.spec.fingerprint,
        "status": result.status,
        "error": result.error,
        "final": result.final_metrics(),
        "best": best,
        "totals": totals,
        "rounds_completed": len(result.rounds),
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "wall_seconds": result.wall_seconds,
        "details": dict(result.details),
    }
    return summary


def _config_payload(spec: RunSpec) -> dict[str, Any]:
    return {
        "schema": CONFIG_SCHEMA,
        "name": spec.name,
        "fingerprint": spec.fingerprint,
        "spec": spec.canonical(),
    }


def _failed_result(spec: RunSpec, error: str, started_at: str, t_start: float) -> RunResult:
    from velocity.simulation import RunResult

    return RunResult(
        spec=spec,
        status="failed",
        error=error,
        rounds=[],
        final_params=None,
        started_at=started_at,
        finished_at=utc_now(),
        wall_seconds=time.perf_counter() - t_start,
    )


def _init_worker() -> None:
    os.environ.update(BLAS_THREAD_ENV)
    # Ctrl-C goes to the whole process group; the parent decides what stops, workers ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _execute_run(
    spec: RunSpec, run_dir: str, store_location: str | None, source: str
) -> dict[str, Any]:
    """Worker entry: run one spec, write rounds.csv then summary.json (last), record in store."""
    from velocity.simulation import run_simulation

    started_at, t_start = utc_now(), time.perf_counter()
    store_error: str | None = None
    run_id: str | None = None
    store = None
    if store_location is not None:
        try:
            from velocity.store import open_store, run_start

            store = open_store(store_location)
            run_id = store.start_run(run_start(spec, source, started_at))
        except Exception as exc:  # the store is a record of the run, never a reason to lose it
            store_error = f"{type(exc).__name__}: {exc}"
    try:
        result = run_simulation(spec)
    except Exception as exc:  # bad data for this spec (InputError) or a crash before round 1
        result = _failed_result(spec, f"{type(exc).__name__}: {exc}", started_at, t_start)
    summary = summarize_result(result)
    folder = Path(run_dir)
    write_text_atomic(
        folder / "rounds.csv", rounds_csv_text(result.rounds, rounds_columns(result.rounds))
    )
    write_json_atomic(folder / "summary.json", summary)
    if store is not None and run_id is not None:
        try:
            from velocity.store import finish_from_summary

            finish_from_summary(store, run_id, summary, result.rounds)
        except Exception as exc:
            store_error = f"{type(exc).__name__}: {exc}"
    if store is not None:
        store.close()
    return {"summary": summary, "store_error": store_error}


# ----------------------------------------------------------------------------- environment


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if out.stdout.strip():
                return out.stdout.strip()
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _git_info(cwd: Path) -> dict[str, Any] | None:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}


def collect_environment(cwd: Path | None = None) -> dict[str, Any]:
    """Host, Python, numpy/BLAS, installed packages and git state, for the manifest."""
    import numpy as np
    from threadpoolctl import threadpool_info

    from velocity import __version__

    try:
        numpy_config = np.show_config(mode="dicts")
    except TypeError:  # numpy < 1.25 prints instead of returning
        numpy_config = None
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[str(name)] = str(dist.version)
    return {
        "velocity_version": __version__,
        "host": {
            "os": platform.platform(),
            "system": platform.system(),
            "machine": platform.machine(),
            "cpu_model": _cpu_model(),
            "cores": os.cpu_count(),
            "memory_bytes": _memory_bytes(),
        },
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "numpy": {
            "version": np.__version__,
            "blas": _jsonable(threadpool_info()),
            "config": _jsonable(numpy_config),
        },
        "packages": dict(sorted(packages.items())),
        "git": _git_info(cwd or Path.cwd()),
    }


# ----------------------------------------------------------------------------- reading a sweep


@dataclass
class SweepRun:
    """One run of a sweep directory as read back from disk (summary/rounds None if unfinished)."""

    name: str
    spec: RunSpec
    config: dict[str, Any]
    summary: dict[str, Any] | None
    rounds: list[dict[str, Any]] | None

    @property
    def complete(self) -> bool:
        return self.summary is not None


@dataclass
class SweepData:
    out_dir: Path
    manifest: dict[str, Any]
    runs: list[SweepRun]


def _safe_run_name(name: Any, where: Path) -> str:
    if not isinstance(name, str) or not RUN_NAME_PATTERN.match(name) or name in (".", ".."):
        raise InputError(f"run name {name!r} is not a safe folder name", source=str(where))
    return name


def load_sweep(out_dir: str | Path, *, with_results: bool = True) -> SweepData:
    """Read a sweep directory: manifest, every run's config and (when present) results."""
    folder = Path(out_dir)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise InputError("not a sweep directory (no manifest.json)", source=str(folder))
    try:
        manifest = read_json(manifest_path)
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable manifest.json ({exc})", source=str(folder)) from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SWEEP_SCHEMA:
        raise InputError(f"manifest.json is not a {SWEEP_SCHEMA} manifest", source=str(folder))
    names = manifest.get("runs")
    if not isinstance(names, list):
        raise InputError("manifest.json has no list of runs", source=str(folder))
    saved_configs = manifest.get("configs")
    runs = []
    for raw_name in names:
        name = _safe_run_name(raw_name, manifest_path)
        config_path = folder / name / "config.json"
        try:
            if not config_path.exists() and isinstance(saved_configs, dict):
                # Killed after the manifest but before this config: the manifest has it.
                config = saved_configs[name]
                config_path = manifest_path
            else:
                config = read_json(config_path)
            spec = RunSpec.model_validate(config["spec"])
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            raise InputError(f"unreadable run config ({exc})", source=str(config_path)) from None
        if spec.name != name or config.get("fingerprint") != spec.fingerprint:
            raise InputError(
                "config does not match its run (name or fingerprint)", source=str(config_path)
            )
        summary = rounds = None
        summary_path = folder / name / "summary.json"
        if with_results and summary_path.is_file():
            summary = read_json(summary_path)
            rounds_path = folder / name / "rounds.csv"
            rounds = read_rounds_csv(rounds_path) if rounds_path.is_file() else []
        elif summary_path.is_file():
            summary = {}
        runs.append(SweepRun(name=name, spec=spec, config=config, summary=summary, rounds=rounds))
    return SweepData(out_dir=folder, manifest=manifest, runs=runs)


def load_sweep_specs(out_dir: str | Path) -> list[RunSpec]:
    """The RunSpecs a sweep directory was started with (for ``--resume``), in order."""
    return [run.spec for run in load_sweep(out_dir, with_results=False).runs]


# ----------------------------------------------------------------------------- running a sweep


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
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Path(root) / f"{stamp}-{kind}"
    candidate, counter = base, 2
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{counter}")
        counter += 1
    return candidate


def validate_sweep_request(
    specs: Sequence[RunSpec], out_dir: Path, parallel: int | None, resume: bool
) -> list[RunSpec]:
    """Check a sweep request before anything is written (InputError naming the problem)."""
    if not specs:
        raise InputError("a sweep needs at least one run")
    if parallel is not None and (isinstance(parallel, bool) or parallel < 1):
        raise InputError(f"--parallel must be an integer >= 1, got {parallel!r}")
    seen: set[str] = set()
    by_fingerprint: dict[str, str] = {}
    for spec in specs:
        if not isinstance(spec, RunSpec):
            raise InputError(f"sweep runs must be RunSpecs, got {type(spec).__name__}")
        if spec.name in seen:
            raise InputError(f"duplicate run name '{spec.name}' in the sweep")
        seen.add(spec.name)
        # Two names for one configuration would count one result twice (e.g. as two seeds).
        twin = by_fingerprint.setdefault(spec.fingerprint, spec.name)
        if twin != spec.name:
            raise InputError(
                f"runs '{twin}' and '{spec.name}' are the same configuration (fingerprint "
                f"{spec.fingerprint[:12]}); a sweep runs each configuration once"
            )
    if resume:
        saved = load_sweep(out_dir, with_results=False)
        saved_ids = [(r.name, r.spec.fingerprint) for r in saved.runs]
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
    return list(specs)


_MANIFEST_TEMP = re.compile(r"\.manifest\.json\..+\.tmp")


def _user_entries(out_dir: Path) -> Iterator[Path]:
    """Entries of a folder other than a manifest temp file a sweep killed at its start left."""
    return (p for p in out_dir.iterdir() if not _MANIFEST_TEMP.fullmatch(p.name))


@contextlib.contextmanager
def _blas_env_for_children() -> Iterator[None]:
    """Children inherit the environment at spawn: pin their BLAS before they import numpy."""
    saved = {key: os.environ.get(key) for key in BLAS_THREAD_ENV}
    os.environ.update(BLAS_THREAD_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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


def _reconcile_store(store: RunStore, source: str, data: SweepData) -> None:
    """After a crash, a run may be finished on disk but still ``running`` in the store."""
    from velocity.store import finish_from_summary, run_start

    stored = {r.name: r for r in store.list_runs(source=source)}
    for run in data.runs:
        record = stored.get(run.name)
        if run.summary is None or run.rounds is None:
            continue
        if record is None or record.status == "running":
            run_id = store.start_run(run_start(run.spec, source, run.summary["started_at"]))
            finish_from_summary(store, run_id, run.summary, run.rounds)


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
) -> SweepResult:
    """Run every spec (whole runs, one per worker) and write the sweep directory ``out_dir``.

    Bad input raises InputError before anything is written. ``resume=True`` finishes the sweep
    in ``out_dir``: runs whose summary.json exists are kept, all others are run again.
    """
    from velocity.report import write_reports

    out_dir = Path(out_dir)
    specs = validate_sweep_request(specs, out_dir, parallel, resume)
    if not 0 < target_accuracy <= 1:
        raise InputError(f"target accuracy must be in (0, 1], got {target_accuracy!r}")
    workers = parallel or os.cpu_count() or 1
    emit = on_event or (lambda event: None)
    command = list(command) if command is not None else list(sys.argv)
    source = str(out_dir.resolve())
    now = utc_now()

    # The manifest (run list and every config) is written first and the configs after it, so a
    # sweep killed at any point leaves either an empty folder or one that --resume finishes.
    if resume:
        manifest = read_json(out_dir / "manifest.json")
        manifest["complete"] = False
        manifest["finished_at"] = None
        manifest.setdefault("resumes", []).append({"command": command, "started_at": now})
        _clean_temp_files(out_dir, [s.name for s in specs])
    else:
        manifest = {
            "schema": SWEEP_SCHEMA,
            "command": command,
            "started_at": now,
            "finished_at": None,
            "complete": False,
            "runs": [s.name for s in specs],
            "configs": {s.name: _config_payload(s) for s in specs},
            "parallel": workers,
            "resumes": [],
            **collect_environment(),
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        _clean_temp_files(out_dir, [])
    write_json_atomic(out_dir / "manifest.json", manifest)
    for spec in specs:
        config_path = out_dir / spec.name / "config.json"
        if not config_path.exists():
            write_json_atomic(config_path, _config_payload(spec))

    results: dict[str, RunOutcome] = {}
    warnings: list[str] = []
    todo: list[RunSpec] = []
    existing = load_sweep(out_dir) if resume else None
    for spec, run in zip(specs, existing.runs if existing else [None] * len(specs), strict=True):
        if run is not None and run.summary is not None:
            results[spec.name] = _outcome(run.summary, resumed=True)
        else:
            todo.append(spec)
    if store is not None and existing is not None:
        _reconcile_store(store, source, existing)

    total, failed = len(specs), sum(r.status == "failed" for r in results.values())
    emit(
        {
            "event": "start",
            "total": total,
            "done": len(results),
            "todo": len(todo),
            "failed": failed,
            "running": 0,
            "workers": min(workers, max(len(todo), 1)),
        }
    )
    pool_size = min(workers, len(todo))
    executor = _new_pool(pool_size) if todo else None
    try:
        if executor is not None:
            failed += _run_pool(
                executor, todo, out_dir, pool_size, store, source, results, warnings, emit, total
            )
        data = load_sweep(out_dir)
        all_finished = all(run.complete for run in data.runs)
        # With several warm workers the plots render in parallel too: the report is the sweep's
        # one serial step otherwise. The bytes do not depend on which process drew them.
        try:
            map_fn = executor.map if executor is not None and pool_size > 1 else map
            write_reports(data, target_accuracy=target_accuracy, map_fn=map_fn)
        except BrokenProcessPool:  # a worker died during the runs: draw here instead
            write_reports(data, target_accuracy=target_accuracy)
    finally:
        if executor is not None:
            executor.shutdown(wait=True)
    manifest["finished_at"] = utc_now()
    manifest["complete"] = all_finished
    write_json_atomic(out_dir / "manifest.json", manifest)
    ordered = {s.name: results[s.name] for s in specs if s.name in results}
    for spec in specs:
        if spec.name not in ordered:
            ordered[spec.name] = RunOutcome(spec.name, spec.fingerprint, "failed", "did not finish")
    emit({"event": "end", "total": total, "done": len(results), "failed": failed, "running": 0})
    return SweepResult(out_dir, specs, ordered, all_finished, warnings)


def _running(pending: Mapping[Future[Any], RunSpec], pool_size: int) -> int:
    # The pool marks a queued call "running" one slot early; no more than pool_size truly run.
    return min(sum(f.running() for f in pending), pool_size)


def _new_pool(size: int) -> ProcessPoolExecutor:
    """A spawn-started pool (no state inherited from the parent) of ``size`` workers."""
    context = multiprocessing.get_context("spawn")
    with _blas_env_for_children():
        return ProcessPoolExecutor(max_workers=size, mp_context=context, initializer=_init_worker)


def _run_pool(
    executor: ProcessPoolExecutor,
    todo: Sequence[RunSpec],
    out_dir: Path,
    pool_size: int,
    store: RunStore | None,
    source: str,
    results: dict[str, RunOutcome],
    warnings: list[str],
    emit: EventCallback,
    total: int,
) -> int:
    """Run ``todo`` on ``executor``; returns how many runs failed. The caller shuts it down."""
    failed = 0
    store_location = store.location if store is not None else None
    try:
        with _blas_env_for_children():
            pending: dict[Future[dict[str, Any]], RunSpec] = {
                executor.submit(
                    _execute_run, spec, str(out_dir / spec.name), store_location, source
                ): spec
                for spec in todo
            }
        while pending:
            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                spec = pending.pop(future)
                try:
                    reply = future.result()
                except BrokenProcessPool as exc:
                    # A worker died (killed, out of memory): no summary, so --resume redoes it.
                    outcome = RunOutcome(
                        spec.name, spec.fingerprint, "failed", f"worker process died: {exc}"
                    )
                else:
                    outcome = _outcome(reply["summary"], resumed=False)
                    if reply.get("store_error"):
                        warnings.append(
                            f"{spec.name}: not recorded in the run store ({reply['store_error']})"
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
                        "running": _running(pending, pool_size),
                    }
                )
            if not done:
                emit(
                    {
                        "event": "tick",
                        "total": total,
                        "done": len(results),
                        "failed": failed,
                        "running": _running(pending, pool_size),
                    }
                )
    except BaseException:
        # Interrupted: stop the workers now; unfinished runs have no summary and are redone.
        executor.shutdown(wait=False, cancel_futures=True)
        for process in list(getattr(executor, "_processes", {}).values()):
            process.terminate()
        raise
    return failed
