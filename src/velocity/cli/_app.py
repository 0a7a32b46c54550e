"""The Typer application object and the helpers every command module shares.

Command modules (``velocity.cli.run``, ``velocity.cli.sweep``, ...) register their commands on
``app``; they parse arguments, call the library and print. No logic of their own.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console

try:  # recent typer vendors its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

__all__ = [
    "app",
    "click_exceptions",
    "err_console",
    "out_console",
    "print_json",
    "stop_cleanly",
]

app = typer.Typer(
    name="velocity",
    help="Reproducible federated-learning experiments: "
    "simulate, sweep, compare, archive, reproduce.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out_console = Console()
err_console = Console(stderr=True)


def print_json(payload: Any) -> None:
    """Machine-readable output: JSON on stdout, nothing else there."""
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str, allow_nan=True))
    sys.stdout.write("\n")
    sys.stdout.flush()


@contextlib.contextmanager
def stop_cleanly() -> Iterator[None]:
    """Hand an interrupted sweep to ``main`` as what it is: typer turns any KeyboardInterrupt
    (a SweepInterrupted is one, for library users) into a silent exit 130, which would lose
    its one-line message and SIGTERM's exit code 143."""
    from velocity.errors import Interrupted

    try:
        yield
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            raise Interrupted(exc.signum, exc.message) from None
        raise Interrupted() from None
