"""Exception types of velocity.

One root (`VelocityError`) and a few subclasses that carry context. The CLI turns an
`InputError` into one line on stderr and exit code 2; `RunError` is what a run records as its error;
`OutputError` is an output that could not be written (disk full); `Interrupted` is a stop signal.
"""

from __future__ import annotations

import signal

__all__ = [
    "ArchiveError",
    "InputError",
    "Interrupted",
    "OutputError",
    "ResourceError",
    "RunError",
    "SpecError",
    "VelocityError",
    "signal_name",
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


class OutputError(VelocityError):
    """An output file could not be written (disk full, quota, read-only folder): the message
    names the path; what was written before is whole (atomic writes). ``exit_code`` is 2 when
    nothing had run yet, 1 when part of the work is done (and can be resumed)."""

    def __init__(self, message: str, *, path: str | None = None, exit_code: int = 1) -> None:
        self.path = path
        self.exit_code = exit_code
        super().__init__(message)


class Interrupted(BaseException):
    """The process was asked to stop: SIGINT (Ctrl-C), SIGTERM or SIGHUP.

    Derives from BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the
    way swallows it; the CLI prints its message and exits with ``128 + signum`` (130, 143, 129).
    """

    def __init__(self, signum: int = signal.SIGINT, message: str | None = None) -> None:
        self.signum = int(signum)
        self.message = message or f"interrupted ({signal_name(self.signum)})"
        super().__init__(self.message)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; the number for a signal this platform does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
