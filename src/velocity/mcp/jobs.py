"""Sweeps the MCP server runs in the background: one thread each calling ``velocity.sweep``, so
the stdio loop keeps answering; a bounded number at once; cancelled cleanly when the server stops.

A sweep's worker processes are started by the library's local executor; a cancelled sweep stops
them and leaves its folder marked incomplete (``resume`` finishes it), never half-written.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocity.errors import InputError
from velocity.records import utc_now

if TYPE_CHECKING:
    from velocity.sweeps import SweepResult

__all__ = ["SweepCancelled", "SweepJob", "SweepJobs"]

_log = logging.getLogger("velocity.mcp")


class SweepCancelled(BaseException):
    """Raised from a sweep's event callback to stop it: the sweep's driver then cancels its
    workers exactly as on Ctrl-C, and the folder stays resumable. A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way records it as a failure."""


@dataclass
class SweepJob:
    """One sweep started by this server: live counts from its events, then its outcome."""

    id: str
    folder: Path
    total: int
    kind: str = "sweep"
    state: str = "running"  # running | finished | cancelled | error
    done: int = 0
    failed: int = 0
    running: int = 0
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    error: str | None = None
    result: SweepResult | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def on_event(self, event: dict[str, Any]) -> None:
        for key in ("done", "failed", "running", "total"):
            if isinstance(event.get(key), int):
                setattr(self, key, event[key])
        if self.cancel.is_set() and event.get("event") != "end":
            raise SweepCancelled()


class SweepJobs:
    """The server's background sweeps (at most ``limit`` running at once, reproductions
    included)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._jobs: dict[str, SweepJob] = {}
        self._lock = threading.Lock()
        self._busy = 0
        self._closing = False

    def _take_slot(self, what: str) -> None:
        with self._lock:
            if self._closing:
                raise InputError("the server is shutting down; nothing new is started")
            if self._busy >= self.limit:
                raise InputError(
                    f"{self._busy} sweep(s) already running, this server's limit is "
                    f"{self.limit} at once (server option --max-sweeps); wait for one to "
                    f"finish (sweep_status) before starting {what}"
                )
            self._busy += 1

    def _free_slot(self) -> None:
        with self._lock:
            self._busy -= 1

    @contextlib.contextmanager
    def slot(self, what: str) -> Iterator[None]:
        """Hold a sweep slot for work run in the caller's thread (a reproduction)."""
        self._take_slot(what)
        try:
            yield
        finally:
            self._free_slot()

    def start(
        self,
        job_id: str,
        folder: Path,
        total: int,
        work: Callable[[Callable[[dict[str, Any]], None]], SweepResult],
        *,
        claim: Callable[[], None] | None = None,
    ) -> SweepJob:
        """Run ``work(on_event)`` (a ``velocity.sweep`` call) in a background thread, once a
        slot is free and ``claim()`` (taking the sweep's folder) succeeded."""
        with self._lock:
            if job_id in self._jobs and self._jobs[job_id].state == "running":
                raise InputError(f"sweep {job_id!r} is already running")
        self._take_slot(f"sweep {job_id!r}")
        if claim is not None:
            try:
                claim()
            except BaseException:
                self._free_slot()
                raise
        job = SweepJob(id=job_id, folder=folder, total=total)

        def body() -> None:
            try:
                job.result = work(job.on_event)
                job.state = "finished"
            except SweepCancelled:
                job.state = "cancelled"
            except InputError as exc:
                job.state, job.error = "error", str(exc)
            except BaseException as exc:  # a bug: recorded in one line, traceback to the log
                _log.exception("sweep %s stopped", job_id)
                job.state, job.error = "error", f"internal error ({type(exc).__name__}: {exc})"
            finally:
                job.running = 0
                job.finished_at = utc_now()
                self._free_slot()

        job.thread = threading.Thread(target=body, name=f"velocity-sweep-{job_id}", daemon=True)
        with self._lock:
            self._jobs[job_id] = job
        job.thread.start()
        return job

    def get(self, job_id: str) -> SweepJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def by_folder(self, folder: Path) -> SweepJob | None:
        with self._lock:
            return next((j for j in self._jobs.values() if j.folder == folder), None)

    def all(self) -> list[SweepJob]:
        with self._lock:
            return list(self._jobs.values())

    def shutdown(self, timeout: float = 20.0) -> None:
        """Refuse new work, cancel every running sweep and wait for their threads (each stops
        its workers within a tick of the sweep's event loop)."""
        with self._lock:
            self._closing = True
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout)
