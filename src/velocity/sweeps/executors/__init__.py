"""Executors: where a sweep's runs execute, behind one small interface (``base.Executor``).

``EXECUTORS`` names each one; :func:`open_executor` builds one by name. The Ray executor's
module (and Ray itself) is imported only when it is chosen.
"""

from __future__ import annotations

from collections.abc import Callable

from velocity.errors import InputError
from velocity.sweeps.executors.base import Executor, RunTask, TaskResult
from velocity.sweeps.executors.local import LocalExecutor

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RunTask", "TaskResult", "open_executor"]


def _local(
    parallel: int | None, address: str | None, run_cpus: float | None, run_gpus: float | None
) -> Executor | None:
    for flag, value in (
        ("--ray-address", address),
        ("--run-cpus", run_cpus),
        ("--run-gpus", run_gpus),
    ):
        if value is not None:
            raise InputError(f"{flag} needs --executor ray (the local executor takes --parallel)")
    return None  # the sweep starts (and owns) its local worker processes itself


def _ray(
    parallel: int | None, address: str | None, run_cpus: float | None, run_gpus: float | None
) -> Executor:
    from velocity.sweeps.executors.ray import RayExecutor

    return RayExecutor(
        parallel,
        address=address,
        run_cpus=1.0 if run_cpus is None else run_cpus,
        run_gpus=0.0 if run_gpus is None else run_gpus,
    )


EXECUTORS: dict[str, Callable[..., Executor | None]] = {"local": _local, "ray": _ray}
"""Executor name -> factory ``(parallel, address, run_cpus, run_gpus)``."""


def open_executor(
    kind: str,
    *,
    parallel: int | None = None,
    address: str | None = None,
    run_cpus: float | None = None,
    run_gpus: float | None = None,
) -> Executor | None:
    """The executor ``kind`` (``local`` or ``ray``), ready to take tasks; None for ``local``,
    whose worker processes the sweep starts itself. The caller closes what it gets."""
    factory = EXECUTORS.get(kind)
    if factory is None:
        allowed = ", ".join(sorted(EXECUTORS))
        raise InputError(f"--executor must be one of {allowed}, got {kind!r}")
    return factory(parallel, address, run_cpus, run_gpus)
