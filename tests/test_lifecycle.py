"""The pieces of the sweep lifecycle, in process: the executor contract (run over every executor,
like the store's), the folder lock, stale run records, and the sweep reader on damaged runs.

The whole lifecycle under real faults, through the CLI, is tests/test_faults.py.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from velocity.errors import InputError, Interrupted, OutputError
from velocity.experiment import expand_experiment
from velocity.plugins import copy_name, source_of
from velocity.records import TIMING_METRICS
from velocity.simulation import run_simulation
from velocity.spec import RunSpec
from velocity.store import RunRecord, stale_reason
from velocity.store.liveness import STALE_AFTER_SECONDS, process_start
from velocity.sweepdir import LOCK_NAME, SweepLock, lock_holder, set_aside
from velocity.sweeps import (
    Executor,
    LocalExecutor,
    RunTask,
    SweepInterrupted,
    TaskResult,
    run_sweep,
)

PACED = """import os, signal, time
import numpy as np
from velocity import Param
from velocity.strategies import aggregator


@aggregator(
    "lifecycle_mean",
    params=(Param("delay", float, 0.0, "sleep a round", low=0), Param("die", int, 0, "die", low=0)),
    summary="mean, slowly, or a worker that dies",
)
def lifecycle_mean(updates, weights, *, delay, die):
    if die:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(delay)
    return (weights @ updates / weights.sum()).astype(np.float32)
"""

EXECUTORS: dict[str, Callable[[int], Executor]] = {
    "local": lambda workers: LocalExecutor(workers),
}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plugin") / "lifecycle_plugin.py"
    path.write_text(PACED, encoding="utf-8")
    return path


def _specs(plugin: Path, **strategies: str) -> list[RunSpec]:
    runs = [
        {"name": name, "strategy": f"lifecycle_mean:{args}"} for name, args in strategies.items()
    ]
    shared = {"model": "logreg", "rounds": 3, "num_clients": 4, "plugins": [str(plugin)]}
    return expand_experiment({"shared": shared, "runs": runs}, "test")


def _task(spec: RunSpec, timeout: float | None = None) -> RunTask:
    files = {copy_name(r): source_of(r) for r in spec.plugins}
    return RunTask(spec.name, spec.canonical(), files, timeout=timeout)


def _drain(executor: Executor) -> dict[str, TaskResult]:
    results: dict[str, TaskResult] = {}
    deadline = time.monotonic() + 180
    while executor.pending:
        for result in executor.wait(timeout=0.5):
            assert result.name not in results, "a task came back twice"
            results[result.name] = result
        assert time.monotonic() < deadline
    return results


def _untimed(rounds: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_METRICS} for r in rounds]


def _children() -> list[int]:
    """Live child processes of this test process (zombies are not alive), but
    multiprocessing's resource tracker, which lives as long as this process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        if (
            int(fields[1]) == os.getpid()
            and fields[0] != "Z"
            and b"resource_tracker" not in command
        ):
            found.append(int(entry))
    return found


@pytest.fixture(params=sorted(EXECUTORS))
def make_executor(request: pytest.FixtureRequest) -> Iterator[Callable[[int], Executor]]:
    made: list[Executor] = []

    def make(workers: int) -> Executor:
        made.append(EXECUTORS[request.param](workers))
        return made[-1]

    yield make
    for executor in made:
        executor.close(cancel=True)


pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc"), reason="counts child processes in /proc"
)


# ----------------------------------------------------------------------------- executor contract


def test_every_task_comes_back_once_and_a_lost_worker_costs_only_its_task(
    make_executor: Callable[[int], Executor], plugin: Path
) -> None:
    specs = _specs(plugin, a="delay=0", dies="die=1", b="delay=0", slow="delay=2")
    executor = make_executor(2)
    for spec in specs:
        executor.submit(_task(spec, timeout=1.0 if spec.name == "slow" else None))
    assert executor.pending == 4
    results = _drain(executor)
    assert sorted(results) == ["a", "b", "dies", "slow"] and executor.pending == 0
    for spec in (specs[0], specs[2]):  # untouched by the others' faults; what a run computes
        result = results[spec.name]
        assert result.error is None and result.attempts == 1 and result.payload is not None
        assert _untimed(result.payload["rounds"]) == _untimed(run_simulation(spec).rounds)
    dead = results["dies"]  # retried once in a fresh worker, then given up
    assert dead.payload is None and dead.lost and dead.attempts == 2
    assert dead.losses == ("killed by SIGKILL", "killed by SIGKILL")
    assert dead.error == "worker process died (killed by SIGKILL) on each of 2 attempts"
    slow = results["slow"]  # over its timeout: stopped, not retried
    assert slow.payload is None and slow.lost and slow.attempts == 1
    assert slow.error == "timed out: still running after 1 s (the run timeout)"
    executor.close()
    assert _children() == []


