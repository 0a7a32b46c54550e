"""Fault injection: the sweep lifecycle survives interrupts, dead workers, rival sweeps, damaged
folders and a full disk, tried through the real CLI in subprocesses.

After every fault: the documented exit code, no traceback, no process of the sweep left behind
(every process started carries a marker in its environment, looked for in /proc), nothing
written outside --out (but the run store), and ``--resume`` gives results identical to an
uninterrupted sweep (every metric but the wall-clock ones, and the plots byte for byte).

Runs are tiny and slowed down by a plug-in aggregator (``paced_mean``, a sleep each round), so a
fault lands where it is meant to; the same plug-in kills its own worker to stand for a run that
always crashes its process. docs/reliability.md lists the fault classes and how to run this file.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from velocity.records import TIMING_METRICS

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the process table from /proc"
)

MARKER = "VELOCITY_FAULT_TEST"
RUNS = [f"s{seed}" for seed in range(6)]
TIMING_KEYS = (*TIMING_METRICS, "wall_seconds", "started_at", "finished_at")
PACED = '''"""Test plug-in: the weighted mean, slowed down; or a worker that kills itself."""
import os
import signal
import time

import numpy as np

from velocity import Param
from velocity.strategies import aggregator


@aggregator(
    "paced_mean",
    params=(
        Param("delay", float, 0.0, "seconds to sleep each round", low=0),
        Param("die_at", int, 0, "round at which the worker kills itself (0: never)", low=0),
    ),
    summary="Weighted mean, slowly; or a worker that dies",
    stateful=True,
)
def paced_mean(updates, weights, *, delay, die_at, state=None):
    state = {} if state is None else state
    state["round"] = state.get("round", 0) + 1
    if state["round"] == die_at:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(delay)
    return (weights @ updates / weights.sum()).astype(np.float32)
'''
EXPERIMENT = """[shared]
model = "logreg"
rounds = 4
num_clients = 4
plugins = ["paced.py"]
strategy = "paced_mean:delay=0.1"
""" + "".join(f'\n[[runs]]\nname = "{name}"\nseed = {seed}\n' for seed, name in enumerate(RUNS))
DIES = '\n[[runs]]\nname = "dies"\nstrategy = "paced_mean:delay=0.1,die_at=2"\n'
HANGS = '\n[[runs]]\nname = "dies"\nstrategy = "paced_mean:delay=60"\n'


# ----------------------------------------------------------------------------- the process table


def _processes_with(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (a zombie's environ is empty)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if f"{MARKER}={marker}".encode() in Path(f"/proc/{entry}/environ").read_bytes():
                found.append(int(entry))
    return found


def _children(pid: int, marker: str) -> list[int]:
    """The sweep's worker processes (children of ``pid``, not the resource tracker)."""
    workers = []
    for child in _processes_with(marker):
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            if (
                int(stat[1]) == pid
                and b"spawn_main" in command
                and b"resource_tracker" not in command
            ):
                workers.append(child)
    return workers


def _assert_no_process_left(marker: str) -> None:
    deadline = time.monotonic() + 15
    while _processes_with(marker):
        assert time.monotonic() < deadline, f"processes left behind: {_processes_with(marker)}"
        time.sleep(0.05)


# ----------------------------------------------------------------------------- a sweep's files


def _metric_text(path: Path) -> str:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    keep = [i for i, column in enumerate(rows[0]) if column not in TIMING_METRICS]
    return "\n".join(",".join(row[i] for i in keep) for row in rows)


def _strip(payload: Any) -> Any:
    if isinstance(payload, dict):
        return {k: _strip(v) for k, v in payload.items() if k not in TIMING_KEYS}
    if isinstance(payload, list):
        return [_strip(v) for v in payload]
    return payload


def results_of(out: Path, runs: list[str] | None = None) -> dict[str, Any]:
    """Everything a sweep computed, timings left out: what two sweeps must agree on."""
    found: dict[str, Any] = {}
    for name in runs or RUNS:
        found[f"{name}/config.json"] = json.loads((out / name / "config.json").read_text())
        found[f"{name}/rounds.csv"] = _metric_text(out / name / "rounds.csv")
        found[f"{name}/summary.json"] = _strip(
            json.loads((out / name / "summary.json").read_text())
        )
    if runs is None:
        found["comparison.json"] = _strip(json.loads((out / "comparison.json").read_text()))
        for plot in sorted((out / "plots").iterdir()):
            found[f"plots/{plot.name}"] = hashlib.sha256(plot.read_bytes()).hexdigest()
    return found


