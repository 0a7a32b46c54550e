"""``velocity version`` and ``velocity datasets``: what is installed and what data is available."""

from __future__ import annotations

import platform

import typer

from velocity.cli._app import app, out_console, print_json

__all__ = ["datasets_command", "root_options", "version_command"]

JSON_OPTION = typer.Option(False, "--json", help="Print JSON on stdout instead of text.")


def _print_version(json_output: bool) -> None:
    import numpy as np

    from velocity._version import __version__

    info = {"velocity": __version__, "python": platform.python_version(), "numpy": np.__version__}
    if json_output:
        print_json(info)
    else:
        out_console.print(
            f"velocity {__version__} (python {info['python']}, numpy {info['numpy']})",
            highlight=False,
        )


def _version_flag(value: bool) -> None:
    if value:
        _print_version(json_output=False)
        raise typer.Exit(0)


@app.callback()
def root_options(
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        expose_value=False,
        callback=_version_flag,
        help="Print velocity's version (as 'velocity version' does) and exit.",
    ),
) -> None:
    """Options of ``velocity`` itself (before any command)."""


@app.command("version")
def version_command(json_output: bool = JSON_OPTION) -> None:
    """Print velocity's version (and Python's and NumPy's)."""
    _print_version(json_output)


@app.command("datasets")
def datasets_command(json_output: bool = JSON_OPTION) -> None:
    """List the datasets: name, samples, features, classes (synthetic shown for 10 clients)."""
    from rich.table import Table

    from velocity.data import describe_datasets

    rows = describe_datasets()
    if json_output:
        print_json(rows)
        return
    table = Table(
        title="datasets",
        caption="synthetic's samples are for 10 clients: it generates data for each client of "
        "the run; user data is counted when a run loads it",
    )
    table.add_column("name")
    for column in ("samples", "features", "classes"):
        table.add_column(column, justify="right")
    table.add_column("description")
    for row in rows:
        counts = [
            "user data" if row[c] is None and c == "samples" else str(row[c] or "")
            for c in ("samples", "features", "classes")
        ]
        table.add_row(row["name"], *counts, row["description"])
    out_console.print(table)
