"""The Ray executor: a real Ray head on loopback, the same sweep as the local executor (every
metric and the archives' run records identical), a worker killed mid-run, and bad options."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from velocity.cli import main
from velocity.records import TIMING_METRICS

SWEEP_ARGS = ["--strategies", "fedavg,median", "--seeds", "3", "--rounds", "2"]
SWEEP_ARGS += ["--num-clients", "4", "--model", "logreg"]
AUTHOR = ["--author", "Ada Lovelace"]
CLOCK_FIELDS = ("started_at", "finished_at", "wall_seconds")


@pytest.fixture(autouse=True)
def _private_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOCITY_STORE", str(tmp_path / "runs.db"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _process_group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A Ray head on 127.0.0.1 with 2 CPUs, in a process group of its own, stopped (the whole
    group) at the end. Yields (address, process group id)."""
    pytest.importorskip("ray")
    port = _free_port()
    temp = Path("/tmp") / f"velocity-ray-{os.getpid()}-{port}"  # Ray's socket paths are short
    log = tmp_path_factory.mktemp("ray") / "head.log"
    command = [_ray_cli(), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1"]
    command += ["--num-cpus=2", "--include-dashboard=false", "--block", f"--temp-dir={temp}"]
    # Loopback only: no token (Ray's default token lives in ~/.ray, outside the test's folders).
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    with log.open("wb") as out:
        head = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and head.poll() is None:
            if b"Ray runtime started" in log.read_bytes():
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the Ray head did not start: {log.read_text(errors='replace')[-2000:]}")
        yield f"127.0.0.1:{port}", head.pid
    finally:
        group = _process_group_pids(head.pid)
        workers = [pid for pid in _children_of(group) if pid not in group]  # own sessions
        with _suppress():
            os.killpg(head.pid, signal.SIGTERM)
        for _ in range(40):  # the group (raylet, GCS, workers) stops; what lingers is killed
            if head.poll() is not None:
                break
            time.sleep(0.25)
        with _suppress():
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(10)
        for pid in workers:  # Ray workers exit once their raylet is gone; do not wait for it
            with _suppress():
                os.kill(pid, signal.SIGKILL)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
        subprocess.run(["rm", "-rf", str(temp)], check=False)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)  # type: ignore[arg-type]


def _metrics_text(data: bytes) -> str:
    """rounds.csv without the wall-clock columns: compared byte for byte."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    keep = [i for i, c in enumerate(rows[0]) if c not in TIMING_METRICS]
    return "\n".join(",".join(row[i] for i in keep) for row in rows)


def _summary_text(data: bytes) -> str:
    """summary.json without clock readings, canonical JSON."""
    summary: dict[str, Any] = json.loads(data)
    for field in CLOCK_FIELDS:
        summary.pop(field, None)
    for part in ("final", "best", "totals"):
        for metric in TIMING_METRICS:
            summary.get(part, {}).pop(metric, None)
    return json.dumps(summary, sort_keys=True)


def _run_records(archive: Path) -> dict[str, str]:
    """Every run's config, metrics and summary in the archive, clock readings left out."""
    records = {}
    with zipfile.ZipFile(archive) as handle:
        for name in handle.namelist():
            data = handle.read(name)
            if name.endswith("/rounds.csv"):
                records[name] = _metrics_text(data)
            elif name.endswith("/summary.json"):
                records[name] = _summary_text(data)
            elif name.endswith("/config.json"):
                records[name] = data.decode("utf-8")
    return records


@pytest.mark.slow
def test_ray_sweep_is_identical_to_the_local_one(ray_head: tuple[str, int], tmp_path: Path) -> None:
    address, _ = ray_head
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(["sweep", *SWEEP_ARGS, "--out", str(local), "--parallel", "2"]) == 0
    assert main(["sweep", *SWEEP_ARGS, "--out", str(remote), "--executor", "ray",
                 "--ray-address", address]) == 0  # fmt: skip
    runs = sorted(p.parent.name for p in local.glob("*/rounds.csv"))
    assert len(runs) == 6
    assert runs == sorted(p.parent.name for p in remote.glob("*/rounds.csv"))
    for run in runs:
        for kind, text in (("rounds.csv", _metrics_text), ("summary.json", _summary_text)):
            assert text((local / run / kind).read_bytes()) == text(
                (remote / run / kind).read_bytes()
            )
        assert (local / run / "config.json").read_bytes() == (
            remote / run / "config.json"
        ).read_bytes()
    archives = []
    for folder in (local, remote):
        target = tmp_path / f"{folder.name}.crate.zip"
        assert main(["archive", str(folder), "-o", str(target), *AUTHOR]) == 0
        archives.append(_run_records(target))
    assert len(archives[0]) == 18
    assert archives[0] == archives[1]


