"""The Typer application object and the helpers every command module shares.

Command modules (``velocity.cli.run``, ``velocity.cli.sweep``, ...) register their commands on
``app``; they parse arguments, call the library and print. No logic of their own.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

try:  # recent typer vendors its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

__all__ = [
    "app",
    "click_exceptions",
    "err_console",
    "finish_app",
    "out_console",
    "print_json",
    "stop_cleanly",
]

_BRACED = re.compile(r"^\{(?P<name>[^{}]+)\}(?P<rest>(\.\.\.)?)$")


def _tidy_help(command: Any) -> None:
    """Help text shows what was written: rich markup would eat ``[shared]`` or ``[[runs]]``, so
    every help string is escaped; a flag takes no value, so it shows no ``<bool>`` type; a
    repeatable option shows its element type (``<str>``), not ``<list[str]>``."""
    if command.help:
        command.help = escape(command.help)
    if command.short_help:
        command.short_help = escape(command.short_help)
    for param in command.params:
        if getattr(param, "help", None):
            param.help = escape(param.help)
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif getattr(param, "multiple", False) and param.metavar is None:
            shown = param.display_type(None)
            param.metavar = re.sub(r"^<list\[(.*)\]>$", r"<\1>", shown)


def _tidy_help_option(option: Any) -> Any:
    if option is not None and option.metavar is None:
        option.metavar = ""  # --help is a flag too
    return option


class _Command(TyperCommand):
    """A command whose help shows its words as written and its usage without braces."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy_help(self)

    def get_help_option(self, ctx: Any) -> Any:
        return _tidy_help_option(super().get_help_option(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        # Usage reads "velocity archive [OPTIONS] OUT_DIR", as Unix usage lines do.
        pieces = super().collect_usage_pieces(ctx)
        return [
            f"{m['name']}{m['rest']}" if (m := _BRACED.match(piece)) else piece for piece in pieces
        ]


class _Group(TyperGroup):
    """The ``velocity`` group, with the same help tidying as its commands."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy_help(self)

    def get_help_option(self, ctx: Any) -> Any:
        return _tidy_help_option(super().get_help_option(ctx))


app = typer.Typer(
    name="velocity",
    cls=_Group,
    help="Reproducible federated-learning experiments: "
    "simulate, sweep, compare, archive, reproduce.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def finish_app() -> None:
    """Give every registered command the help tidying of :class:`_Command` (called once the
    command modules have registered their commands)."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):  # typer's default: ours adds the tidying
            info.cls = _Command


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
