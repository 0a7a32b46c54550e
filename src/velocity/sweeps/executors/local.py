"""The local executor: a spawn-started process pool on this machine, one run per worker."""

from __future__ import annotations

import ast
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from velocity.errors import InputError
from velocity.sweeps.environment import BLAS_THREAD_ENV, blas_env_for_children
from velocity.sweeps.executors.base import Executor, RunTask, TaskResult
from velocity.sweeps.worker import execute_run

__all__ = ["LocalExecutor", "check_main_guard"]


def _init_worker() -> None:
    os.environ.update(BLAS_THREAD_ENV)
    # Ctrl-C goes to the whole process group; the parent decides what stops, workers ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    sides = [test.left, *test.comparators]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    values = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(sides) == 2 and isinstance(test.ops[0], ast.Eq) and bool(names and values)


def _guarded_lines(source: str) -> list[tuple[int, int]]:
    """Line ranges of the bodies of the module's ``if __name__ == "__main__":`` blocks."""
    tree = ast.parse(source)
    return [
        (node.body[0].lineno, node.end_lineno or node.body[-1].lineno)
        for node in tree.body
        if isinstance(node, ast.If) and _is_main_guard(node)
    ]


def check_main_guard() -> None:
    """Refuse to start worker processes from the top level of an unguarded script.

    Spawned workers start by re-running the main script (as ``__mp_main__``); a sweep started
    at its top level would start again in every worker, and every run would fail. This finds
    the script's statement now executing and raises InputError unless it sits under
    ``if __name__ == "__main__":``. Interactive sessions, ``python -c`` and ``python -m`` of a
    ``__main__`` module are never re-run and pass.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec_name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if main is None or path is None or spec_name.endswith("__main__"):
        return
    frame = sys._getframe(1)
    statement = None
    while frame is not None:
        if frame.f_globals.get("__name__") == "__main__" and frame.f_code.co_name == "<module>":
            statement = frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    if statement is None:
        return
    try:
        with open(path, encoding="utf-8") as handle:
            guarded = _guarded_lines(handle.read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    if not any(start <= statement <= end for start, end in guarded):
        raise InputError(
            f"a sweep is started at the top level of {path} (line {statement}); worker "
            "processes start by re-running that script, so put the call under "
            'if __name__ == "__main__":'
        )


class LocalExecutor(Executor):
    """``workers`` spawn-started processes (no state inherited from the parent)."""

    def __init__(self, workers: int) -> None:
        check_main_guard()
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
            future = self._pool.submit(
                execute_run, dict(task.spec), dict(task.files), dict(task.data)
            )
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
