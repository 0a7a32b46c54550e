"""The MCP server on stdio: the toolbox's tools and resources, served with the official ``mcp``
SDK (the only module importing it). Bad input comes back as an error result carrying the CLI's
one-line message; a bug as one line too, its traceback going to the server's stderr only.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from velocity.errors import InputError
from velocity.mcp.tools import Toolbox
from velocity.mcp.workspace import ServerLimits, Workspace

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server

__all__ = ["INSTALL_HINT", "build_server", "require_sdk", "serve"]

INSTALL_HINT = "pip install 'velocity-fl[mcp]'"
_log = logging.getLogger("velocity.mcp")
_RESOURCE_NOT_FOUND = -32002  # the MCP specification's code for an unknown resource


def require_sdk() -> None:
    """InputError with the install hint when the MCP SDK is missing."""
    try:
        for module in ("mcp.server.lowlevel", "mcp.server.stdio", "mcp_types"):
            importlib.import_module(module)
    except ImportError:
        raise InputError(f"velocity mcp needs the MCP Python SDK: {INSTALL_HINT}") from None


def _instructions(toolbox: Toolbox) -> str:
    limits = toolbox.limits
    return (
        "velocity: reproducible federated-learning experiments. Start with list_components; "
        "check a spec with validate_spec; run one run with run; start a sweep with sweep and "
        "poll sweep_status; compare with leaderboard; archive, inspect_archive and reproduce "
        f"close the loop. Every path is inside the workspace {toolbox.workspace.root} "
        "(relative paths are relative to it). Limits: "
        f"{limits.max_rounds} rounds and {limits.max_clients} clients per run, "
        f"{limits.max_runs} runs per sweep, {limits.max_sweeps} sweep(s) at once, "
        f"{limits.max_parallel} worker processes."
    )


def _result_text(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=True, allow_nan=False, default=str)


def build_server(toolbox: Toolbox) -> Server[Any]:
    """The low-level SDK server answering with ``toolbox``: tool schemas are the toolbox's own
    (generated from RunSpec and the registries), so the SDK validates nothing on its own."""
    import anyio
    import anyio.from_thread
    import anyio.to_thread
    import mcp_types as types
    from mcp.server.lowlevel import Server
    from mcp.shared.exceptions import MCPError

    from velocity._version import __version__

    # One foreground run at a time (a run trains in this process); the other tools share the
    # default thread pool. Sweeps run in their own threads and processes.
    limiters = {"run": anyio.CapacityLimiter(1)}

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        tools = [
            types.Tool(
                name=tool.name,
                description=tool.description,
                input_schema=tool.input_schema(),
                annotations=types.ToolAnnotations(
                    read_only_hint=tool.read_only,
                    destructive_hint=False,
                    idempotent_hint=tool.idempotent,
                    open_world_hint=False,
                ),
            )
            for tool in toolbox.tools.values()
        ]
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        name = params.name
        if name not in toolbox.tools:
            raise MCPError(
                code=types.INVALID_PARAMS,
                message=f"unknown tool {name!r}; tools: {', '.join(toolbox.tools)}",
            )

        def progress(done: float, total: float | None, message: str) -> None:
            try:
                anyio.from_thread.run(ctx.session.report_progress, done, total, message)
            except Exception:  # progress is best effort: the client may not have asked for it
                _log.debug("progress not delivered", exc_info=True)

        work = functools.partial(toolbox.call, name, params.arguments, progress)
        try:
            result = await anyio.to_thread.run_sync(work, limiter=limiters.get(name))
        except InputError as exc:
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=str(exc))], is_error=True
            )
        except Exception as exc:
            _log.exception("tool %s failed", name)
            message = f"internal error in {name} ({type(exc).__name__}: {exc})".splitlines()[0]
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=message)], is_error=True
            )
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=_result_text(result))],
            structured_content=result,
        )

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        found = await anyio.to_thread.run_sync(toolbox.resources)
        return types.ListResourcesResult(
            resources=[
                types.Resource(
                    uri=r["uri"],
                    name=r["name"],
                    mime_type=r["mime_type"],
                    description=r["description"],
                )
                for r in found
            ]
        )

    async def list_templates(ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    uri_template=t["uri_template"],
                    name=t["name"],
                    mime_type=t["mime_type"],
                    description=t["description"],
                )
                for t in toolbox.resource_templates()
            ]
        )

    async def read_resource(
        ctx: Any, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        try:
            text, mime = await anyio.to_thread.run_sync(toolbox.read_resource, uri)
        except InputError as exc:
            missing = "has no" in str(exc) or "not a sweep folder" in str(exc)
            code = _RESOURCE_NOT_FOUND if missing else types.INVALID_PARAMS
            raise MCPError(code=code, message=str(exc)) from None
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type=mime, text=text)]
        )

    return Server(
        "velocity",
        version=__version__,
        title="velocity federated-learning experiments",
        instructions=_instructions(toolbox),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
    )


def _confine_caches(workspace: Workspace) -> None:
    """Caches the libraries write (matplotlib's fonts, Hugging Face's datasets) go inside the
    workspace, and Hugging Face stays offline, unless the operator set these already."""
    cache = workspace.root / ".cache"
    os.environ.setdefault("MPLCONFIGDIR", str(cache / "matplotlib"))
    os.environ.setdefault("HF_HOME", str(cache / "huggingface"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


async def _serve(toolbox: Toolbox) -> None:
    import anyio
    from mcp.server.stdio import stdio_server

    server = build_server(toolbox)

    async def stop_on_signal(scope: anyio.CancelScope) -> None:
        # SIGTERM (a client closing us) ends the loop like end of input, so sweeps are cancelled.
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                scope.cancel()
                return

    async with anyio.create_task_group() as group:
        if sys.platform != "win32":
            group.start_soon(stop_on_signal, group.cancel_scope)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
        group.cancel_scope.cancel()


def serve(workspace: Workspace, limits: ServerLimits, *, allow_plugins: bool = False) -> None:
    """Serve MCP on stdin/stdout until the client closes it (or SIGTERM), then cancel the
    running sweeps and wait for their workers to stop."""
    import anyio

    require_sdk()
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="velocity mcp: %(message)s"
    )
    # Relative paths inside specs (data files, plug-ins) are read by the library against the
    # current folder: make it the workspace, for this process and the sweep workers it starts.
    os.chdir(workspace.root)
    _confine_caches(workspace)
    toolbox = Toolbox(workspace, limits, allow_plugins=allow_plugins)
    try:
        anyio.run(_serve, toolbox)
    finally:
        toolbox.close()
