"""The local executor: spawn-started worker processes on this machine, one run per worker.

It manages its processes itself (no ProcessPoolExecutor, where one dead worker breaks the whole
pool) so that it always knows which run is on which worker: a worker that dies costs only its
own run, which is tried once more in a fresh worker; a run past its timeout is stopped alone; and
cancelling kills exactly this executor's processes. Workers exit by themselves when the driver
dies, even by SIGKILL (``PR_SET_PDEATHSIG`` on Linux, and a parent-pid watchdog everywhere).
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from multiprocessing.process import BaseProcess
from typing import Any

from velocity.errors import InputError, signal_name
from velocity.sweeps.environment import BLAS_THREAD_ENV, blas_env_for_children
from velocity.sweeps.executors.base import DEFAULT_MAX_ATTEMPTS, Executor, RunTask, TaskResult
from velocity.sweeps.worker import execute_run

__all__ = ["LocalExecutor", "check_main_guard"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_WATCHDOG_SECONDS = 0.5
_STOP_GRACE_SECONDS = 30.0


# ----------------------------------------------------------------------------- the worker side


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit as soon as the driver ``parent_pid`` is gone, however it died."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the driver died before the line above took effect
        os._exit(1)

    def watch() -> None:  # other systems, and a driver thread that ended before its process
        while True:
            time.sleep(_WATCHDOG_SECONDS)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="velocity-parent-watchdog", daemon=True).start()


def _worker_main(conn: Connection, parent_pid: int) -> None:
    """A worker's life: receive ``(function, args)``, say ``("started", None)``, reply
    ``("ok", value)`` or ``("error", "Type: message")``, until told to stop (None) or the driver
    is gone."""
    _die_with_parent(parent_pid)
    # Ctrl-C goes to the whole process group; the driver decides what stops. The driver started
    # us with the stop signals blocked: a Ctrl-C pressed during start-up is discarded here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # SIGTERM and SIGHUP end a worker, as by default
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    os.environ.update(BLAS_THREAD_ENV)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        except Exception:  # half a message: the driver was stopped while sending it
            sys.exit(3)
        if message is None:
            return
        function, args = message
        try:  # the run's clock (its timeout) starts now, not while this worker was starting up
            conn.send(("started", None))
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", function(*args))
        except Exception as exc:  # the driver decides what an error means
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # a value that cannot be pickled
            conn.send(("error", f"cannot send the result back ({type(exc).__name__}: {exc})"))


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
    """``workers`` spawn-started processes (no state inherited from the parent), started as
    tasks arrive and kept warm until :meth:`close`; see :class:`Executor` for the contract.
    ``max_attempts``: how many times in all a task whose worker dies is tried."""

    def __init__(self, workers: int, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        check_main_guard()
        if isinstance(workers, bool) or workers < 1:
            raise InputError(f"workers must be an integer >= 1, got {workers!r}")
        if isinstance(max_attempts, bool) or max_attempts < 1:
            raise InputError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        self.workers = workers
        self.max_attempts = max_attempts
        self._context = multiprocessing.get_context("spawn")
        self._queue: deque[_Job] = deque()
        self._idle: list[_Worker] = []
        self._busy: list[_Worker] = []
        self._finished: list[TaskResult] = []
        self._map_results: dict[int, tuple[str, Any]] = {}
        self._closed = False

    # -------------------------------------------------------------------------- the interface

    def submit(self, task: RunTask) -> None:
        if self._closed:
            raise RuntimeError("the executor is closed")
        call = (execute_run, (dict(task.spec), dict(task.files), dict(task.data)))
        self._queue.append(_Job(call=call, name=task.name, timeout=task.timeout))
        self._dispatch()

    def wait(self, timeout: float) -> list[TaskResult]:
        end = time.monotonic() + max(timeout, 0.0)
        while True:
            self._dispatch()
            if self._finished or not self._busy:
                break
            now = time.monotonic()
            wake = min([end, *(w.deadline for w in self._busy if w.deadline is not None)])
            self._poll(max(wake - now, 0.0))
            self._stop_overdue()
            if self._finished or time.monotonic() >= end:
                break
        finished, self._finished = self._finished, []
        return finished

    @property
    def pending(self) -> int:
        queued = sum(job.name is not None for job in self._queue)
        return queued + self.running + len(self._finished)

    @property
    def running(self) -> int:
        return sum(w.job is not None and w.job.name is not None for w in self._busy)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> Iterable[Any]:
        items = list(zip(*iterables, strict=False))
        if self.workers < 2 or len(items) < 2 or self._closed or self.pending:
            return [fn(*args) for args in items]
        self._map_results = {}
        for index, args in enumerate(items):
            self._queue.append(_Job(call=(fn, tuple(args)), index=index))
        while len(self._map_results) < len(items):
            self._dispatch()
            if not self._busy:
                break
            self._poll(0.5)
        results, self._map_results = self._map_results, {}
        # An item whose worker was lost or that raised is computed here: the same bytes (plots
        # do not depend on where they are drawn), and a real error surfaces with its traceback.
        return [
            results[i][1] if results.get(i, ("", None))[0] == "ok" else fn(*args)
            for i, args in enumerate(items)
        ]

    def close(self, *, cancel: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        workers = [*self._busy, *self._idle]
        self._busy, self._idle = [], []
        if cancel:
            for worker in workers:
                worker.kill()
        else:
            for worker in workers:
                with contextlib.suppress(OSError, ValueError):
                    worker.conn.send(None)
        deadline = time.monotonic() + (5.0 if cancel else _STOP_GRACE_SECONDS)
        for worker in workers:
            worker.process.join(max(deadline - time.monotonic(), 0.0))
            if worker.process.exitcode is None:
                worker.kill()
                worker.process.join()
            worker.conn.close()

    # -------------------------------------------------------------------------- the machinery

    def _start_worker(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(child_end, os.getpid()),
            name="velocity-worker",
            daemon=True,  # multiprocessing also ends daemons when the driver exits normally
        )
        with blas_env_for_children(), _stop_signals_blocked():
            process.start()
        child_end.close()
        return _Worker(process, parent_end)

    def _dispatch(self) -> None:
        """Give queued jobs to idle workers, starting workers up to ``workers``."""
        while self._queue and not self._closed:
            if self._idle:
                worker = self._idle.pop()
            elif len(self._busy) < self.workers:
                worker = self._start_worker()
            else:
                return
            job = self._queue.popleft()
            try:
                worker.conn.send(job.call)
            except (OSError, ValueError):  # it died while idle: not this job's fault
                self._queue.appendleft(job)
                self._discard(worker)
                continue
            job.attempts += 1
            worker.job = job
            worker.deadline = None  # set when the worker says it started
            self._busy.append(worker)

    def _poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a reply or a worker's death, and handle what happened."""
        replies = {w.conn: w for w in self._busy}
        exits = {w.process.sentinel: w for w in [*self._busy, *self._idle]}
        ready = wait_ready([*replies, *exits], timeout)
        for item in ready:
            if item in replies:
                self._receive(replies[item])
        for item in ready:
            if item in exits and not exits[item].gone:
                self._lose(exits[item])

    def _receive(self, worker: _Worker) -> None:
        if worker.gone or worker.job is None:
            return
        try:
            status, value = worker.conn.recv()
        except (EOFError, OSError):  # it died before or while replying
            self._lose(worker)
            return
        except Exception as exc:  # a reply that cannot be unpickled here
            status, value = "error", f"cannot read the result ({type(exc).__name__}: {exc})"
        if status == "started":
            timeout = worker.job.timeout
            worker.deadline = None if timeout is None else time.monotonic() + timeout
            return
        job, worker.job, worker.deadline = worker.job, None, None
        self._busy.remove(worker)
        self._idle.append(worker)
        self._complete(job, status, value)

    def _complete(self, job: _Job, status: str, value: Any, *, lost: bool = False) -> None:
        if job.name is None:
            self._map_results[job.index] = (status, value)
        elif status == "ok":
            self._finished.append(
                TaskResult(job.name, value, None, job.attempts, losses=job.losses)
            )
        else:
            self._finished.append(
                TaskResult(job.name, None, value, job.attempts, lost=lost, losses=job.losses)
            )

    def _lose(self, worker: _Worker) -> None:
        """The worker process ended without being asked to: retry its job or report it."""
        job = worker.job
        reason = self._discard(worker)
        if job is None:
            return
        if job.name is None:
            self._complete(job, "lost", reason)
            return
        job.losses = (*job.losses, reason)
        if job.attempts < self.max_attempts:
            self._queue.appendleft(job)  # a fresh worker takes it first
            return
        tries = "its one attempt" if job.attempts == 1 else f"each of {job.attempts} attempts"
        self._complete(job, "lost", f"worker process died ({reason}) on {tries}", lost=True)

    def _stop_overdue(self) -> None:
        now = time.monotonic()
        for worker in [w for w in self._busy if w.deadline is not None and now >= w.deadline]:
            job = worker.job
            self._discard(worker)
            if job is not None:
                message = f"timed out: still running after {job.timeout:g} s (the run timeout)"
                self._complete(job, "timeout", message, lost=True)

    def _discard(self, worker: _Worker) -> str:
        """Forget ``worker``, making sure its process is gone; returns how it ended."""
        worker.gone = True
        for pool in (self._busy, self._idle):
            if worker in pool:
                pool.remove(worker)
        alive = worker.process.exitcode is None
        if alive:
            worker.process.join(0.05)  # it may be exiting right now
        if worker.process.exitcode is None:
            worker.kill()
        worker.process.join(5.0)
        worker.conn.close()
        return _exit_reason(worker.process.exitcode)


