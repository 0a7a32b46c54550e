"""Sweeps: run many RunSpecs on an executor and write the whole sweep folder.

``run_sweep`` validates everything first, hands each spec whole to one worker (BLAS pinned to one
thread), writes every run's artifacts atomically as it finishes and resumes an interrupted sweep
exactly. The folder format itself lives in ``velocity.sweepdir``.
"""

from __future__ import annotations

from velocity.sweeps.environment import BLAS_THREAD_ENV, collect_environment
from velocity.sweeps.executors import Executor, LocalExecutor, RunTask, TaskResult
from velocity.sweeps.runner import (
    RunOutcome,
    SweepEvent,
    SweepInterrupted,
    SweepResult,
    default_out_dir,
    run_sweep,
    validate_sweep_request,
)

__all__ = [
    "BLAS_THREAD_ENV",
    "Executor",
    "LocalExecutor",
    "RunOutcome",
    "RunTask",
    "SweepEvent",
    "SweepInterrupted",
    "SweepResult",
    "TaskResult",
    "collect_environment",
    "default_out_dir",
    "run_sweep",
    "validate_sweep_request",
]
