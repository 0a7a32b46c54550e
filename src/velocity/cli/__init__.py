"""Command-line interface: ``velocity <command>``. Thin shells over the public library functions.

Exit codes: 0 done, 1 the work ran but its verdict is negative, 2 bad input (one line on stderr),
128 + the signal's number when stopped by SIGINT (130), SIGTERM (143) or SIGHUP (129).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

import typer

from velocity.cli._app import app, click_exceptions, finish_app
from velocity.errors import InputError, Interrupted, OutputError

# Importing a command module registers its commands on ``app``.
from velocity.cli import archive as _archive  # noqa: F401  isort: skip
from velocity.cli import attacks as _attacks  # noqa: F401  isort: skip
from velocity.cli import info as _info  # noqa: F401  isort: skip
from velocity.cli import mcp as _mcp  # noqa: F401  isort: skip
from velocity.cli import run as _run  # noqa: F401  isort: skip
from velocity.cli import strategies as _strategies  # noqa: F401  isort: skip
from velocity.cli import store as _store  # noqa: F401  isort: skip
from velocity.cli import sweep as _sweep  # noqa: F401  isort: skip

finish_app()

__all__ = ["app", "main"]


_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """While a command runs, SIGINT, SIGTERM and SIGHUP raise Interrupted in the main thread,
    so that every command cleans up (workers stopped, records finished) and exits 128 + signal
    with one line, instead of dying mid-write (SIGTERM's default) or printing a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in _STOP_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue  # started with it ignored (nohup, a background job): keep it so
        previous[signum] = signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns (and exits with) the process exit code."""
    try:
        with _stop_signals_raise():
            result = app(args=argv, standalone_mode=False, prog_name="velocity")
    except Interrupted as exc:
        print(exc.message, file=sys.stderr)
        code = exc.exit_code
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except BrokenPipeError:
        # The reader went away (``velocity runs | head``): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except click_exceptions.UsageError as exc:
        where = f" ({exc.ctx.command_path})" if exc.ctx is not None else ""
        if exc.format_message():  # empty when help was shown for a bare command
            print(f"error{where}: {exc.format_message()}", file=sys.stderr)
        code = 2
    except OSError as exc:
        # A path the user gave (an output folder, a file) that the system refused: one line.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        code = 2
    except typer.Abort:
        print("aborted", file=sys.stderr)
        code = 130
    except typer.Exit as exc:
        code = exc.exit_code
    except click_exceptions.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        code = exc.exit_code
    else:
        code = result if isinstance(result, int) else 0
    if argv is None:
        sys.exit(code)
    return code