def test_a_run_that_raises_is_a_result_not_a_retry(
    make_executor: Callable[[int], Executor],
) -> None:
    shared = {"model": "logreg", "rounds": 2, "num_clients": 4, "strategy": "krum:f=3"}
    (spec,) = expand_experiment({"shared": shared}, "test")  # Krum needs more clients than 4
    executor = make_executor(1)
    executor.submit(_task(spec))
    (result,) = _drain(executor).values()
    assert result.attempts == 1 and not result.lost and result.payload is not None
    assert result.payload["summary"]["status"] == "failed"


def test_cancel_abandons_what_runs_never_starts_what_waits_and_leaves_no_process(
    make_executor: Callable[[int], Executor], plugin: Path
) -> None:
    executor = make_executor(2)
    for spec in _specs(plugin, **{f"r{i}": "delay=5" for i in range(4)}):
        executor.submit(_task(spec))
    deadline = time.monotonic() + 60
    while executor.running < 2:
        executor.wait(timeout=0.1)
        assert time.monotonic() < deadline
    started = time.monotonic()
    executor.close(cancel=True)
    assert time.monotonic() - started < 10  # not the 15 s the runs would take
    assert _children() == []
    executor.close(cancel=True)  # twice is harmless


def test_map_is_in_order_and_complete_even_when_a_worker_dies(
    make_executor: Callable[[int], Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VELOCITY_TEST_DRIVER", str(os.getpid()))  # workers inherit it
    executor = make_executor(2)
    assert list(executor.map(pow, [2, 3, 4, 5], [2, 2, 2, 2])) == [4, 9, 16, 25]
    # the item whose worker is lost is computed by the driver instead
    assert list(executor.map(_kills_a_worker, [0, 0, 1, 0])) == [0, 0, 1, 0]


def _kills_a_worker(die: int) -> int:
    if die and os.environ["VELOCITY_TEST_DRIVER"] != str(os.getpid()):
        os.kill(os.getpid(), signal.SIGKILL)
    return die


def test_a_failed_executor_start_is_bad_input() -> None:
    with pytest.raises(InputError, match="workers"):
        LocalExecutor(0)


# ----------------------------------------------------------------------------- the folder lock


def test_the_lock_is_exclusive_names_its_holder_and_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "sweep"
    with SweepLock(folder):
        assert (folder / LOCK_NAME).read_text().strip() == str(os.getpid())
        assert lock_holder(folder) == str(os.getpid())
        with pytest.raises(InputError, match=rf"another sweep \(pid {os.getpid()}\)") as caught:
            SweepLock(folder).acquire()
        assert str(folder) in str(caught.value)
    assert lock_holder(folder) is None
    assert not (tmp_path / "a").exists()  # it made the folders, they stayed empty: removed


def test_a_lock_file_left_by_a_killed_sweep_does_not_block(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text("999999\n")  # its holder is gone, so is its lock
    assert lock_holder(tmp_path) is None
    with SweepLock(tmp_path) as lock:
        assert lock.held
    assert tmp_path.is_dir()  # it did not make this folder: kept


def test_a_refused_sweep_writes_nothing(tmp_path: Path) -> None:
    specs = expand_experiment({"shared": {"model": "logreg", "rounds": 1, "num_clients": 4}}, "t")
    out = tmp_path / "busy"
    with SweepLock(out):
        before = sorted(p.name for p in out.iterdir())
        with pytest.raises(InputError, match="another sweep"):
            run_sweep(specs, out, parallel=1)
        assert sorted(p.name for p in out.iterdir()) == before


def test_set_aside_moves_folders_files_and_links_never_following_them(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{")
    assert set_aside(tmp_path, "run").name == "run.damaged-1"
    (tmp_path / "run").write_text("a file where the folder belongs")
    aside = set_aside(tmp_path, "run")
    assert aside.name == "run.damaged-2" and (aside / "run").is_file()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "run").symlink_to(target)
    aside = set_aside(tmp_path, "run", taken=["run.damaged-3"])
    assert aside.name == "run.damaged-4" and (aside / "run").is_symlink()
    assert target.is_dir() and not list(target.iterdir())


# ----------------------------------------------------------------------------- stale records


def _record(**fields: object) -> RunRecord:
    base = RunRecord(
        run_id="r",
        name="n",
        source=None,
        fingerprint="f",
        fingerprint_without_seed="g",
        seed=0,
        spec={},
        status="running",
        started_at="2025-01-01T00:00:00.000Z",
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_a_running_record_is_stale_when_its_process_is_gone() -> None:
    here = socket.gethostname()
    alive = _record(host=here, pid=os.getpid(), process_start=process_start())
    assert stale_reason(alive) is None  # old heartbeat, but its process is alive
    gone = _record(host=here, pid=2**22 + 12345, process_start=None)
    assert stale_reason(gone) == f"its process (pid {2**22 + 12345}) is gone"
    reused = _record(host=here, pid=os.getpid(), process_start=f"{process_start()}-earlier")
    assert stale_reason(reused) == f"its process (pid {os.getpid()}) is gone"  # pid reused
    assert stale_reason(replace(gone, status="failed")) is None  # finished: never stale


def test_a_record_from_another_host_is_stale_after_its_heartbeat_stops() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=STALE_AFTER_SECONDS + 60)
    quiet = _record(host="elsewhere", pid=1, heartbeat_at="2025-01-01T00:00:00.000Z")
    assert stale_reason(quiet, now=now) == "no heartbeat from elsewhere for 11 min"
    recent = replace(quiet, heartbeat_at=(now - timedelta(seconds=30)).isoformat())
    assert stale_reason(recent, now=now) is None
    legacy = _record()  # a record from before hosts were recorded: by its start time alone
    assert stale_reason(legacy, now=now) is not None


# ----------------------------------------------------------------------------- stopping early


def _tiny() -> list[RunSpec]:
    return expand_experiment(
        {"shared": {"model": "logreg", "rounds": 1, "num_clients": 4}, "matrix": {"seeds": 2}}, "t"
    )


def test_a_sweep_stopped_before_its_manifest_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import velocity.sweeps.runner as runner

    def interrupted(*args: object) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "collect_environment", interrupted)
    out = tmp_path / "new" / "sweep"
    with pytest.raises(SweepInterrupted) as caught:
        run_sweep(_tiny(), out, parallel=1)
    assert str(caught.value) == (
        "interrupted: 0 of 2 runs complete; nothing was written; start the sweep again"
    )
    assert caught.value.exit_code == 130 and isinstance(caught.value, KeyboardInterrupt)
    assert not (tmp_path / "new").exists()


def test_a_sweep_stopped_after_its_manifest_says_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import velocity.sweeps.runner as runner

    def terminated(*args: object) -> None:
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(runner, "write_config", terminated)
    out = tmp_path / "my sweep"
    with pytest.raises(SweepInterrupted) as caught:
        run_sweep(_tiny(), out, parallel=1)
    assert caught.value.exit_code == 143
    assert str(caught.value) == (
        f"interrupted: 0 of 2 runs complete; resume with velocity sweep --resume '{out}'"
    )
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


def test_a_full_disk_before_the_manifest_is_exit_2_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import velocity.sweeps.runner as runner

    def full(out_dir: Path, manifest: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out_dir / "manifest.json"))

    monkeypatch.setattr(runner, "write_manifest", full)
    out = tmp_path / "sweep"
    with pytest.raises(OutputError) as caught:
        run_sweep(_tiny(), out, parallel=1)
    assert caught.value.exit_code == 2
    assert str(caught.value) == f"{out}/manifest.json: No space left on device"
    assert not out.exists()