def _children_of(parents: list[int]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if _parent(int(entry.name)) in parents:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _run_task_pids(pgid: int) -> list[int]:
    """Workers of the test's head (children of its raylet; each in a session of its own)
    executing a run now: their title is ``ray::_run_task``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(b"ray::_run_task"):
                continue
            if os.getpgid(_parent(int(entry.name))) == pgid:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _kill_first_run(pgid: int, killed: list[int], stop: threading.Event) -> None:
    while not stop.is_set() and not killed:
        pids = _run_task_pids(pgid)
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        time.sleep(0.05)


def _long_specs() -> list[Any]:
    from velocity.experiment import expand_experiment

    shared = {"model": "mlp:hidden=32", "rounds": 8, "num_clients": 6, "dataset": "digits"}
    runs = [{"name": f"long__s{seed}", "seed": seed} for seed in range(2)]
    return expand_experiment({"shared": shared, "runs": runs}, "test")


@pytest.mark.slow
@pytest.mark.parametrize("attempts", [2, 1])
def test_a_killed_worker_is_retried_or_recorded_failed(
    ray_head: tuple[str, int], tmp_path: Path, attempts: int
) -> None:
    from velocity.sweeps import run_sweep
    from velocity.sweeps.executors.ray import RayExecutor

    address, pgid = ray_head
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_run, args=(pgid, killed, stop), daemon=True)
    with RayExecutor(2, address=address, max_attempts=attempts) as executor:
        killer.start()
        try:
            result = run_sweep(_long_specs(), tmp_path / "out", executor=executor, command=["t"])
        finally:
            stop.set()
            killer.join()
    assert killed, "no run was seen running"
    statuses = {name: outcome.status for name, outcome in result.results.items()}
    assert set(statuses) == {"long__s0", "long__s1"}  # every run accounted for
    summaries = {
        n: json.loads((tmp_path / "out" / n / "summary.json").read_text()) for n in statuses
    }
    if attempts == 2:
        assert set(statuses.values()) == {"complete"}
        assert len(result.warnings) == 1
        assert "ran again in a fresh worker" in result.warnings[0]
    else:
        failed = [n for n, s in statuses.items() if s == "failed"]
        assert len(failed) == 1
        error = summaries[failed[0]]["error"]
        assert "Ray worker died" in error and "its one attempt" in error
        assert summaries[failed[0]]["details"]["attempts"] == 1
        assert result.exit_code == 1


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "spark"], "--executor must be one of local, ray, got 'spark'"),
        (["--executor", "ray", "--ray-address", "nowhere"], "--ray-address must be 'auto' or"),
        (["--executor", "ray", "--ray-address", "h:70000"], "port must be 1-65535"),
        (["--executor", "ray", "--run-cpus", "0"], "--run-cpus must be a number > 0, got 0.0"),
        (["--executor", "ray", "--run-gpus", "-1"], "--run-gpus must be a number >= 0"),
        (["--ray-address", "auto"], "--ray-address needs --executor ray"),
        (["--run-gpus", "1"], "--run-gpus needs --executor ray"),
    ],
)
def test_bad_executor_options_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["sweep", *SWEEP_ARGS, "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_missing_ray_is_one_line_with_the_install_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "out"
    assert main(["sweep", *SWEEP_ARGS, "--out", str(out), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'velocity-fl[ray]'" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_help_does_not_import_ray() -> None:
    code = "import sys\nfrom velocity.cli import main\ntry:\n    main(['sweep', '--help'])\n"
    code += "except SystemExit:\n    pass\nassert 'ray' not in sys.modules, 'ray imported'\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "--ray-address" in done.stdout


@pytest.mark.slow
def test_a_run_past_its_timeout_is_stopped_and_recorded_failed(
    ray_head: tuple[str, int], tmp_path: Path
) -> None:
    from velocity.sweeps import run_sweep
    from velocity.sweeps.executors.ray import RayExecutor

    address, pgid = ray_head
    with RayExecutor(2, address=address) as executor:
        result = run_sweep(
            _long_specs(), tmp_path / "out", executor=executor, command=["t"], run_timeout=0.2
        )
    assert {o.status for o in result.results.values()} == {"failed"}
    for name in result.results:
        summary = json.loads((tmp_path / "out" / name / "summary.json").read_text())
        assert summary["error"].startswith("timed out: still running after 0.2 s")
    for _ in range(40):  # the stopped tasks' workers were killed
        if not _run_task_pids(pgid):
            break
        time.sleep(0.25)
    assert not _run_task_pids(pgid)


@pytest.mark.slow
def test_the_python_api_takes_the_executor(ray_head: tuple[str, int], tmp_path: Path) -> None:
    import velocity
    from velocity.errors import InputError

    specs = _long_specs()
    with pytest.raises(InputError, match="--executor must be one of local, ray"):
        velocity.sweep(specs, out=tmp_path / "bad", executor="spark", store=False)
    assert not (tmp_path / "bad").exists()
    result = velocity.sweep(
        specs, out=tmp_path / "out", executor="ray", ray_address=ray_head[0], store=False
    )
    assert result.exit_code == 0 and len(result.results) == 2
