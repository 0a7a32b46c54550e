"""The local executor: a spawn-started process pool on this machine, one run per worker."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from velocity.sweep.environment import BLAS_THREAD_ENV, blas_env_for_children
from velocity.sweep.executors.base import Executor, RunTask, TaskResult
from velocity.sweep.worker import execute_run

__all__ = ["LocalExecutor"]


def _init_worker() -> None:
    os.environ.update(BLAS_THREAD_ENV)
    # Ctrl-C goes to the whole process group; the parent decides what stops, workers ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor(Executor):
    """``workers`` spawn-started processes (no state inherited from the parent)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        context = multiprocessing.get_context("spawn")
        with blas_env_for_children():
            self._pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=_init_worker
            )
        self._futures: dict[Future[dict[str, Any]], str] = {}
        self._broken = False

    def submit(self, task: RunTask) -> None:
        with blas_env_for_children():
            future = self._pool.submit(execute_run, dict(task.spec))
        self._futures[future] = task.name

    def wait(self, timeout: float) -> list[TaskResult]:
        if not self._futures:
            return []
        done, _ = wait(self._futures, timeout=timeout, return_when=FIRST_COMPLETED)
        finished = []
        for future in done:
            name = self._futures.pop(future)
            try:
                finished.append(TaskResult(name, future.result()))
            except BrokenProcessPool as exc:
                self._broken = True
                finished.append(TaskResult(name, None, f"worker process died: {exc}"))
        return finished

    @property
    def pending(self) -> int:
        return len(self._futures)

    @property
    def running(self) -> int:
        # The pool marks a queued call "running" one slot early; no more than workers truly run.
        return min(sum(f.running() for f in self._futures), self.workers)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> Iterable[Any]:
        if self._broken or self.workers < 2:
            return map(fn, *iterables)
        try:
            return list(self._pool.map(fn, *iterables))
        except BrokenProcessPool:  # a worker died during the runs: work here instead
            self._broken = True
            return map(fn, *iterables)

    def close(self, *, cancel: bool = False) -> None:
        if cancel:
            processes = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
        else:
            self._pool.shutdown(wait=True)
