"""What ran a sweep: host, Python, numpy/BLAS, installed packages and git state (the manifest's
environment), and the thread settings every run executes under."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "BLAS_THREAD_ENV",
    "blas_env_for_children",
    "collect_environment",
    "cpu_model",
    "installed_packages",
]

BLAS_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "BLIS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
"""Set in every worker before numpy loads, so BLAS never starts extra threads."""


@contextlib.contextmanager
def blas_env_for_children() -> Iterator[None]:
    """Children inherit the environment at spawn: pin their BLAS before they import numpy."""
    saved = {key: os.environ.get(key) for key in BLAS_THREAD_ENV}
    os.environ.update(BLAS_THREAD_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def installed_packages() -> dict[str, str]:
    """Every installed distribution and its version, sorted by name."""
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[str(name)] = str(dist.version)
    return dict(sorted(packages.items()))


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if out.stdout.strip():
                return out.stdout.strip()
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _git_info(cwd: Path) -> dict[str, Any] | None:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}


def collect_environment(cwd: Path | None = None) -> dict[str, Any]:
    """Host, Python, numpy/BLAS, installed packages and git state, for the manifest."""
    import numpy as np
    from threadpoolctl import threadpool_info

    from velocity._version import __version__

    try:
        numpy_config = np.show_config(mode="dicts")
    except TypeError:  # numpy < 1.25 prints instead of returning
        numpy_config = None
    return {
        "velocity_version": __version__,
        "host": {
            "os": platform.platform(),
            "system": platform.system(),
            "machine": platform.machine(),
            "cpu_model": cpu_model(),
            "cores": os.cpu_count(),
            "memory_bytes": _memory_bytes(),
        },
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "numpy": {
            "version": np.__version__,
            "blas": _jsonable(threadpool_info()),
            "config": _jsonable(numpy_config),
        },
        "packages": installed_packages(),
        "git": _git_info(cwd or Path.cwd()),
    }
