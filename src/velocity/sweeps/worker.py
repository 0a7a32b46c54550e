"""What an executor runs for one run: a spec (canonical JSON data) in, its records out.

Workers never write files or the run store: the sweep's driver writes every artifact, so a
worker that dies, is cancelled or runs on another machine leaves nothing half-written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from velocity.records import utc_now
from velocity.sweeps.environment import BLAS_THREAD_ENV

__all__ = ["execute_run", "init_worker"]


def init_worker() -> None:
    """Pin BLAS to one thread (the spawn environment already does; this is for Ray and alike)."""
    os.environ.update(BLAS_THREAD_ENV)


def execute_run(
    spec_data: Mapping[str, Any],
    files: Mapping[str, bytes] | None = None,
    data: Mapping[str, str | bytes] | None = None,
) -> dict[str, Any]:
    """Run one spec to the end: ``{"summary": summary.json content, "rounds": [...]}``.

    ``files`` are the plug-in sources the spec needs (loaded only if their sha256 is the one
    the spec records); ``data`` maps the sha256 of each data file the spec reads to the sweep
    folder's copy (a path, or its bytes when shipped to another machine), the only place it is
    read from (checked against that sha256). A run that
    cannot start on its data, or fails, is a recorded ``failed`` result.
    """
    from pathlib import Path

    from velocity.datafiles import isolated, provide, recorded_specs
    from velocity.plugins import provide_sources
    from velocity.simulation import RunResult, run_simulation
    from velocity.spec import RunSpec

    provide_sources(files or {}, origin="task")
    with isolated():  # the task's data copies, and nothing else, are what the run may read
        for sha256, copy in (data or {}).items():
            provide(sha256, copy if isinstance(copy, bytes) else Path(copy))
        with recorded_specs():
            spec = RunSpec.model_validate(dict(spec_data))
        started_at, t_start = utc_now(), time.perf_counter()
        try:
            result = run_simulation(spec)
        except Exception as exc:  # bad data for this spec (InputError) or a crash before round 1
            result = RunResult.failed(
                spec, f"{type(exc).__name__}: {exc}", started_at, time.perf_counter() - t_start
            )
    return {"summary": result.summary(), "rounds": result.rounds}
