"""``velocity strategies``: list the aggregation rules, pre-aggregators, server optimizers and
named presets, with parameters, defaults, papers and per-round costs.
"""

from __future__ import annotations

import typer

from velocity.cli._app import app, out_console, print_json

__all__ = ["strategies_command"]


@app.command("strategies")
def strategies_command(
    json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of text."),
) -> None:
    """List every aggregator, pre-aggregator, server optimizer and preset."""
    from rich.table import Table

    from velocity.registry import format_component
    from velocity.strategies.catalog import describe_strategies

    catalog = describe_strategies()
    if json_output:
        print_json(catalog)
        return
    table = Table(title="strategy stages (chain them: privacy > pre > aggregator > server)")
    table.add_column("family", no_wrap=True)
    table.add_column("name", no_wrap=True)
    for column in ("parameters (defaults)", "cost", "paper"):
        table.add_column(column)
    for entry in catalog["entries"]:
        params = ", ".join(
            f"{p['name']}=" + ("REQUIRED" if p["required"] else str(p["default"]).lower())
            for p in entry["params"]
        )
        table.add_row(entry["family"], entry["name"], params, entry["cost"], entry["paper"])
    out_console.print(table)
    presets = Table(title="presets")
    presets.add_column("name", no_wrap=True)
    for column in ("expands to", "client mu", "paper"):
        presets.add_column(column)
    for preset in catalog["presets"]:
        strategy = preset["strategy"]
        stages = [*strategy["pre"], strategy["aggregator"], strategy["server"]]
        chain = " > ".join(
            format_component(s["type"], {k: v for k, v in s.items() if k != "type"}) for s in stages
        )
        mu = "" if preset["client_mu"] is None else str(preset["client_mu"])
        presets.add_row(preset["name"], chain, mu, preset["paper"])
    out_console.print(presets)
