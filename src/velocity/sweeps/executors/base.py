"""The executor interface: how a sweep hands runs to workers and gets their records back.

The sweep's driver submits :class:`RunTask` s, collects :class:`TaskResult` s as runs finish and
writes every artifact itself; an executor only moves specs out and records back. One module per
executor (``local``: worker processes on this machine); the driver never branches on which.
Every executor keeps the same fault contract (see :class:`Executor`), so a sweep survives a dead
worker, a hung run or Ctrl-C the same way wherever it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["DEFAULT_MAX_ATTEMPTS", "Executor", "RunTask", "TaskResult"]

DEFAULT_MAX_ATTEMPTS = 2
"""A task whose worker is lost is tried this many times in all (once more in a fresh worker)."""


@dataclass(frozen=True)
class RunTask:
    """One run to execute: its name, canonical spec (plain JSON data, never a live object),
    the source files it needs besides velocity (plug-ins: copy name -> bytes, each checked
    against the sha256 the spec records before it is loaded), its data files (sha256 -> path
    of the sweep folder's copy, the only place the worker reads them from; an executor for
    other machines ships those files with the task) and the most seconds one attempt may take
    (None: no limit)."""

    name: str
    spec: Mapping[str, Any]
    files: Mapping[str, bytes] = field(default_factory=dict)
    data: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None


@dataclass(frozen=True)
class TaskResult:
    """A finished task: the worker's records (``payload``), or None and why (``error``), after
    ``attempts`` tries. ``lost`` says the error is the executor's (the worker died or the run
    ran past its timeout), not the run's own: the run produced no records at all. ``losses``
    says how each attempt that lost its worker ended (e.g. ``"killed by SIGKILL"``), also when a
    later attempt succeeded."""

    name: str
    payload: dict[str, Any] | None
    error: str | None = None
    attempts: int = 1
    lost: bool = False
    losses: tuple[str, ...] = ()


class Executor(ABC):
    """Runs tasks concurrently. Not thread-safe: one driver thread uses it.

    The contract every executor keeps (the driver relies on each point):

    1. **Exactly once.** Every submitted task comes back from :meth:`wait` exactly once: with
       the worker's payload, or with ``payload=None`` and an ``error``.
    2. **Retries are the executor's job, and only for lost workers.** A task whose worker dies
       (killed, crashed, out of memory, machine gone) is run again in a fresh worker, at most
       ``DEFAULT_MAX_ATTEMPTS`` times in all; then it comes back with ``lost=True``, the reason
       and ``attempts``. A run that raises is not retried: the worker turns that into a recorded
       ``failed`` payload, and runs are deterministic, so a retry would fail the same way. Only
       the task on the dead worker is affected; every other task goes on normally.
    3. **Timeouts.** A task with ``timeout`` whose attempt runs longer is stopped (its worker
       killed and replaced) and comes back with ``lost=True`` and the reason, without a retry.
    4. **Cancellation.** :meth:`close` with ``cancel=True`` abandons what is in flight (its
       results are never delivered) and never starts what is queued; :meth:`close` returns only
       when no worker process of this executor is left, whether cancelled or not. Closing twice
       is harmless.
    5. **Workers never outlive the driver.** When the driver process dies, even by SIGKILL, its
       workers notice within seconds and exit; workers ignore SIGINT (Ctrl-C reaches the whole
       process group; the driver decides what stops).
    6. **Workers write nothing.** No files, no run store: only the payload travels back.
    """

    workers: int

    @abstractmethod
    def submit(self, task: RunTask) -> None:
        """Queue ``task``."""

    @abstractmethod
    def wait(self, timeout: float) -> list[TaskResult]:
        """Tasks finished since the last call, waiting up to ``timeout`` seconds for one."""

    @property
    @abstractmethod
    def pending(self) -> int:
        """Tasks submitted and not yet returned by :meth:`wait`."""

    @property
    @abstractmethod
    def running(self) -> int:
        """Tasks a worker is executing now (at most ``workers``)."""

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> Iterable[Any]:
        """``map`` on the workers, for independent side jobs (the report's plots); an item whose
        worker is lost is computed here instead, so the result is always complete."""
        return map(fn, *iterables)

    @abstractmethod
    def close(self, *, cancel: bool = False) -> None:
        """Stop the workers (after their current task, or at once with ``cancel``) and return
        when every worker process is gone."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(cancel=kind is not None)
