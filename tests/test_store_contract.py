"""The run-store contract, run over every backend; plus SQLite concurrency and migrations."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from velocity.store import (
    RecordFinishedError,
    RunStart,
    RunStore,
    SQLiteRunStore,
    StoreError,
    default_store_path,
    open_store,
)
from velocity.store.sqlite import MIGRATIONS, SCHEMA_VERSION

BACKENDS: dict[str, Callable[[Path], RunStore]] = {
    "sqlite": lambda folder: SQLiteRunStore(folder / "runs.db"),
}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunStore]:
    backend = BACKENDS[request.param](tmp_path)
    yield backend
    backend.close()


def _start(name: str = "a", source: str | None = "/sweeps/one", seed: int = 0) -> RunStart:
    return RunStart(
        name=name,
        source=source,
        fingerprint=f"fp-{name}-{seed}",
        fingerprint_without_seed=f"fp-{name}",
        seed=seed,
        spec={"name": name, "seed": seed, "lr": 0.1},
        started_at="2025-01-01T00:00:00.000Z",
    )


def _finish(store: RunStore, run_id: str, status: str = "complete", accuracy: float = 0.9) -> None:
    store.finish_run(
        run_id,
        status=status,
        error=None if status != "failed" else "RunError: boom",
        finished_at="2025-01-01T00:01:00.000Z",
        wall_seconds=1.5,
        final={"test_accuracy": accuracy, "test_loss": math.nan},
        best={"test_accuracy": accuracy},
        totals={"bytes": 1000},
        rounds=[{"round": 1, "test_accuracy": accuracy, "test_loss": math.inf}],
    )


def test_a_started_run_is_running_until_finished(store: RunStore) -> None:
    run_id = store.start_run(_start())
    record = store.get_run(run_id)
    assert record.status == "running" and not record.finished
    assert record.spec == {"name": "a", "seed": 0, "lr": 0.1}
    _finish(store, run_id, "diverged", 0.5)
    record = store.get_run(run_id)
    assert record.status == "diverged" and record.finished
    assert record.final["test_accuracy"] == 0.5
    assert math.isnan(record.final["test_loss"])  # non-finite values survive the round trip
    assert record.rounds == [{"round": 1, "test_accuracy": 0.5, "test_loss": math.inf}]
    assert record.rounds_completed == 1 and record.wall_seconds == 1.5


def test_finished_records_are_immutable(store: RunStore) -> None:
    run_id = store.start_run(_start())
    _finish(store, run_id)
    with pytest.raises(RecordFinishedError):
        _finish(store, run_id, "failed")
    store.heartbeat(run_id, "2030-01-01T00:00:00.000Z")  # changes nothing on a finished record
    record = store.get_run(run_id)
    assert record.status == "complete" and record.heartbeat_at != "2030-01-01T00:00:00.000Z"


def test_a_finished_run_started_again_is_a_new_record(store: RunStore) -> None:
    # A damaged run re-run by --resume: the old record stays as it was, the re-run is new.
    first = store.start_run(_start())
    _finish(store, first, "failed")
    again = store.start_run(_start())
    assert again != first
    _finish(store, again, "complete")
    assert store.get_run(first).status == "failed"
    assert [r.status for r in store.list_runs(source="/sweeps/one")] == ["failed", "complete"]


def test_records_of_another_sweep_in_the_same_folder_are_apart(store: RunStore) -> None:
    # The folder was rm -rf'd and a new sweep (a new sweep_id) started in it.
    old = store.start_run(replace(_start(), sweep_id="old"))
    new = store.start_run(replace(_start(), sweep_id="new"))
    assert old != new  # the old one is still running, yet the new sweep's run is its own record
    records = {r.run_id: r.sweep_id for r in store.list_runs(source="/sweeps/one")}
    assert records == {old: "old", new: "new"}


def test_the_recording_process_and_its_heartbeat_are_kept(store: RunStore) -> None:
    start = replace(_start(), host="node-1", pid=4242, process_start="boot:77")
    run_id = store.start_run(start)
    record = store.get_run(run_id)
    assert (record.host, record.pid, record.process_start) == ("node-1", 4242, "boot:77")
    assert record.heartbeat_at == start.started_at
    store.heartbeat(run_id, "2025-01-01T00:05:00.000Z")
    assert store.get_run(run_id).heartbeat_at == "2025-01-01T00:05:00.000Z"


def test_restarting_a_running_record_keeps_its_id(store: RunStore) -> None:
    first = store.start_run(_start())
    again = store.start_run(_start())
    assert first == again
    assert len(store.list_runs()) == 1


def test_runs_without_source_are_always_new_records(store: RunStore) -> None:
    ids = {store.start_run(_start(source=None)) for _ in range(3)}
    assert len(ids) == 3


def test_finish_needs_a_final_status_and_a_known_id(store: RunStore) -> None:
    run_id = store.start_run(_start())
    with pytest.raises(StoreError, match="finish status"):
        _finish(store, run_id, "running")
    with pytest.raises(StoreError, match="no stored run"):
        _finish(store, "nope")
    with pytest.raises(StoreError, match="no stored run"):
        store.get_run("nope")


def test_list_filters_and_order(store: RunStore) -> None:
    a = store.start_run(_start("a", "/s1"))
    store.start_run(_start("b", "/s2"))
    _finish(store, a)
    assert [r.name for r in store.list_runs()] == ["a", "b"]
    assert [r.name for r in store.list_runs(source="/s2")] == ["b"]
    assert [r.name for r in store.list_runs(status="complete")] == ["a"]
    assert store.list_runs()[0].rounds is None
    assert store.list_runs(with_rounds=True)[0].rounds == [
        {"round": 1, "test_accuracy": 0.9, "test_loss": math.inf}
    ]


def test_reads_are_copies(store: RunStore) -> None:
    run_id = store.start_run(_start())
    record = store.get_run(run_id)
    record.spec["lr"] = 99
    record.final["x"] = 1
    fresh = store.get_run(run_id)
    assert fresh.spec["lr"] == 0.1 and "x" not in fresh.final


def test_find_run_by_id_prefix_and_name(store: RunStore) -> None:
    run_id = store.start_run(_start("alpha"))
    assert store.find_run(run_id).run_id == run_id
    assert store.find_run(run_id[:6]).run_id == run_id
    assert store.find_run("alpha").run_id == run_id
    with pytest.raises(StoreError, match="no stored run"):
        store.find_run("zzzzzzzz")


def test_concurrent_threads_lose_nothing(store: RunStore) -> None:
    def work(worker: int) -> None:
        for i in range(20):
            run_id = store.start_run(_start(f"t{worker}-{i}"))
            _finish(store, run_id)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = store.list_runs()
    assert len(records) == 80 and all(r.status == "complete" for r in records)


# ----------------------------------------------------------------------------- SQLite specifics


def _write_from_process(path: str, worker: int, count: int) -> None:
    store = open_store(path)
    for i in range(count):
        run_id = store.start_run(_start(f"p{worker}-{i}", source="/sweeps/concurrent"))
        _finish(store, run_id, accuracy=worker + i / 100)
    store.close()


def test_concurrent_processes_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_from_process, args=(path, w, 25)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0
    with open_store(path) as store:
        records = store.list_runs(with_rounds=True)
    assert len(records) == 100
    assert {r.name for r in records} == {f"p{w}-{i}" for w in range(4) for i in range(25)}
    assert all(r.status == "complete" and r.rounds for r in records)


def test_store_uses_wal_mode(tmp_path: Path) -> None:
    SQLiteRunStore(tmp_path / "runs.db").close()
    conn = sqlite3.connect(tmp_path / "runs.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_an_older_schema_is_migrated_on_open_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute(
        "INSERT INTO runs (run_id, name, source, fingerprint, fingerprint_without_seed, seed, "
        "spec, status, started_at, final) VALUES ('old1', 'legacy', '/s', 'f', 'g', 0, "
        "'{\"lr\": 0.1}', 'complete', '2024-01-01T00:00:00.000Z', '{\"test_accuracy\": 0.8}')"
    )
    conn.commit()
    conn.close()
    with SQLiteRunStore(path) as store:
        assert isinstance(store, SQLiteRunStore)
        assert store.schema_version() == SCHEMA_VERSION
        record = store.get_run("old1")
        assert record.final == {"test_accuracy": 0.8}
        assert record.totals == {} and record.rounds == []
        run_id = store.start_run(_start("new"))
        _finish(store, run_id)
        assert store.get_run(run_id).totals == {"bytes": 1000}


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    SQLiteRunStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this velocity supports"):
        SQLiteRunStore(path)


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable run store"):
        SQLiteRunStore(path)


def test_default_location_follows_flag_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VELOCITY_STORE", str(tmp_path / "env.db"))
    assert default_store_path(None) == tmp_path / "env.db"
    assert default_store_path(tmp_path / "flag.db") == tmp_path / "flag.db"
    monkeypatch.delenv("VELOCITY_STORE")
    assert default_store_path(None) == Path.home() / ".velocity" / "runs.db"
