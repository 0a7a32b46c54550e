"""``velocity mcp``: serve the experiment toolbox to an agent over MCP (stdio), in one workspace."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from velocity.cli._app import app

__all__ = ["mcp_command"]


@app.command("mcp")
def mcp_command(
    workspace: Path = typer.Option(
        ...,
        "--workspace",
        metavar="DIR",
        help="The one folder the server reads and writes (created if missing).",
    ),
    max_rounds: int = typer.Option(200, "--max-rounds", help="Most rounds one run may have."),
    max_clients: int = typer.Option(100, "--max-clients", help="Most clients one run may have."),
    max_runs: int = typer.Option(
        64, "--max-runs", help="Most runs one sweep (or reproduction) may have."
    ),
    max_sweeps: int = typer.Option(
        1, "--max-sweeps", help="Most sweeps (and reproductions) running at once."
    ),
    max_parallel: int | None = typer.Option(
        None, "--max-parallel", help="Most worker processes per sweep (default: number of cores)."
    ),
    allow_plugins: bool = typer.Option(
        False,
        "--allow-plugins",
        help="Load plug-ins (user Python code) from inside the workspace; off by default.",
    ),
) -> None:
    """Serve velocity's tools to an MCP client on stdin/stdout (JSON-RPC), inside --workspace."""
    from velocity.mcp.server import require_sdk, serve
    from velocity.mcp.workspace import ServerLimits, Workspace

    require_sdk()
    limits = ServerLimits(
        max_rounds=max_rounds,
        max_clients=max_clients,
        max_runs=max_runs,
        max_sweeps=max_sweeps,
        max_parallel=max_parallel if max_parallel is not None else os.cpu_count() or 1,
    )
    serve(Workspace(workspace), limits, allow_plugins=allow_plugins)
