"""``velocity mcp``: the experiment toolbox as a Model Context Protocol server for agents.

A thin shell over the public API, like the CLI: the same validation, one-line errors and files,
confined to one workspace folder and bounded by server limits (docs/mcp.md). The SDK is the
optional ``mcp`` extra and is imported only by ``velocity.mcp.server``.
"""

from __future__ import annotations

from velocity.mcp.tools import RESOURCE_FILES, Toolbox, ToolDef
from velocity.mcp.workspace import ServerLimits, Workspace

__all__ = ["RESOURCE_FILES", "ServerLimits", "ToolDef", "Toolbox", "Workspace"]
