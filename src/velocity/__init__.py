"""velocity: reproducible federated-learning experiments.

Describe runs (:class:`RunSpec`), simulate them with real local training (:func:`run`), sweep
them in parallel (:func:`sweep`), compare them (:func:`leaderboard`), pack a sweep into one
archive (:func:`archive`) and re-run it to check every number (:func:`reproduce`). The CLI
(``velocity``) and the MCP server are thin shells over these functions; see docs/api.md.

Names are imported on first use, so ``import velocity`` (and ``velocity --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from velocity.errors import ArchiveError, InputError, RunError, SpecError, VelocityError

if TYPE_CHECKING:
    from velocity._version import __version__
    from velocity.api import archive, inspect, leaderboard, load, reproduce, run, sweep
    from velocity.registry import Param
    from velocity.simulation import RunResult
    from velocity.spec import RunSpec
    from velocity.sweeps import SweepResult

__all__ = [
    "ArchiveError",
    "InputError",
    "Param",
    "RunError",
    "RunResult",
    "RunSpec",
    "SpecError",
    "SweepResult",
    "VelocityError",
    "__version__",
    "archive",
    "inspect",
    "leaderboard",
    "load",
    "reproduce",
    "run",
    "sweep",
]

_LAZY = {
    "__version__": "velocity._version",
    "Param": "velocity.registry",
    "RunResult": "velocity.simulation",
    "RunSpec": "velocity.spec",
    "SweepResult": "velocity.sweeps",
    **dict.fromkeys(
        ("archive", "inspect", "leaderboard", "load", "reproduce", "run", "sweep"), "velocity.api"
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'velocity' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
