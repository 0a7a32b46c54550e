"""The run store: every run from ``velocity run`` and ``velocity sweep`` is recorded here.

Default location ``~/.velocity/runs.db`` (SQLite); ``--store PATH`` or ``VELOCITY_STORE`` change it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocity.records import utc_now
from velocity.store.base import (
    FINISHED_STATUSES,
    RecordFinishedError,
    RunRecord,
    RunStart,
    RunStore,
    StoreError,
)
from velocity.store.liveness import heartbeat_while, process_start, stale_reason, this_host
from velocity.store.sqlite import SQLiteRunStore

if TYPE_CHECKING:
    from velocity.simulation import RunResult
    from velocity.spec import RunSpec

__all__ = [
    "FINISHED_STATUSES",
    "STORE_ENV",
    "RecordFinishedError",
    "RunRecord",
    "RunStart",
    "RunStore",
    "SQLiteRunStore",
    "StoreError",
    "default_store_path",
    "finish_from_summary",
    "open_store",
    "record_result",
    "record_start",
    "recorded_run",
    "run_start",
    "stale_reason",
]

STORE_ENV = "VELOCITY_STORE"


def default_store_path(explicit: str | Path | None = None) -> Path:
    """``explicit``, else ``$VELOCITY_STORE``, else ``~/.velocity/runs.db``."""
    if explicit is not None and str(explicit):
        return Path(explicit).expanduser()
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".velocity" / "runs.db"


def open_store(location: str | Path | None = None) -> RunStore:
    """Open (creating and migrating as needed) the store at ``location`` (default as above)."""
    return SQLiteRunStore(default_store_path(location))


def run_start(
    spec: RunSpec,
    source: str | None,
    started_at: str,
    *,
    sweep_id: str | None = None,
    owned: bool = False,
) -> RunStart:
    """The start record of ``spec`` (``source``: the sweep folder, None for a lone run;
    ``sweep_id``: its manifest's id). ``owned``: this process runs it and stays alive while it
    does (its host, pid and process start are recorded, so a crash shows as ``stale``)."""
    return RunStart(
        name=spec.name,
        source=source,
        fingerprint=spec.fingerprint,
        fingerprint_without_seed=spec.fingerprint_without_seed,
        seed=spec.seed,
        spec=spec.canonical(),
        started_at=started_at,
        sweep_id=sweep_id,
        host=this_host() if owned else None,
        pid=os.getpid() if owned else None,
        process_start=process_start() if owned else None,
    )


def finish_from_summary(
    store: RunStore, run_id: str, summary: Mapping[str, Any], rounds: list[dict[str, Any]]
) -> None:
    """Finish a stored run from a run's ``summary.json`` content and its per-round records."""
    store.finish_run(
        run_id,
        status=summary["status"],
        error=summary.get("error"),
        finished_at=summary["finished_at"],
        wall_seconds=float(summary.get("wall_seconds") or 0.0),
        final=summary.get("final") or {},
        best=summary.get("best") or {},
        totals=summary.get("totals") or {},
        rounds=rounds,
    )


def record_start(store: RunStore, spec: RunSpec, source: str | None = None) -> str:
    """Record ``spec`` as ``running`` now, run by this process; returns the run id for
    :func:`record_result`."""
    return store.start_run(run_start(spec, source, utc_now(), owned=True))


def record_result(store: RunStore, run_id: str, result: RunResult) -> None:
    """Finish the stored run ``run_id`` with a finished simulation result."""
    finish_from_summary(store, run_id, result.summary(), result.rounds)


@contextmanager
def recorded_run(
    store: RunStore | None, spec: RunSpec, source: str | None = None
) -> Iterator[Callable[[RunResult], None]]:
    """Record a run around the block: ``running`` now, finished by the callback it yields.

    A block that raises (bad data found before round 1, Ctrl-C) leaves a ``failed`` record,
    never a forever-``running`` one; while the block runs a heartbeat marks the record alive,
    and a process killed outright (SIGKILL) leaves a record ``velocity runs`` shows as
    ``stale``. With ``store=None`` nothing is recorded.
    """
    if store is None:
        yield lambda result: None
        return
    run_id = record_start(store, spec, source)
    done = False

    def finish(result: RunResult) -> None:
        nonlocal done
        record_result(store, run_id, result)
        done = True

    try:
        with heartbeat_while(store, run_id):
            yield finish
    except BaseException as exc:
        if not done:
            now = utc_now()
            store.finish_run(
                run_id,
                status="failed",
                error=f"{type(exc).__name__}: {exc}",
                finished_at=now,
                wall_seconds=0.0,
                final={},
                best={},
                totals={},
                rounds=[],
            )
        raise
