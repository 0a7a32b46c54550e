"""The Ray executor: each run is one Ray task, on a local Ray instance or an existing cluster.

Specs travel as canonical JSON text, plug-in sources as bytes and data files as bytes in Ray's
object store (each checked against its sha256 on the worker before use); the driver writes every
artifact, exactly as with the local executor. A task whose worker (or node) dies is resubmitted
by this executor, so it knows every attempt and why it was lost (see ``base.Executor``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from velocity.errors import InputError
from velocity.sweeps.environment import BLAS_THREAD_ENV
from velocity.sweeps.executors.base import DEFAULT_MAX_ATTEMPTS, Executor, RunTask, TaskResult

__all__ = ["INSTALL_HINT", "RayExecutor", "check_ray_address", "import_ray"]

INSTALL_HINT = "pip install 'velocity-fl[ray]'"
_ADDRESS = re.compile(r"^(auto|[A-Za-z0-9_.\-]+:\d{1,5}|\[[0-9A-Fa-f:]+\]:\d{1,5})$")


def import_ray() -> Any:
    """The ``ray`` module, or InputError with the install hint when the extra is missing."""
    try:
        import ray
    except ImportError:
        raise InputError(
            f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}"
        ) from None
    return ray


def check_ray_address(address: str | None) -> str | None:
    """``auto`` or ``HOST:PORT`` (None: start a local Ray instance)."""
    if address is None:
        return None
    if not isinstance(address, str) or not _ADDRESS.match(address.strip()):
        raise InputError(f"--ray-address must be 'auto' or HOST:PORT, got {address!r}")
    host_port = address.strip()
    if host_port != "auto" and not 0 < int(host_port.rsplit(":", 1)[1]) < 65536:
        raise InputError(f"--ray-address: port must be 1-65535, got {address!r}")
    return host_port


# ----------------------------------------------------------------------------- the worker side


def _run_task(spec_json: str, files: Mapping[str, bytes], shas: list[str], *blobs: bytes) -> Any:
    """One run inside a Ray worker: the spec from its canonical JSON, the data files from the
    object store (``shas[i]`` names ``blobs[i]``; checked when read), BLAS on one thread."""
    import os

    os.environ.update(BLAS_THREAD_ENV)  # the runtime env already set it before numpy loaded
    from velocity.sweeps.worker import execute_run

    data = {sha: bytes(blob) for sha, blob in zip(shas, blobs, strict=True)}
    return execute_run(json.loads(spec_json), dict(files), data)


# ----------------------------------------------------------------------------- the driver side


@dataclass
class _Job:
    task: RunTask
    attempts: int = 0
    losses: tuple[str, ...] = ()
    ref: Any = None
    deadline: float | None = None


class RayExecutor(Executor):
    """Runs each task as a Ray task (``run_cpus`` CPUs, ``run_gpus`` GPUs), at most ``workers``
    at once. Without ``address`` a local Ray instance with ``workers`` CPUs is started here and
    shut down by :meth:`close`; with one (``auto`` or ``HOST:PORT``) the executor joins that
    cluster and leaves it running. ``max_attempts``: tries in all for a task whose worker dies.
    A task's timeout counts from its submission to Ray (it waits for no other task of ours:
    at most ``workers`` are submitted at once)."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        run_cpus: float = 1.0,
        run_gpus: float = 0.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        if workers is not None and (isinstance(workers, bool) or workers < 1):
            raise InputError(f"--parallel must be an integer >= 1, got {workers!r}")
        if isinstance(run_cpus, bool) or not run_cpus > 0:
            raise InputError(f"--run-cpus must be a number > 0, got {run_cpus!r}")
        if isinstance(run_gpus, bool) or not run_gpus >= 0:
            raise InputError(f"--run-gpus must be a number >= 0, got {run_gpus!r}")
        if isinstance(max_attempts, bool) or max_attempts < 1:
            raise InputError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        address = check_ray_address(address)
        ray = import_ray()
        self._ray = ray
        self.max_attempts = max_attempts
        self._owned = address is None
        self._queue: deque[_Job] = deque()
        self._flight: dict[Any, _Job] = {}  # ObjectRef -> job
        self._finished: list[TaskResult] = []
        self._blobs: dict[str, Any] = {}  # sha256 -> ObjectRef of the data file's bytes
        self._closed = False
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
            "runtime_env": {"env_vars": dict(BLAS_THREAD_ENV)},
        }
        if ray.is_initialized():
            raise InputError("Ray is already initialized in this process; shut it down first")
        try:
            if address is None:
                cpus = workers or _cpu_count()
                ray.init(num_cpus=max(int(cpus * run_cpus + 0.999), 1), **options)
            else:
                options.pop("include_dashboard")
                ray.init(address=address, **options)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                ray.shutdown()
            if not isinstance(exc, Exception):  # Ctrl-C while Ray starts: nothing left behind
                raise
            where = "start a local Ray instance" if address is None else f"join {address}"
            raise InputError(
                f"--ray-address: cannot {where} ({type(exc).__name__}: {_first_line(exc)})"
            ) from None
        if workers is None:
            available = ray.cluster_resources().get("CPU", 1.0)
            workers = max(int(available // run_cpus), 1)
        self.workers = workers
        self._remote = ray.remote(_run_task).options(
            num_cpus=run_cpus, num_gpus=run_gpus, max_retries=0, retry_exceptions=False
        )

    # -------------------------------------------------------------------------- the interface

    def submit(self, task: RunTask) -> None:
        if self._closed:
            raise RuntimeError("the executor is closed")
        self._queue.append(_Job(task))
        self._dispatch()

    def wait(self, timeout: float) -> list[TaskResult]:
        end = time.monotonic() + max(timeout, 0.0)
        while not self._finished and self._flight:
            now = time.monotonic()
            deadlines = [j.deadline for j in self._flight.values() if j.deadline is not None]
            wake = min([end, *deadlines])
            ready, _ = _signal_safe(
                self._ray.wait, list(self._flight), num_returns=1, timeout=max(wake - now, 0.0)
            )
            if ready:  # everything else already done, without waiting
                ready, _ = _signal_safe(
                    self._ray.wait, list(self._flight), num_returns=len(self._flight), timeout=0
                )
            for ref in ready:
                self._collect(ref)
            self._stop_overdue()
            self._dispatch()
            if time.monotonic() >= end:
                break
        finished, self._finished = self._finished, []
        return finished

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._flight) + len(self._finished)

    @property
    def running(self) -> int:
        return len(self._flight)

    def close(self, *, cancel: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        refs = list(self._flight)
        self._flight.clear()
        if cancel:
            for ref in refs:
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref, force=True)
        elif refs:  # let what runs finish (its result is not delivered: nobody waits any more)
            with contextlib.suppress(Exception):
                _signal_safe(self._ray.wait, refs, num_returns=len(refs))
        # Shutting down ends this driver's job: Ray stops the job's workers (on a joined
        # cluster too); a local instance started here is stopped altogether.
        with contextlib.suppress(Exception):
            self._ray.shutdown()

    # -------------------------------------------------------------------------- the machinery

    def _dispatch(self) -> None:
        while self._queue and len(self._flight) < self.workers and not self._closed:
            job = self._queue.popleft()
            task = job.task
            shas = sorted(task.data)
            blobs = [self._blob(sha, task.data[sha]) for sha in shas]
            spec_json = json.dumps(dict(task.spec), sort_keys=True, separators=(",", ":"))
            job.ref = _signal_safe(self._remote.remote, spec_json, dict(task.files), shas, *blobs)
            job.attempts += 1
            job.deadline = None if task.timeout is None else time.monotonic() + task.timeout
            self._flight[job.ref] = job

    def _blob(self, sha256: str, path: str) -> Any:
        """The data file's bytes in the object store, put there once per sweep."""
        if sha256 not in self._blobs:
            with open(path, "rb") as handle:
                self._blobs[sha256] = _signal_safe(self._ray.put, handle.read())
        return self._blobs[sha256]

    def _collect(self, ref: Any) -> None:
        job = self._flight.pop(ref, None)
        if job is None:
            return
        exceptions = self._ray.exceptions
        name = job.task.name
        try:
            payload = _signal_safe(self._ray.get, ref)
        except exceptions.RayTaskError as exc:  # the task itself raised (not the run: that is
            # a recorded failure): e.g. velocity cannot be imported on that node
            cause = getattr(exc, "cause", None) or exc
            error = f"{type(cause).__name__}: {_first_line(cause)}"
            self._finished.append(TaskResult(name, None, error, job.attempts, losses=job.losses))
            return
        except (exceptions.RayError, OSError) as exc:  # the worker, its node or the object died
            self._lose(job, _loss_reason(exc))
            return
        self._finished.append(TaskResult(name, payload, None, job.attempts, losses=job.losses))

    def _lose(self, job: _Job, reason: str) -> None:
        job.losses = (*job.losses, reason)
        if job.attempts < self.max_attempts:
            self._queue.appendleft(job)  # a fresh worker takes it first
            return
        tries = "its one attempt" if job.attempts == 1 else f"each of {job.attempts} attempts"
        error = f"Ray worker died ({reason}) on {tries}"
        self._finished.append(
            TaskResult(job.task.name, None, error, job.attempts, lost=True, losses=job.losses)
        )

    def _stop_overdue(self) -> None:
        now = time.monotonic()
        for ref, job in list(self._flight.items()):
            if job.deadline is not None and now >= job.deadline:
                del self._flight[ref]
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref, force=True)
                message = f"timed out: still running after {job.task.timeout:g} s (the run timeout)"
                self._finished.append(
                    TaskResult(
                        job.task.name, None, message, job.attempts, lost=True, losses=job.losses
                    )
                )


def _signal_safe(call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)`` re-raising a stop signal's exception as itself.

    A signal handler that raises (the CLI's Interrupted on Ctrl-C/SIGTERM) while Ray's core
    worker is in C++ comes out as a SystemError wrapping it; unwrapped, the sweep stops the
    same way as with the local executor."""
    try:
        return call(*args, **kwargs)
    except SystemError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, BaseException) and not isinstance(cause, Exception):
            raise cause from None
        raise


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _loss_reason(exc: BaseException) -> str:
    """A short reason for a lost attempt, e.g. ``WorkerCrashedError: the worker died ...``."""
    text = " ".join(str(exc).split())
    match = re.search(r"(SIG[A-Z]+|exit code -?\d+|killed|out of memory|node .{0,40}died)", text)
    detail = match.group(1) if match else _first_line(exc)[:120]
    return f"{type(exc).__name__}: {detail}"
