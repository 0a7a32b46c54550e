"""``velocity mcp``: the MCP server gives an agent what the CLI gives a user, inside one workspace.

The end-to-end tests start ``velocity mcp --workspace TMP`` as a subprocess and drive it with the
SDK's own stdio client; the others check the pieces (schemas, path confinement, limits, the
plug-in guard) in this process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from velocity.errors import InputError
from velocity.mcp import ServerLimits, Toolbox, Workspace
from velocity.spec import RunSpec

VELOCITY = Path(sys.executable).parent / "velocity"
TINY = {"rounds": 3, "num_clients": 5, "model": "logreg"}
OUTSIDE_MESSAGE = "is outside the workspace"

EVIL = """
from pathlib import Path
Path(__file__).with_name("EXECUTED").write_text("plug-in code ran")
"""

WS_PLUGIN = """
import numpy as np

from velocity.strategies import aggregator


@aggregator("ws_median", summary="median, from a plug-in in the workspace")
def ws_median(updates, weights):
    return np.median(updates, axis=0).astype(np.float32)
"""


# ----------------------------------------------------------------------------- in process


@pytest.fixture
def toolbox(tmp_path: Path) -> Iterator[Toolbox]:
    box = Toolbox(Workspace(tmp_path / "ws"), ServerLimits(max_rounds=50, max_parallel=2))
    try:
        yield box
    finally:
        box.close()


def test_the_run_tool_schema_is_generated_from_runspec_and_the_registries() -> None:
    from velocity.attacks import ATTACKS
    from velocity.data import DATASETS
    from velocity.mcp.schemas import run_spec_schema
    from velocity.strategies import AGGREGATORS, PRESETS

    schema = run_spec_schema()
    assert set(schema["properties"]) == {*RunSpec.model_fields, "attack"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["rounds"]["exclusiveMinimum"] == 0
    assert schema["properties"]["momentum"]["exclusiveMaximum"] == 1
    dataset_tables = schema["properties"]["dataset"]["anyOf"][1:]
    assert {t["properties"]["type"]["const"] for t in dataset_tables} == set(DATASETS.names())
    npz = next(t for t in dataset_tables if t["properties"]["type"]["const"] == "npz")
    assert npz["required"] == ["type", "path"]
    strategy_names = json.dumps(schema["properties"]["strategy"])
    for name in [*AGGREGATORS.names(), *PRESETS]:
        assert f'"{name}"' in strategy_names
    attack_tables = schema["properties"]["attacks"]["items"]["anyOf"][1:]
    assert {t["properties"]["type"]["const"] for t in attack_tables} == set(ATTACKS.names())
    krum = next(
        t for t in schema["properties"]["strategy"]["anyOf"][1:]
        if t.get("properties", {}).get("type", {}).get("const") == "krum"
    )  # fmt: skip
    assert AGGREGATORS.get("krum").param("f").low == krum["properties"]["f"].get("minimum")


def test_every_tool_schema_lists_exactly_its_arguments(toolbox: Toolbox) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    for tool in toolbox.tools.values():
        schema = tool.input_schema()
        jsonschema.Draft202012Validator.check_schema(schema)
        assert set(schema["properties"]) == set(tool.args.model_fields), tool.name
        assert schema["additionalProperties"] is False
    run_schema = toolbox.tools["run"].input_schema()
    good = {"spec": {"dataset": "wine", "strategy": "krum:f=1", "attack": "sign_flip"}}
    jsonschema.validate(good, run_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"spec": {"roundz": 3}}, run_schema)


def test_paths_that_leave_the_workspace_are_refused(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace.root / "inner").mkdir()
    (workspace.root / "link-out").symlink_to(outside)
    (workspace.root / "link-in").symlink_to(workspace.root / "inner")
    (workspace.root / "loop").symlink_to(workspace.root / "loop")
    for value in ("../outside", str(outside), "link-out", "link-out/x.zip", "inner/../../outside"):
        with pytest.raises(InputError, match=OUTSIDE_MESSAGE):
            workspace.path(value, "archive")
    for value in ("", "bad\x00name", 3, None):
        with pytest.raises(InputError, match="must be a path inside the workspace"):
            workspace.path(value, "archive")
    with pytest.raises(InputError, match=r"cannot resolve|outside"):
        workspace.path("loop", "archive")
    assert workspace.path("link-in/a.zip", "x") == workspace.root / "inner" / "a.zip"
    assert workspace.path("~/a", "x") == workspace.root / "~" / "a"
    assert workspace.path(str(workspace.root / "inner"), "x") == workspace.root / "inner"
    for name in ("../x", "/tmp/x", "a/b", ""):
        with pytest.raises(InputError, match="simple name"):
            workspace.new_folder("sweeps", name, "name")


def test_a_link_inside_a_folder_that_leaves_the_workspace_is_refused(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    (tmp_path / "secret.txt").write_text("secret")
    sweep = workspace.root / "sweeps" / "s"
    (sweep / "run").mkdir(parents=True)
    (sweep / "manifest.json").write_text("{}")
    (sweep / "run" / "inner.json").symlink_to(sweep / "manifest.json")
    assert workspace.sweep_folder("s") == sweep  # a link that stays inside is fine
    (sweep / "run" / "summary.json").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(InputError, match="symbolic link out of the workspace"):
        workspace.sweep_folder("s")


def test_limits_are_checked_and_name_the_server_option() -> None:
    limits = ServerLimits(max_rounds=10, max_clients=8, max_runs=2, max_parallel=3)
    limits.check_specs([RunSpec(rounds=10, num_clients=8)])
    with pytest.raises(InputError, match=r"rounds = 11 .* --max-rounds"):
        limits.check_specs([RunSpec(rounds=11, num_clients=8)])
    with pytest.raises(InputError, match=r"num_clients = 9 .* --max-clients"):
        limits.check_specs([RunSpec(rounds=2, num_clients=9)])
    with pytest.raises(InputError, match="--max-runs"):
        limits.check_specs([RunSpec(seed=s, rounds=1) for s in range(3)])
    assert limits.parallel(None) == 3
    with pytest.raises(InputError, match="--max-parallel"):
        limits.parallel(4)
    with pytest.raises(InputError, match="--max-sweeps must be an integer >= 1"):
        ServerLimits(max_sweeps=0)


def test_the_plugin_guard_confines_and_refuses_code(tmp_path: Path) -> None:
    from velocity.plugins import load_plugin, set_load_guard

    workspace = Workspace(tmp_path / "ws")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil_out.py").write_text(EVIL)
    (workspace.root / "evil_in.py").write_text(EVIL)
    (workspace.root / "evil_link.py").symlink_to(outside / "evil_out.py")
    try:
        set_load_guard(workspace.plugin_guard(allow=False))
        for ref in (str(outside / "evil_out.py"), str(workspace.root / "evil_link.py")):
            with pytest.raises(InputError, match=OUTSIDE_MESSAGE):
                load_plugin(ref)
        with pytest.raises(InputError, match="--allow-plugins"):
            load_plugin(str(workspace.root / "evil_in.py"))
        with pytest.raises(InputError, match="--allow-plugins"):
            load_plugin("json")
        with pytest.raises(InputError, match=OUTSIDE_MESSAGE):
            load_plugin({"name": "../outside/evil_out.py", "sha256": "0" * 64})
        set_load_guard(workspace.plugin_guard(allow=True))
        with pytest.raises(InputError, match=OUTSIDE_MESSAGE):
            load_plugin(str(outside / "evil_out.py"))
    finally:
        set_load_guard(None)
    assert not (outside / "EXECUTED").exists()
    assert not (workspace.root / "EXECUTED").exists()


def test_validate_spec_gives_the_canonical_spec_or_the_cli_error(
    toolbox: Toolbox, tmp_path: Path
) -> None:
    done = toolbox.call("validate_spec", {"spec": {"dataset": "wine", "rounds": 3}})
    expected = RunSpec(dataset="wine", rounds=3)
    assert done["runs"] == [
        {"name": "run", "fingerprint": expected.fingerprint, "spec": expected.canonical()}
    ]
    assert done["within_limits"] is True
    over = toolbox.call("validate_spec", {"spec": {"rounds": 51}, "check_data": False})
    assert over["within_limits"] is False and "--max-rounds" in over["limit_problem"]
    matrix = toolbox.call(
        "validate_spec",
        {"toml": '[shared]\nrounds = 2\n[matrix]\nstrategy = ["fedavg", "median"]\nseeds = 2'},
    )
    assert matrix["count"] == 4
    with pytest.raises(InputError, match=r"^spec: rounds: Input should be greater than 0"):
        toolbox.call("validate_spec", {"spec": {"rounds": 0}})
    with pytest.raises(InputError, match="exactly one of spec, toml or path"):
        toolbox.call("validate_spec", {"spec": {}, "toml": ""})
    with pytest.raises(InputError, match=r"argument 'spekc': unknown argument; did you mean"):
        toolbox.call("validate_spec", {"spekc": {}})
    with pytest.raises(InputError, match=r"argument 'check_data': Input should be a valid"):
        toolbox.call("validate_spec", {"spec": {}, "check_data": "yes"})

    # A file given by path fails with exactly the line 'velocity run FILE' prints.
    bad = toolbox.workspace.root / "bad.toml"
    bad.write_text('[shared]\ndataset = "digits"\nroundz = 3\n')
    with pytest.raises(InputError) as caught:
        toolbox.call("validate_spec", {"path": "bad.toml"})
    cli = subprocess.run(
        [str(VELOCITY), "run", str(bad), "--store", str(tmp_path / "cli.db")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 2
    assert cli.stderr.strip() == f"error: {caught.value}"
    assert "did you mean 'rounds'" in str(caught.value)


def test_list_components_covers_every_registry(toolbox: Toolbox) -> None:
    from velocity.attacks import ATTACKS
    from velocity.data import DATASETS, PARTITIONERS
    from velocity.models import MODELS
    from velocity.strategies import AGGREGATORS, PRESETS

    found = toolbox.call("list_components", {})
    assert [d["name"] for d in found["datasets"]] == DATASETS.names()
    assert [p["name"] for p in found["partitions"]] == PARTITIONERS.names()
    assert [m["name"] for m in found["models"]] == MODELS.names()
    assert [a["name"] for a in found["attacks"]] == ATTACKS.names()
    aggregators = [e["name"] for e in found["strategies"]["entries"] if e["family"] == "aggregator"]
    assert aggregators == AGGREGATORS.names()
    assert [p["name"] for p in found["strategies"]["presets"]] == list(PRESETS)
    digits = next(d for d in found["datasets"] if d["name"] == "digits")
    assert digits["samples"] == 1797 and digits["classes"] == 10
    alie = next(a for a in found["attacks"] if a["name"] == "alie")
    assert alie["paper"] and alie["kind"] == "model"
    assert toolbox.call("list_components", {"kind": "models"}).keys() == {"models"}


def test_a_failure_reaches_the_client_as_one_line_never_a_traceback(toolbox: Toolbox) -> None:
    pytest.importorskip("mcp")
    from mcp import Client

    from velocity.mcp.server import build_server

    def broken(args: Any, progress: Any) -> dict[str, Any]:
        raise RuntimeError("boom\nsecond line")

    tool = toolbox.tools["list_components"]
    toolbox.tools["list_components"] = dataclasses.replace(tool, handler=broken)

    async def session() -> None:
        async with Client(build_server(toolbox)) as client:
            failed = await client.call_tool("list_components", {})
            assert failed.is_error
            assert failed.content[0].text == "internal error in list_components (RuntimeError: boom"
            bad = await client.call_tool("validate_spec", {"spec": {"partition": "dirichlet:a=1"}})
            assert bad.is_error
            assert bad.content[0].text == (
                "spec: partition: partition 'dirichlet': unknown parameter 'a'; "
                "allowed: alpha, over"
            )

    asyncio.run(session())


# ----------------------------------------------------------------------------- over stdio


def _client_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VELOCITY_STORE", "MPLCONFIGDIR", "HF_HOME", "HF_HUB_OFFLINE")
    }
    env["HOME"] = str(home)
    env["PATH"] = f"{VELOCITY.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@asynccontextmanager
async def _server(
    workspace: Path, home: Path, *options: str, mode: str = "auto"
) -> AsyncIterator[Any]:
    """The server as a client launches it; its stderr (its log) goes to ``home/../server.log``
    and must hold no traceback."""
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(
        command=str(VELOCITY),
        args=["mcp", "--workspace", str(workspace), *options],
        env=_client_env(home),
    )
    log = home.parent / "server.log"
    with log.open("a", encoding="utf-8") as errlog:
        # The timeout only keeps a broken server from hanging the suite; it measures nothing.
        transport = stdio_client(params, errlog=errlog)
        async with Client(transport, read_timeout_seconds=600, mode=mode) as client:
            yield client
    assert "Traceback" not in log.read_text(encoding="utf-8"), log.read_text(encoding="utf-8")


async def _call(client: Any, tool: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        text = result.content[0].text
        assert "Traceback" not in text and "\n" not in text, text
        return True, text
    return False, result.structured_content


async def _ok(client: Any, tool: str, arguments: dict[str, Any]) -> Any:
    failed, value = await _call(client, tool, arguments)
    assert not failed, f"{tool}: {value}"
    return value


async def _refused(client: Any, tool: str, arguments: dict[str, Any], expected: str) -> str:
    failed, value = await _call(client, tool, arguments)
    assert failed, f"{tool} {arguments} was not refused: {value}"
    assert expected in value, f"{tool} {arguments}: {value}"
    return str(value)


async def _wait(client: Any, sweep: str) -> dict[str, Any]:
    deadline = time.monotonic() + 600  # a hang guard, not a speed check
    while True:
        status = await _ok(client, "sweep_status", {"sweep": sweep})
        if status["state"] != "running" or time.monotonic() > deadline:
            return dict(status)
        await asyncio.sleep(0.2)


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if not p.is_symlink()
    }


def _processes_in(folder: Path) -> list[str]:
    """Processes whose working folder is ``folder`` (the server chdirs there; its sweep
    workers inherit it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if Path(os.readlink(proc / "cwd")) == folder:
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_an_agent_runs_sweeps_archives_and_reproduces_and_never_leaves_the_workspace(
    tmp_path: Path,
) -> None:
    pytest.importorskip("mcp")
    ws, home, outside = tmp_path / "ws", tmp_path / "home", tmp_path / "outside"
    for folder in (ws, home, outside):
        folder.mkdir()
    (ws / "ws_plugin.py").write_text(WS_PLUGIN)
    (ws / "evil_in.py").write_text(EVIL)
    (ws / "bad.toml").write_text("[shared]\nroundz = 3\n")
    asyncio.run(_agent_session(ws, home, outside))
    assert not (ws / "EXECUTED").exists() and not (outside / "EXECUTED").exists()
    assert list(home.iterdir()) == [], "the server wrote into HOME"
    assert {p.name for p in ws.iterdir()} >= {"runs.db", "sweeps", "reproductions"}


async def _agent_session(ws: Path, home: Path, outside: Path) -> None:
    async with _server(ws, home, "--max-parallel", "2", "--max-rounds", "50") as client:
        listed = await client.list_tools()
        assert {t.name for t in listed.tools} >= {
            "list_components", "validate_spec", "run", "sweep", "sweep_status", "leaderboard",
            "show_run", "archive", "inspect_archive", "reproduce",
        }  # fmt: skip
        run_tool = next(t for t in listed.tools if t.name == "run")
        assert set(run_tool.input_schema["properties"]["spec"]["properties"]) >= set(
            RunSpec.model_fields
        )
        assert all(t.annotations.destructive_hint is False for t in listed.tools)

        # Bad input: the CLI's one line, naming the field.
        message = await _refused(client, "validate_spec", {"spec": {"rounds": 0}}, "rounds")
        assert message.startswith("spec: rounds:")
        await _refused(client, "validate_spec", {"path": "bad.toml"}, "did you mean 'rounds'")
        await _refused(client, "run", {"spec": {"rounds": 51}}, "--max-rounds")
        await _refused(client, "run", {"spec": {"plugins": ["ws_plugin.py"]}}, "--allow-plugins")
        await _refused(client, "run", {"spec": {"plugins": ["evil_in.py"]}}, "--allow-plugins")
        await _refused(client, "show_run", {"run": "nothing"}, "no run store in this workspace")
        with pytest.raises(Exception, match="unknown tool"):
            await client.call_tool("nope", {})

        # One 3-round run, recorded in the workspace's own store.
        seen: list[tuple[float, float | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            seen.append((done, total))

        result = await client.call_tool(
            "run", {"spec": {**TINY, "name": "r3", "seed": 7}}, progress_callback=on_progress
        )
        run = result.structured_content
        assert not result.is_error and run["status"] == "complete" and len(run["rounds"]) == 3
        assert seen == [(1, 3), (2, 3), (3, 3)]  # one progress notification per round
        assert json.loads(result.content[0].text) == run
        shown = await _ok(client, "show_run", {"run": run["run_id"]})
        assert shown["name"] == "r3" and shown["fingerprint"] == run["fingerprint"]

        # A 4-run sweep in the background, polled to the end.
        sweep = {"strategies": ["fedavg", "median"], "seeds": 2, "overrides": TINY, "name": "s1"}
        started = await _ok(client, "sweep", sweep)
        assert started == {
            "id": "s1", "folder": "sweeps/s1", "state": "running", "runs": 4, "parallel": 2,
            "resumed": False,
        }  # fmt: skip
        status = await _wait(client, "s1")
        assert status["state"] == "finished" and status["exit_code"] == 0, status
        assert status["done"] == 4 and all(
            r["status"] == "complete" for r in status["runs"].values()
        )
        await _refused(client, "sweep", sweep, "exists and is not empty")

        board = await _ok(client, "leaderboard", {"sweep": "s1"})
        assert [row["runs"] for row in board["rows"]] == [2, 2]
        everything = await _ok(client, "leaderboard", {})
        assert sum(row["runs"] for row in everything["rows"]) == 5  # the sweep's 4 and r3
        await _refused(client, "leaderboard", {"metric": "speed"}, "--metric must be one of")

        resources = await client.list_resources()
        uris = {str(r.uri) for r in resources.resources}
        assert uris == {"velocity://sweeps/s1/comparison.md", "velocity://sweeps/s1/report.html"}
        read = await client.read_resource("velocity://sweeps/s1/comparison.md")
        assert read.contents[0].text == (ws / "sweeps/s1/comparison.md").read_text()

        # Archive, inspect, reproduce with check.
        archived = await _ok(client, "archive", {"sweep": "s1", "author": "A. Gent"})
        assert archived["archive"] == "sweeps/s1.crate.zip" and len(archived["runs"]) == 4
        await _refused(client, "archive", {"sweep": "s1"}, "never overwrites a file")
        info = await _ok(client, "inspect_archive", {"archive": "sweeps/s1.crate.zip"})
        assert info["verified"] is True and info["authors"] == ["A. Gent"]
        reproduced = await _ok(client, "reproduce", {"archive": "sweeps/s1.crate.zip"})
        assert reproduced["verdict"] == "reproduced" and reproduced["exit_code"] == 0
        assert reproduced["reproduced"] is True
        assert reproduced["out_dir"].startswith("reproductions/")
        assert reproduced["counts"]["ok"] == 4

        await _every_path_tool_refuses_the_outside(client, ws, outside)


async def _every_path_tool_refuses_the_outside(client: Any, ws: Path, outside: Path) -> None:
    # Real targets outside: what a tool would read or overwrite if a path got through.
    shutil.copytree(ws / "sweeps/s1", outside / "sweep")
    shutil.copy(ws / "sweeps/s1.crate.zip", outside / "x.crate.zip")
    (outside / "experiment.toml").write_text("[shared]\nrounds = 2\n")
    (outside / "evil.py").write_text(EVIL)
    np.savez(
        outside / "data.npz", X=np.random.default_rng(0).normal(size=(40, 3)), y=np.arange(40) % 2
    )
    (outside / "out").mkdir()
    # Links inside the workspace that point out of it.
    (ws / "sweeps/linked").symlink_to(outside / "sweep")
    (ws / "sweeps/out-link").symlink_to(outside / "out")
    (ws / "out-link").symlink_to(outside / "out")
    (ws / "link.crate.zip").symlink_to(outside / "x.crate.zip")
    (ws / "exp-link.toml").symlink_to(outside / "experiment.toml")
    (ws / "data-link.npz").symlink_to(outside / "data.npz")
    (ws / "evil-link.py").symlink_to(outside / "evil.py")
    # A real sweep folder inside whose files link out.
    shutil.copytree(ws / "sweeps/s1", ws / "sweeps/inner")
    summary = next((ws / "sweeps/inner").glob("*/summary.json"))
    summary.unlink()
    summary.symlink_to(next((outside / "sweep").glob("*/summary.json")))
    before = _snapshot(outside)

    def three(relative: str, link: str) -> list[str]:
        return [f"../outside/{relative}", str(outside / relative), link]

    cases: list[tuple[str, dict[str, Any]]] = []
    for value in three("experiment.toml", "exp-link.toml"):
        cases += [("validate_spec", {"path": value}), ("sweep", {"experiment": value})]
    for value in three("data.npz", "data-link.npz"):
        spec = {**TINY, "dataset": f"npz:path={value}"}
        cases += [
            ("validate_spec", {"spec": spec}),
            ("validate_spec", {"toml": f'[shared]\ndataset = "npz:path={value}"'}),
            ("run", {"spec": spec}),
            ("sweep", {"runs": [spec]}),
            ("sweep", {"strategies": ["fedavg"], "overrides": spec}),
        ]
    for value in three("evil.py", "evil-link.py"):
        spec = {**TINY, "plugins": [value]}
        cases += [("validate_spec", {"spec": spec}), ("run", {"spec": spec})]
        cases += [("sweep", {"runs": [spec]})]
    for value in three("sweep", "sweeps/linked"):
        cases += [
            ("sweep", {"resume": value}),
            ("sweep_status", {"sweep": value}),
            ("cancel_sweep", {"sweep": value}),
            ("leaderboard", {"sweep": value}),
            ("archive", {"sweep": value}),
        ]
    cases += [("sweep_status", {"sweep": "linked"}), ("leaderboard", {"sweep": "linked"})]
    for value in three("out/new.crate.zip", "out-link/new.crate.zip"):
        cases += [("archive", {"sweep": "s1", "output": value})]
    for value in three("x.crate.zip", "link.crate.zip"):
        cases += [("inspect_archive", {"archive": value}), ("reproduce", {"archive": value})]
    for value in three("out/re", "out-link/re"):
        cases += [("reproduce", {"archive": "sweeps/s1.crate.zip", "out": value})]
    for tool, arguments in cases:
        await _refused(client, tool, arguments, OUTSIDE_MESSAGE)
    # A new sweep's folder is a plain name under sweeps/, never a path.
    for name in ("../outside/new", str(outside / "new")):
        await _refused(client, "sweep", {"strategies": ["fedavg"], "name": name}, "simple name")
    await _refused(client, "sweep", {"strategies": ["fedavg"], "name": "out-link"}, OUTSIDE_MESSAGE)
    for tool in ("sweep_status", "leaderboard", "archive"):
        await _refused(client, tool, {"sweep": "inner"}, "symbolic link out of the workspace")
    for uri in (
        "velocity://sweeps/../outside/sweep/comparison.md",
        f"velocity://sweeps/{outside}/sweep/comparison.md",
        "velocity://sweeps/linked/comparison.md",
        "velocity://sweeps/inner/comparison.md",
        "file:///etc/passwd",
    ):
        with pytest.raises(Exception) as caught:
            await client.read_resource(uri)
        assert "Traceback" not in str(caught.value)
    assert _snapshot(outside) == before, "something outside the workspace changed"
    assert not (outside / "EXECUTED").exists()
    assert sorted(p.name for p in (outside / "out").iterdir()) == []


@pytest.mark.slow
def test_sweeps_are_bounded_cancelled_and_stopped_with_the_server(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    if not Path("/proc/self/cwd").exists():
        pytest.skip("needs /proc to find the server's processes")
    ws, home = tmp_path / "ws", tmp_path / "home"
    home.mkdir()
    long = {"strategies": ["fedavg", "median"], "seeds": 2, "overrides": {"rounds": 200}}

    async def session() -> None:
        async with _server(ws, home, "--max-parallel", "2") as client:
            await _refused(client, "sweep", {**long, "seeds": 40}, "--max-runs")
            short = {**long, "overrides": {"rounds": 40}}
            await _ok(client, "sweep", {**short, "name": "first"})
            await _refused(client, "sweep", {**long, "name": "second"}, "--max-sweeps")
            cancelled = await _ok(client, "cancel_sweep", {"sweep": "first"})
            assert cancelled["state"] == "cancelled"
            status = await _ok(client, "sweep_status", {})
            assert [s["state"] for s in status["sweeps"]] == ["cancelled"]
            await _ok(client, "sweep", {**long, "name": "second"})
            deadline = time.monotonic() + 600  # a hang guard, not a speed check
            while (await _ok(client, "sweep_status", {"sweep": "second"}))["running"] == 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            assert len(_processes_in(ws.resolve())) >= 3  # the server and its two workers
        # The client closed the server's stdin while "second" ran.

    asyncio.run(session())
    # multiprocessing's resource tracker leaves on its own once the server is gone: give it
    # time (a hang guard, not a speed check).
    deadline = time.monotonic() + 60
    while _processes_in(ws.resolve()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_in(ws.resolve()) == [], "the server or a sweep worker outlived the session"
    for name in ("first", "second"):
        manifest = json.loads((ws / "sweeps" / name / "manifest.json").read_text())
        assert manifest["complete"] is False

    async def later() -> None:
        async with _server(ws, home) as client:
            status = await _ok(client, "sweep_status", {"sweep": "second"})
            assert status["state"] == "incomplete" and "resume" in status["note"]
            resumed = await _ok(client, "sweep", {"resume": "first"})
            assert resumed["resumed"] is True and resumed["runs"] == 4
            finished = await _wait(client, "first")
            assert finished["state"] == "finished" and finished["exit_code"] == 0
            assert finished["done"] == 4

    asyncio.run(later())


@pytest.mark.slow
def test_plugins_load_only_from_the_workspace_when_allowed(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    ws, home, outside = tmp_path / "ws", tmp_path / "home", tmp_path / "outside"
    for folder in (ws, home, outside):
        folder.mkdir()
    (ws / "ws_plugin.py").write_text(WS_PLUGIN)
    (outside / "evil.py").write_text(EVIL)
    (ws / "evil-link.py").symlink_to(outside / "evil.py")

    async def session() -> None:
        async with _server(ws, home, "--allow-plugins") as client:
            spec = {**TINY, "strategy": "ws_median", "plugins": ["ws_plugin.py"]}
            run = await _ok(client, "run", {"spec": spec})
            assert run["status"] == "complete"
            assert run["spec"]["plugins"][0]["name"] == "ws_plugin.py"
            for value in (str(outside / "evil.py"), "../outside/evil.py", "evil-link.py"):
                await _refused(
                    client, "run", {"spec": {**TINY, "plugins": [value]}}, OUTSIDE_MESSAGE
                )
            sweep = {"runs": [spec, {**TINY, "name": "plain"}], "name": "p"}
            await _ok(client, "sweep", sweep)
            assert (await _wait(client, "p"))["exit_code"] == 0
            await _ok(client, "archive", {"sweep": "p"})
            reproduced = await _ok(client, "reproduce", {"archive": "sweeps/p.crate.zip"})
            assert reproduced["verdict"] == "reproduced"

    async def without_plugins() -> None:
        # The sweep and the archive carry the plug-in's code: a server without --allow-plugins
        # refuses to load it, in one line.
        async with _server(ws, home) as client:
            for tool, arguments in (
                ("leaderboard", {"sweep": "p"}),
                ("sweep_status", {"sweep": "p"}),
                ("reproduce", {"archive": "sweeps/p.crate.zip"}),
            ):
                await _refused(client, tool, arguments, "config.json: plugins: plug-in")
            info = await _ok(client, "inspect_archive", {"archive": "sweeps/p.crate.zip"})
            assert info["verified"] is False and "--allow-plugins" in info["problem"]

    asyncio.run(session())
    asyncio.run(without_plugins())
    assert not (outside / "EXECUTED").exists()


def test_clients_of_the_handshake_era_are_served_too(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    ws, home = tmp_path / "ws", tmp_path / "home"
    home.mkdir()

    async def session() -> None:
        async with _server(ws, home, mode="legacy") as client:
            from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

            assert client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
            assert len((await client.list_tools()).tools) == 11
            await _refused(client, "validate_spec", {"spec": {"lr": 0}}, "spec: lr: Input should")
            valid = await _ok(client, "validate_spec", {"spec": {"lr": 0.1}, "check_data": False})
            assert valid["runs"][0]["spec"]["lr"] == 0.1

    asyncio.run(session())


def test_without_the_sdk_velocity_mcp_exits_2_with_the_install_hint(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['mcp'] = None\n"
        "from velocity.cli import main\n"
        f"sys.exit(main(['mcp', '--workspace', {str(tmp_path / 'ws')!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: velocity mcp needs the MCP Python SDK: pip install 'velocity-fl[mcp]'"
    )
    assert not (tmp_path / "ws").exists()
