"""``velocity attacks``: list the attack registry with parameters, knowledge and paper.

A thin shell over :func:`velocity.attacks.describe_attacks`.
"""

from __future__ import annotations

from typing import Any

import typer

from velocity.cli._app import app, out_console, print_json

__all__ = ["attacks_command"]


def _format_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@app.command("attacks")
def attacks_command(
    json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of text."),
) -> None:
    """List the attacks: kind (model/data), omniscience, parameters with defaults, paper."""
    from rich.table import Table

    from velocity.attacks import describe_attacks

    rows = describe_attacks()
    if json_output:
        print_json(rows)
        return
    table = Table(title="attacks")
    table.add_column("name", no_wrap=True)
    for column in ("kind", "omniscient", "parameters", "records", "paper"):
        table.add_column(column)
    for row in rows:
        params = ", ".join(f"{k}={_format_default(v)}" for k, v in row["parameters"].items())
        table.add_row(
            row["name"],
            row["kind"],
            "yes" if row["omniscient"] else "no",
            params or "-",
            ", ".join(row["records"]) or "-",
            row["paper"],
        )
    out_console.print(table)