def _assert_whole(out: Path, *, temp_files_allowed: bool = False) -> None:
    """Every file written is whole: JSON parses, and no temp file is left (only SIGKILL may
    leave one, for --resume to remove)."""
    for path in out.rglob("*.json"):
        if ".damaged-" not in str(path.relative_to(out)):
            json.loads(path.read_text(encoding="utf-8"))
    if not temp_files_allowed:
        assert not list(out.rglob(".*.tmp")), list(out.rglob(".*.tmp"))


def _summaries(out: Path) -> int:
    return len(list(out.glob("*/summary.json")))


def _snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` but ``skip``: to show a sweep wrote nothing else."""
    found = {}
    for path in root.rglob("*"):
        if any(path == s or s in path.parents for s in skip):
            continue
        info = path.lstat()
        found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return found


# ----------------------------------------------------------------------------- the lab


@dataclass
class Lab:
    """One test's folders: the inputs, a home, a working folder, the store and --out."""

    root: Path
    marker: str
    mpl_dir: Path
    sweep_dir: Path | None = None  # --out, when not <root>/sweep
    unwatched: Path | None = None  # a folder the test itself writes in (a small disk)

    @property
    def out(self) -> Path:
        return self.sweep_dir or self.root / "sweep"

    @property
    def skipped(self) -> tuple[Path, ...]:
        return (self.out, self.store, *([self.unwatched] if self.unwatched else []))

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def experiment(self) -> Path:
        return self.root / "in" / "exp.toml"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            MARKER: self.marker,
            "HOME": str(self.root / "home"),
            "VELOCITY_STORE": str(self.store / "runs.db"),
            # matplotlib keeps a font cache; shared by all tests, outside what is watched
            "MPLCONFIGDIR": str(self.mpl_dir),
            "COLUMNS": "200",
        }

    def start(self, *args: str, **popen: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "velocity", *args],
            cwd=self.root / "cwd",
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, like a shell job
            **popen,
        )

    def sweep(self, *extra: str, out: Path | None = None) -> subprocess.Popen[str]:
        return self.start("sweep", str(self.experiment), "--out", str(out or self.out), *extra)

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        process = self.start(*args)
        stdout, stderr = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def resume(self, expected: int = 0) -> subprocess.CompletedProcess[str]:
        done = self.run("sweep", "--resume", str(self.out), "--parallel", "2", "--json")
        self.check(done.returncode, done.stderr, expected)
        _assert_whole(self.out)
        assert json.loads((self.out / "manifest.json").read_text())["complete"] is True
        return done

    def check(self, code: int, stderr: str, expected: int) -> None:
        """The checks after every fault, and after every resume."""
        assert code == expected, stderr
        assert "Traceback" not in stderr, stderr
        _assert_no_process_left(self.marker)
        assert _snapshot(self.root, self.skipped) == self.before, "wrote outside --out"

    def __post_init__(self) -> None:
        for folder in ("in", "home", "cwd", "store"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.root / "in" / "paced.py").write_text(PACED, encoding="utf-8")
        self.write_experiment()

    def write_experiment(self, runs: str = "") -> None:
        self.experiment.write_text(EXPERIMENT + runs, encoding="utf-8")
        self.before = _snapshot(self.root, self.skipped)


def _finish(process: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {process.communicate()[1]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture(scope="session")
def mpl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("matplotlib")


@pytest.fixture
def lab(tmp_path: Path, mpl_dir: Path) -> Iterator[Lab]:
    marker = uuid.uuid4().hex
    yield Lab(tmp_path, marker, mpl_dir)
    for pid in _processes_with(marker):  # a failed test must not leave its sweep running
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, mpl_dir: Path) -> Path:
    """The same sweep, never interrupted."""
    ref = Lab(tmp_path_factory.mktemp("reference"), uuid.uuid4().hex, mpl_dir)
    code, _, stderr = _finish(ref.sweep("--parallel", "2"))
    assert code == 0, stderr
    return ref.out


POINTS: dict[str, Callable[[Lab, subprocess.Popen[str]], bool]] = {
    # workers are being started (SIGINT is blocked in them until they ignore it)
    "start": lambda lab, p: len(_children(p.pid, lab.marker)) >= 1,
    "mid": lambda lab, p: _summaries(lab.out) >= 2,  # some runs done, others running
    "reports": lambda lab, p: _summaries(lab.out) == len(RUNS),  # the reports being written
}


# ----------------------------------------------------------------------------- 1. interrupts


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "target", "point"),
    [
        (signal.SIGINT, "group", "start"),  # Ctrl-C reaches the whole process group
        (signal.SIGINT, "group", "mid"),
        (signal.SIGINT, "group", "reports"),
        (signal.SIGTERM, "parent", "mid"),
        (signal.SIGTERM, "group", "start"),
        (signal.SIGHUP, "parent", "reports"),
    ],
)
def test_a_signal_stops_the_sweep_in_one_line_and_resume_finishes_it(
    lab: Lab, reference: Path, signum: int, target: str, point: str
) -> None:
    process = lab.sweep("--parallel", "2")
    _wait_for(lambda: POINTS[point](lab, process), process, point)
    if target == "group":
        os.killpg(process.pid, signum)
    else:
        os.kill(process.pid, signum)
    code, stdout, stderr = _finish(process, timeout=30)
    lab.check(code, stderr, 128 + signum)
    last = stderr.strip().splitlines()[-1]
    match = re.fullmatch(
        r"interrupted: (\d) of 6 runs complete; resume with velocity sweep --resume (.+)", last
    )
    assert match, stderr
    assert int(match.group(1)) == _summaries(lab.out) and match.group(2) == str(lab.out)
    assert stdout == ""  # no result table for a sweep that did not finish
    _assert_whole(lab.out)
    assert json.loads((lab.out / "manifest.json").read_text())["complete"] is False
    lab.resume()
    assert results_of(lab.out) == results_of(reference)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["mid", "reports"])
def test_a_sweep_killed_outright_takes_its_workers_with_it(
    lab: Lab, reference: Path, point: str
) -> None:
    process = lab.sweep("--parallel", "2")
    _wait_for(lambda: POINTS[point](lab, process), process, point)
    workers = _children(process.pid, lab.marker)
    assert workers
    process.send_signal(signal.SIGKILL)
    code, _, stderr = _finish(process, timeout=30)
    lab.check(code, stderr, -signal.SIGKILL)  # and the workers and resource tracker are gone
    _assert_whole(lab.out, temp_files_allowed=True)
    lab.resume()
    assert results_of(lab.out) == results_of(reference)


# ----------------------------------------------------------------------------- 2. dead workers


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "point"),
    [
        (signal.SIGKILL, "mid"),  # killed mid-run: that run is tried again in a fresh worker
        (signal.SIGKILL, "start"),  # killed while it starts up
        (signal.SIGTERM, "mid"),
        (signal.SIGINT, "mid"),  # a worker ignores SIGINT: the driver decides what stops
        (signal.SIGKILL, "reports"),  # killed while drawing a plot: drawn by the driver instead
    ],
)
def test_one_dead_worker_costs_only_its_own_run(
    lab: Lab, reference: Path, signum: int, point: str
) -> None:
    process = lab.sweep("--parallel", "2", "--json")
    _wait_for(lambda: POINTS[point](lab, process), process, point)
    workers: list[int] = []
    _wait_for(
        lambda: bool(workers.extend(_children(process.pid, lab.marker)) or workers),
        process,
        "a worker",
    )
    os.kill(workers[0], signum)
    code, stdout, stderr = _finish(process)
    lab.check(code, stderr, 0)
    records = json.loads(stdout)  # a list of run records, warnings on stderr
    assert {r["status"] for r in records} == {"complete"}
    if signum != signal.SIGINT and point == "mid":
        name = signal.Signals(signum).name
        assert f"its worker process died (killed by {name})" in stderr
    if signum == signal.SIGINT:
        assert "warning:" not in stderr
    _assert_whole(lab.out)
    assert results_of(lab.out) == results_of(reference)


@pytest.mark.slow
def test_a_run_that_kills_its_worker_twice_is_recorded_failed_and_the_rest_complete(
    lab: Lab, reference: Path
) -> None:
    lab.write_experiment(DIES)
    code, stdout, stderr = _finish(lab.sweep("--parallel", "2", "--json"))
    lab.check(code, stderr, 1)  # a failed run: the sweep's verdict is negative
    runs = _by_name(stdout)
    assert runs["dies"]["status"] == "failed"
    assert runs["dies"]["error"] == "worker process died (killed by SIGKILL) on each of 2 attempts"
    assert {runs[name]["status"] for name in RUNS} == {"complete"}
    summary = json.loads((lab.out / "dies" / "summary.json").read_text())
    assert summary["details"] == {"attempts": 2, "worker_losses": ["killed by SIGKILL"] * 2}
    assert results_of(lab.out, RUNS) == results_of(reference, RUNS)
    listed = json.loads(lab.run("runs", "--sweep", str(lab.out), "--json").stdout)
    assert {r["name"]: r["status"] for r in listed}["dies"] == "failed"
    # A recorded failure is a result: --resume keeps it and runs nothing.
    done = lab.resume(expected=1)
    assert _by_name(done.stdout)["dies"]["resumed"] is True


def test_a_run_past_its_timeout_is_stopped_alone_and_recorded_failed(lab: Lab) -> None:
    lab.write_experiment(HANGS)
    process = lab.sweep("--parallel", "2", "--run-timeout", "10", "--json")
    code, stdout, stderr = _finish(process)
    lab.check(code, stderr, 1)
    runs = _by_name(stdout)
    assert runs["dies"]["error"] == "timed out: still running after 10 s (the run timeout)"
    assert {runs[name]["status"] for name in RUNS} == {"complete"}


def _by_name(stdout: str) -> dict[str, dict[str, Any]]:
    """``velocity sweep --json``'s run records by run name."""
    return {record["name"]: record for record in json.loads(stdout)}


# ----------------------------------------------------------------------------- 3. rival sweeps


def _refused_for(stderr: str, folder: Path, pid: int) -> bool:
    return stderr.strip() == (
        f"error: {folder}: another sweep (pid {pid}) is writing this folder; wait for it to "
        "finish or stop it first"
    )


@pytest.mark.slow
def test_two_sweeps_started_together_on_one_folder_one_is_refused(
    lab: Lab, reference: Path
) -> None:
    first, second = lab.sweep("--parallel", "1"), lab.sweep("--parallel", "1")
    (code_a, _, err_a), (code_b, _, err_b) = _finish(first), _finish(second)
    lab.check(min(code_a, code_b), err_a + err_b, 0)
    assert sorted([code_a, code_b]) == [0, 2], err_a + err_b
    winner, refused = (first, err_b) if code_a == 0 else (second, err_a)
    assert _refused_for(refused, lab.out, winner.pid), refused
    _assert_whole(lab.out)
    assert results_of(lab.out) == results_of(reference)
    manifest = json.loads((lab.out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["resumes"] == []


@pytest.mark.slow
def test_a_running_sweep_refuses_a_resume_and_a_second_sweep(lab: Lab, reference: Path) -> None:
    process = lab.sweep("--parallel", "2")
    _wait_for(lambda: POINTS["mid"](lab, process), process, "mid")
    resume = lab.run("sweep", "--resume", str(lab.out))
    assert resume.returncode == 2 and _refused_for(resume.stderr, lab.out, process.pid)
    again = lab.run("sweep", str(lab.experiment), "--out", str(lab.out))
    assert again.returncode == 2 and _refused_for(again.stderr, lab.out, process.pid)
    code, _, stderr = _finish(process)
    lab.check(code, stderr, 0)
    assert results_of(lab.out) == results_of(reference)
    assert not (lab.out / ".sweep.lock").exists()  # released with the sweep


# ----------------------------------------------------------------------------- 4. damaged folders


OUTSIDE = "outside"  # a folder next to --out that a symbolic link in the sweep points to


def _rewrite_json(path: Path, change: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))), encoding="utf-8")


def _edit_config(path: Path) -> None:
    # A changed strategy with a recomputed fingerprint: consistent in itself, not the manifest's.
    config = json.loads(path.read_text())
    config["spec"]["strategy"]["aggregator"] = {"type": "median"}
    body = {k: v for k, v in config["spec"].items() if k != "name"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    config["fingerprint"] = hashlib.sha256(text.encode()).hexdigest()
    path.write_text(json.dumps(config), encoding="utf-8")


def _edit_csv_cell(path: Path) -> None:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    column = rows[0].index("test_accuracy")
    rows[1][column] = "0.999"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue())


def _replace_by_folder(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.mkdir()


def _replace_by_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_text("not a folder\n")


def _replace_by_link(path: Path, target: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.symlink_to(target)


Damage = Callable[[Path, Path], None]  # (the sweep folder, a folder outside it)
DAMAGE: dict[str, dict[str, Damage]] = {
    "unreadable": {
        "s0": lambda out, _: (out / "s0/summary.json").write_bytes(b'{"schema": "velo'),
        "s1": lambda out, _: (out / "s1/summary.json").write_bytes(b'{"name": "\xff\xfe"}'),
        "s2": lambda out, _: (out / "s2/summary.json").write_text("[]"),
        "s3": lambda out, _: (out / "s3/summary.json").write_text("{}"),
        "s4": lambda out, _: (out / "s4/rounds.csv").write_bytes(
            (out / "s4/rounds.csv").read_bytes()[:150]
        ),
        "s5": lambda out, _: (out / "s5/rounds.csv").write_bytes(b"round,test_accuracy\n1,\xff\n"),
    },
    "misplaced": {
        "s0": lambda out, _: _replace_by_folder(out / "s0/summary.json"),
        "s1": lambda out, _: _replace_by_folder(out / "s1/rounds.csv"),
        "s2": lambda out, _: _replace_by_file(out / "s2"),
        "s3": lambda out, outside: _replace_by_link(out / "s3", outside),
        "s4": lambda out, _: _replace_by_link(out / "s4/summary.json", out / "s5/summary.json"),
        "s5": lambda out, _: (out / "s5/summary.json").write_bytes(b""),
    },
    "plausible": {  # every file parses; they no longer agree with each other
        "s0": lambda out, _: _rewrite_json(
            out / "s0/summary.json", lambda s: {**s, "final": {**s["final"], "test_accuracy": 1.0}}
        ),
        "s1": lambda out, _: (out / "s1/rounds.csv").write_text(
            "\n".join((out / "s1/rounds.csv").read_text().splitlines()[:3]) + "\n"
        ),
        "s2": lambda out, _: shutil.copy(out / "s3/summary.json", out / "s2/summary.json"),
        "s3": lambda out, _: _edit_config(out / "s3/config.json"),
        "s4": lambda out, _: _rewrite_json(
            out / "s4/summary.json", lambda s: {**s, "status": "running"}
        ),
        "s5": lambda out, _: _edit_csv_cell(out / "s5/rounds.csv"),
    },
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_resume_sets_damaged_runs_aside_and_runs_them_again(
    lab: Lab, reference: Path, kind: str
) -> None:
    shutil.copytree(reference, lab.out)
    outside = lab.root / OUTSIDE
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    for damage in DAMAGE[kind].values():
        damage(lab.out, outside)
    lab.before = _snapshot(lab.root, lab.skipped)
    archived = lab.run("archive", str(lab.out), "-o", str(lab.root / "refused.zip"))
    assert archived.returncode == 2 and "is damaged" in archived.stderr, archived.stderr
    assert "Traceback" not in archived.stderr and not (lab.root / "refused.zip").exists()

    done = lab.resume()
    warned = {
        re.match(r"warning: run (\S+) is damaged \(", line).group(1)  # type: ignore[union-attr]
        for line in done.stderr.splitlines()
        if re.match(r"warning: run \S+ is damaged \(", line)
    }
    assert warned == set(DAMAGE[kind]), done.stderr  # each reported by name, on one line
    assert {r["name"] for r in json.loads(done.stdout) if r["damaged"]} == set(DAMAGE[kind])
    for name in DAMAGE[kind]:
        assert os.path.lexists(lab.out / f"{name}.damaged-1"), name
    assert results_of(lab.out) == results_of(reference)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]  # nothing went through links
    # the store holds each run once, complete: the re-run ones as new records
    listed = json.loads(lab.run("runs", "--sweep", str(lab.out), "--json").stdout)
    assert sorted(r["name"] for r in listed) == RUNS
    assert {r["status"] for r in listed} == {"complete"}
    # and the set-aside files are no part of an archive of the repaired sweep
    assert lab.run("archive", str(lab.out), "-o", str(lab.root / "ok.zip")).returncode == 0
    with __import__("zipfile").ZipFile(lab.root / "ok.zip") as archive:
        assert not [n for n in archive.namelist() if ".damaged-" in n]


def test_resume_repairs_what_the_reports_and_a_killed_writer_left(
    lab: Lab, reference: Path
) -> None:
    shutil.copytree(reference, lab.out)
    outside = lab.root / OUTSIDE
    outside.mkdir()
    _replace_by_folder(lab.out / "comparison.json")
    _replace_by_folder(lab.out / "report.html")
    _replace_by_link(lab.out / "plots", outside)
    (lab.out / ".manifest.json.k1ll3d.tmp").write_text("{")  # writers killed mid-write
    (lab.out / "s0" / ".summary.json.k1ll3d.tmp").write_text("{")
    (lab.out / "s1" / "config.json").unlink()  # not damage: the manifest holds it
    (lab.out / "s2" / "summary.json").unlink()  # not damage: an unfinished run
    lab.before = _snapshot(lab.root, lab.skipped)
    done = lab.resume()
    assert "is damaged" not in done.stderr
    for name in ("comparison.json", "report.html", "plots"):
        assert os.path.lexists(lab.out / f"{name}.damaged-1"), name
    assert not list(outside.iterdir())
    assert results_of(lab.out) == results_of(reference)

    # a stray plot temp file alone: removed, nothing else changes
    stray = lab.out / "plots" / ".accuracy.png.k1ll3d.tmp"
    stray.write_bytes(b"\x89PNG")
    lab.resume()
    assert not stray.exists()


@pytest.mark.parametrize(
    "damage",
    [b'{"schema": "velocity.sweep/2", "runs": [', b"\xff\xfe", b"[]", b'{"schema": "x"}'],
)
def test_a_damaged_manifest_is_one_line_and_nothing_changes(
    lab: Lab, reference: Path, damage: bytes
) -> None:
    shutil.copytree(reference, lab.out)
    (lab.out / "manifest.json").write_bytes(damage)
    before = _snapshot(lab.out, ())
    done = lab.run("sweep", "--resume", str(lab.out))
    lab.check(done.returncode, done.stderr, 2)
    assert len(done.stderr.strip().splitlines()) == 1 and str(lab.out) in done.stderr
    assert _snapshot(lab.out, ()) == before


# ----------------------------------------------------------------------------- disk full


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the disk up (the test's own file, next to --out)."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as handle:
        while True:
            handle.write(b"\0" * 4096)
    return filler


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
@pytest.mark.parametrize("point", ["before", "mid", "reports"])
def test_a_full_disk_is_one_line_naming_the_file_and_resume_finishes(
    lab: Lab, reference: Path, point: str
) -> None:
    with _tmpfs(lab.root / "disk", "8m") as disk:
        out = lab.sweep_dir = disk / "sweep"
        lab.unwatched = disk  # the test's filler goes there; what the sweep wrote is checked
        lab.before = _snapshot(lab.root, lab.skipped)
        if point == "before":
            filler = _fill(disk)
            process = lab.sweep("--parallel", "2", out=out)
        else:
            process = lab.sweep("--parallel", "2", out=out)
            _wait_for(
                lambda: _summaries(out) >= (2 if point == "mid" else len(RUNS)), process, point
            )
            filler = _fill(disk)
        code, _, stderr = _finish(process)
        lab.check(code, stderr, 2 if point == "before" else 1)  # 2: nothing had run yet
        last = stderr.strip().splitlines()[-1]
        assert re.fullmatch(rf"error: {re.escape(str(out))}/\S+: No space left on device.*", last)
        assert sorted(p.name for p in disk.iterdir()) == (
            ["filler"] if point == "before" else ["filler", "sweep"]
        )
        if point == "before":
            return  # nothing was written: the folder it made is gone again
        _assert_whole(out)
        filler.unlink()  # make room
        lab.resume()
        assert results_of(out) == results_of(reference)


def test_a_file_too_large_for_its_limit_is_one_line_and_resume_finishes(
    lab: Lab, reference: Path
) -> None:
    # The same failure without root: writes beyond RLIMIT_FSIZE fail (EFBIG) as on a full disk.
    import resource

    limit = 40_000  # the manifest and every run's files fit; a plot does not

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    process = lab.start(
        "sweep", str(lab.experiment), "--out", str(lab.out), "--parallel", "2",
        preexec_fn=small_files,
    )  # fmt: skip
    code, _, stderr = _finish(process)
    lab.check(code, stderr, 1)
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: {re.escape(str(lab.out))}/\S+: File too large; make room.*", last)
    _assert_whole(lab.out)
    lab.resume()
    assert results_of(lab.out) == results_of(reference)


# ----------------------------------------------------------------------------- bad input, early


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dataset", "csv:path=missing.csv"], "missing.csv"),
        (["--num-clients", "5000"], "client"),
        (
            ["--dataset", "breast_cancer", "--attacks", "targeted_label_flip", "--byzantine", "1"],
            "class",
        ),
    ],
)
def test_a_run_that_cannot_run_on_its_data_stops_the_sweep_before_anything_is_written(
    lab: Lab, flags: list[str], message: str
) -> None:
    done = lab.run(
        "sweep", "--strategies", "fedavg", "--seeds", "2", "--model", "logreg", "--rounds", "2",
        "--out", str(lab.out), *flags,
    )  # fmt: skip
    lab.check(done.returncode, done.stderr, 2)
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
    assert not lab.out.exists()


# ----------------------------------------------------------------------------- the run store


def _stored(lab: Lab, *args: str) -> list[dict[str, Any]]:
    done = lab.run("runs", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_run_killed_outright_is_shown_stale_and_an_interrupted_one_failed(lab: Lab) -> None:
    slow = ["run", "--plugin", str(lab.root / "in" / "paced.py"), "--model", "logreg"]
    slow += ["--strategy", "paced_mean:delay=0.5", "--rounds", "200", "--num-clients", "4"]
    for signum in (signal.SIGKILL, signal.SIGTERM):
        process = lab.start(*slow, "--name", signal.Signals(signum).name)
        _wait_for(lambda: (lab.store / "runs.db").exists(), process, "the store")
        _wait_for(lambda: any(r["status"] == "running" for r in _stored(lab)), process, "a record")
        running = [r for r in _stored(lab) if r["status"] == "running"]
        assert running[0]["stale_reason"] is None  # its process is alive
        process.send_signal(signum)
        code, _, stderr = _finish(process)
        lab.check(code, stderr, -9 if signum == signal.SIGKILL else 143)
    records = {r["name"]: r for r in _stored(lab)}
    assert records["SIGKILL"]["status"] == "stale"
    assert re.fullmatch(r"its process \(pid \d+\) is gone", records["SIGKILL"]["stale_reason"])
    assert records["SIGTERM"]["status"] == "failed"  # it stopped cleanly and said so
    shown = lab.run("show", "SIGKILL")
    assert "stale" in shown.stdout


@pytest.mark.slow
def test_a_sweep_folder_reused_after_rm_rf_lists_only_what_it_holds(lab: Lab) -> None:
    quick = lab.root / "in" / "quick.toml"
    quick.write_text(
        '[shared]\nmodel = "logreg"\nrounds = 2\nnum_clients = 4\n[matrix]\nseeds = 3\n'
    )
    assert lab.run("sweep", str(quick), "--out", str(lab.out)).returncode == 0
    shutil.rmtree(lab.out)
    quick.write_text('[shared]\nmodel = "logreg"\nrounds = 2\nnum_clients = 4\nseed = 7\n')
    assert lab.run("sweep", str(quick), "--out", str(lab.out)).returncode == 0
    listed = _stored(lab, "--sweep", str(lab.out))
    assert [r["seed"] for r in listed] == [7]
    assert sorted(r["seed"] for r in _stored(lab)) == [0, 1, 2, 7]  # the history is kept
