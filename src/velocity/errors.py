"""Exception types of velocity.

One root (`VelocityError`) and a few subclasses that carry context. The CLI turns an
`InputError` into one line on stderr and exit code 2; `RunError` is what a run records as its error.
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "InputError",
    "ResourceError",
    "RunError",
    "SpecError",
    "VelocityError",
]


class VelocityError(Exception):
    """Root of every error velocity raises on purpose."""


class InputError(VelocityError):
    """Bad input from the user: a spec, a file, an option. Nothing was run (CLI exit code 2)."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class SpecError(InputError):
    """An invalid run/strategy/attack/dataset specification."""


class ArchiveError(InputError):
    """A corrupt, tampered or hostile archive (exit code 2, nothing run)."""


class ResourceError(InputError):
    """A run or a sweep would need more than a limit allows (memory, number of runs): refused
    from an estimate made before anything is allocated (CLI exit code 2)."""


class RunError(VelocityError):
    """A run could not continue (e.g. an aggregator's precondition fails in some round)."""
