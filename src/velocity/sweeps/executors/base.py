"""The executor interface: how a sweep hands runs to workers and gets their records back.

The sweep's driver submits :class:`RunTask` s, collects :class:`TaskResult` s as runs finish and
writes every artifact itself; an executor only moves specs out and records back. One module per
executor (``local``: a process pool on this machine); the driver never branches on which.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["Executor", "RunTask", "TaskResult"]


@dataclass(frozen=True)
class RunTask:
    """One run to execute: its name, canonical spec (plain JSON data, never a live object),
    the source files it needs besides velocity (plug-ins: copy name -> bytes, each checked
    against the sha256 the spec records before it is loaded) and its data files (sha256 ->
    path of the sweep folder's copy, the only place the worker reads them from; an executor
    for other machines ships those files with the task)."""

    name: str
    spec: Mapping[str, Any]
    files: Mapping[str, bytes] = field(default_factory=dict)
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskResult:
    """A finished task: the worker's records (``payload``) or why there are none (``error``)."""

    name: str
    payload: dict[str, Any] | None
    error: str | None = None


class Executor(ABC):
    """Runs tasks concurrently. Not thread-safe: one driver thread uses it.

    Contract: every submitted task comes back from :meth:`wait` exactly once, as a payload or
    an error; :meth:`close` with ``cancel=True`` abandons what is in flight and never starts
    what is queued.
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
        """``map`` on the workers, for independent side jobs (the report's plots)."""
        return map(fn, *iterables)

    @abstractmethod
    def close(self, *, cancel: bool = False) -> None:
        """Stop the workers; ``cancel`` abandons in-flight tasks instead of waiting for them."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(cancel=kind is not None)
