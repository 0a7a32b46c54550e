"""Resource limits: how much memory one run, and how many runs one sweep, may ask for.

Sizes are estimated from the spec before anything is allocated and compared with these limits;
an estimate over a limit is a :class:`~velocity.errors.ResourceError` (one line naming the field,
the estimate and the limit, exit code 2). Each limit has an environment variable that overrides
it: ``VELOCITY_MAX_MEMORY`` (bytes, e.g. ``64G``; default: this machine's physical memory) and
``VELOCITY_MAX_RUNS`` (default 100,000 runs per sweep or experiment file).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from velocity.errors import InputError, ResourceError

__all__ = [
    "DEFAULT_MAX_RUNS",
    "FALLBACK_MAX_MEMORY",
    "MEMORY_ENV",
    "RUNS_ENV",
    "Estimate",
    "check_memory",
    "check_run_count",
    "format_bytes",
    "max_memory",
    "max_runs",
    "parse_size",
]

MEMORY_ENV = "VELOCITY_MAX_MEMORY"
RUNS_ENV = "VELOCITY_MAX_RUNS"
DEFAULT_MAX_RUNS = 100_000
FALLBACK_MAX_MEMORY = 16 * 2**30
"""The memory limit where the machine's physical memory cannot be read."""

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Estimate:
    """One part of what a run will allocate: the spec field that drives it, bytes, and what."""

    field: str
    bytes: int
    what: str


def parse_size(text: str, source: str = MEMORY_ENV) -> int:
    """Bytes from ``"64G"``, ``"512M"``, ``"1.5T"`` or a plain number (binary units)."""
    match = _SIZE.match(text)
    if match is None:
        raise InputError(f"{source} must be a size in bytes such as 64G or 512M, got {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(value) or value < 1:
        raise InputError(f"{source} must be a size in bytes such as 64G or 512M, got {text!r}")
    return int(value)


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def max_memory() -> int:
    """The memory one run may need: ``$VELOCITY_MAX_MEMORY``, else the physical memory."""
    text = os.environ.get(MEMORY_ENV)
    if text:
        return parse_size(text, MEMORY_ENV)
    return _physical_memory() or FALLBACK_MAX_MEMORY


def max_runs() -> int:
    """How many runs one sweep or experiment may expand to: ``$VELOCITY_MAX_RUNS`` or 100,000."""
    text = os.environ.get(RUNS_ENV)
    if not text:
        return DEFAULT_MAX_RUNS
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{RUNS_ENV} must be a whole number of runs >= 1, got {text!r}")
    return value


def format_bytes(count: float) -> str:
    """``1536`` -> ``1.5 KiB``: binary units, three significant digits."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check_memory(estimates: Sequence[Estimate], source: str | None = None) -> None:
    """Refuse a run whose estimated memory is over :func:`max_memory`, naming the field that
    drives the largest part of the estimate."""
    total = sum(e.bytes for e in estimates)
    limit = max_memory()
    if total <= limit:
        return
    largest = max(estimates, key=lambda e: e.bytes)
    where = f"{source}: " if source else ""
    raise ResourceError(
        f"{where}{largest.field}: the run would need about {format_bytes(total)} of memory "
        f"({largest.what}: {format_bytes(largest.bytes)}), over the limit of "
        f"{format_bytes(limit)}; set {MEMORY_ENV} (e.g. {MEMORY_ENV}=64G) to allow more"
    )


def check_run_count(count: int, field: str, detail: str, source: str | None = None) -> None:
    """Refuse an expansion into more runs than :func:`max_runs`, before any run is made."""
    limit = max_runs()
    if count <= limit:
        return
    where = f"{source}: " if source else ""
    raise ResourceError(
        f"{where}{field}: expands to {count} runs ({detail}), over the limit of {limit} runs; "
        f"set {RUNS_ENV} to allow more"
    )