@dataclass
class _Job:
    """A queued call: a run task (``name``) or an item of :meth:`LocalExecutor.map` (``index``)."""

    call: tuple[Callable[..., Any], tuple[Any, ...]]
    name: str | None = None
    index: int = -1
    timeout: float | None = None
    attempts: int = 0
    losses: tuple[str, ...] = ()


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    job: _Job | None = None
    deadline: float | None = None
    gone: bool = False

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self.process.kill()


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        return f"killed by {signal_name(-exitcode)}"
    return f"exit code {exitcode}"


_STOP_SIGNALS = {
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
}


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Start a child with the stop signals held back, so that starting it is one step.

    Interrupted half-way, the driver would leave the child reading half its start-up data (and
    printing a traceback). Blocking the signals in this thread is not enough: the kernel may
    hand one to another thread (BLAS starts several), and Python then runs the handler here
    anyway, so the handlers are deferred too, and called once the child is started. The mask
    survives exec, so a Ctrl-C during the child's own start-up (before it ignores SIGINT)
    cannot print a KeyboardInterrupt traceback either. Nothing is lost, only delayed.
    """
    deferred: list[int] = []
    handlers: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in _STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if handler in (signal.SIG_IGN, None):
                continue
            handlers[signum] = handler
            signal.signal(signum, lambda number, frame: deferred.append(number))
    masked = hasattr(signal, "pthread_sigmask")
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS) if masked else set()
    try:
        yield
    finally:
        if masked:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(deferred):
            handler = handlers[signum]
            if callable(handler):
                handler(signum, None)  # e.g. raises KeyboardInterrupt, here and now
            else:
                signal.raise_signal(signum)  # SIG_DFL: what the signal would have done
