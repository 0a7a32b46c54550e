"""Executors: where a sweep's runs execute, behind one small interface (``base.Executor``)."""

from __future__ import annotations

from velocity.sweeps.executors.base import Executor, RunTask, TaskResult
from velocity.sweeps.executors.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "RunTask", "TaskResult"]
