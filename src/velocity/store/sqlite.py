"""SQLite run store: one file, WAL mode, safe for many writer processes, migrated on open.

The schema carries its version in a ``schema_version`` table; opening an older file applies the
missing migrations in one transaction, opening a newer one is refused.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from velocity.artifacts import decode_floats, encode_floats
from velocity.store.base import (
    RecordFinishedError,
    RunRecord,
    RunStart,
    RunStore,
    StoreError,
    check_finish_status,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteRunStore"]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: runs with their spec, status and final metrics
    (
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            source TEXT,
            fingerprint TEXT NOT NULL,
            fingerprint_without_seed TEXT NOT NULL,
            seed INTEGER NOT NULL,
            spec TEXT NOT NULL,
            status TEXT NOT NULL,
            error TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            wall_seconds REAL,
            final TEXT NOT NULL DEFAULT '{}',
            best TEXT NOT NULL DEFAULT '{}',
            rounds_completed INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE UNIQUE INDEX runs_by_source_name ON runs(source, name)",
    ),
    # 2: per-round trajectories (for rounds-to-target) and totals (communication cost)
    (
        "ALTER TABLE runs ADD COLUMN totals TEXT NOT NULL DEFAULT '{}'",
        """CREATE TABLE run_rounds (
            run_id TEXT PRIMARY KEY REFERENCES runs(run_id),
            rounds TEXT NOT NULL
        )""",
        "CREATE INDEX runs_by_group ON runs(fingerprint_without_seed)",
    ),
    # 3: the sweep's own id (a folder reused after rm -rf is another sweep), so re-runs are new
    #    records; the recording process (host, pid, its start) and a heartbeat, for stale runs
    (
        "ALTER TABLE runs ADD COLUMN sweep_id TEXT",
        "ALTER TABLE runs ADD COLUMN host TEXT",
        "ALTER TABLE runs ADD COLUMN pid INTEGER",
        "ALTER TABLE runs ADD COLUMN process_start TEXT",
        "ALTER TABLE runs ADD COLUMN heartbeat_at TEXT",
        "DROP INDEX runs_by_source_name",
        "CREATE INDEX runs_by_source_name ON runs(source, sweep_id, name)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_BUSY_TIMEOUT_MS = 60_000
_COLUMNS = (
    "run_id, name, source, fingerprint, fingerprint_without_seed, seed, spec, status, error, "
    "started_at, finished_at, wall_seconds, final, best, rounds_completed, totals, sweep_id, "
    "host, pid, process_start, heartbeat_at"
)


def _dumps(value: Any) -> str:
    return json.dumps(encode_floats(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


_TABLES = ("runs", "run_rounds", "schema_version")


def _loads(text: str | None, *, numbers: bool = True) -> Any:
    """A JSON column; non-finite markers are decoded only in metric columns (``numbers``),
    never in the spec, where "NaN" may be a name."""
    if not text:
        return {}
    value = json.loads(text)
    return decode_floats(value) if numbers else value


class SQLiteRunStore(RunStore):
    """A run store in one SQLite file (created with its folder when missing)."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path).expanduser().resolve()
        self._lock = threading.RLock()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self._path,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self._path}: cannot open run store ({exc})") from None
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._enable_wal()
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"{self._path}: not a usable run store ({exc})") from None
        except StoreError:
            self._conn.close()
            raise

    @property
    def location(self) -> str:
        return str(self._path)

    @property
    def path(self) -> Path:
        return self._path

    def _enable_wal(self) -> None:
        # Switching to WAL needs a moment of exclusive access; another opener may hold it.
        for attempt in range(50):
            try:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05)
                continue
            if str(mode).lower() != "wal":
                raise StoreError(f"{self._path}: cannot switch the run store to WAL mode")
            return

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """A database error inside is a damaged store: one line naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self._path}: damaged run store ({exc})") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: writers queue on the busy timeout instead of failing."""
        with self._lock, self._guard():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if isinstance(version, bool) or not isinstance(version, int):
                raise StoreError(
                    f"{self._path}: damaged run store: schema_version holds {version!r}, not "
                    "an integer version"
                )
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self._path}: run store schema version {version} is newer than this "
                    f"velocity supports ({SCHEMA_VERSION}); upgrade velocity"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif version != SCHEMA_VERSION:
                conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            found = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            missing = [t for t in _TABLES if t not in found]
            if missing:
                raise StoreError(
                    f"{self._path}: damaged run store: table '{missing[0]}' is missing "
                    "(renamed or dropped?)"
                )

    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT version FROM schema_version").fetchone()[0])

    def start_run(self, start: RunStart) -> str:
        with self._write() as conn:
            row = None
            if start.source is not None:
                row = conn.execute(
                    "SELECT run_id, status FROM runs WHERE source = ? AND name = ? "
                    "AND sweep_id IS ? ORDER BY rowid DESC LIMIT 1",
                    (start.source, start.name, start.sweep_id),
                ).fetchone()
            values = (
                start.fingerprint,
                start.fingerprint_without_seed,
                int(start.seed),
                _dumps(dict(start.spec)),
                start.started_at,
                start.host,
                start.pid,
                start.process_start,
                start.started_at,
            )
            if row is not None and row[1] == "running":
                run_id = str(row[0])
                conn.execute(
                    "UPDATE runs SET fingerprint = ?, fingerprint_without_seed = ?, seed = ?, "
                    "spec = ?, started_at = ?, host = ?, pid = ?, process_start = ?, "
                    "heartbeat_at = ? WHERE run_id = ?",
                    (*values, run_id),
                )
                return run_id
            run_id = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO runs (run_id, name, source, sweep_id, fingerprint, "
                "fingerprint_without_seed, seed, spec, started_at, host, pid, process_start, "
                "heartbeat_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running')",
                (run_id, start.name, start.source, start.sweep_id, *values),
            )
            return run_id

    def heartbeat(self, run_id: str, at: str) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND status = 'running'",
                (at, run_id),
            )

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        error: str | None,
        finished_at: str,
        wall_seconds: float,
        final: Mapping[str, Any],
        best: Mapping[str, Any],
        totals: Mapping[str, Any],
        rounds: Sequence[Mapping[str, Any]],
    ) -> None:
        check_finish_status(status)
        with self._write() as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"no stored run with id '{run_id}'")
            if row[0] != "running":
                raise RecordFinishedError(
                    f"run {run_id} is already finished ({row[0]}); finished records are immutable"
                )
            conn.execute(
                "UPDATE runs SET status = ?, error = ?, finished_at = ?, wall_seconds = ?, "
                "final = ?, best = ?, totals = ?, rounds_completed = ? WHERE run_id = ?",
                (
                    status,
                    error,
                    finished_at,
                    float(wall_seconds),
                    _dumps(dict(final)),
                    _dumps(dict(best)),
                    _dumps(dict(totals)),
                    len(rounds),
                    run_id,
                ),
            )
            conn.execute(
                "INSERT OR REPLACE INTO run_rounds (run_id, rounds) VALUES (?, ?)",
                (run_id, _dumps([dict(r) for r in rounds])),
            )

    def _record(self, row: Sequence[Any], rounds_text: str | None, with_rounds: bool) -> RunRecord:
        try:
            return self._decode(row, rounds_text, with_rounds)
        except (ValueError, TypeError, IndexError, RecursionError) as exc:
            raise StoreError(
                f"{self._path}: damaged run store: the record of run {row[0]!r} cannot be read "
                f"({type(exc).__name__}: {exc})"
            ) from None

    def _decode(self, row: Sequence[Any], rounds_text: str | None, with_rounds: bool) -> RunRecord:
        return RunRecord(
            run_id=row[0],
            name=row[1],
            source=row[2],
            fingerprint=row[3],
            fingerprint_without_seed=row[4],
            seed=int(row[5]),
            spec=_loads(row[6], numbers=False),
            status=row[7],
            error=row[8],
            started_at=row[9],
            finished_at=row[10],
            wall_seconds=row[11],
            final=_loads(row[12]),
            best=_loads(row[13]),
            rounds_completed=int(row[14]),
            totals=_loads(row[15]),
            rounds=(_loads(rounds_text) or []) if with_rounds else None,
            sweep_id=row[16],
            host=row[17],
            pid=None if row[18] is None else int(row[18]),
            process_start=row[19],
            heartbeat_at=row[20],
        )

    def get_run(self, run_id: str, *, with_rounds: bool = True) -> RunRecord:
        with self._lock, self._guard():
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no stored run with id '{run_id}'")
            rounds = self._conn.execute(
                "SELECT rounds FROM run_rounds WHERE run_id = ?", (run_id,)
            ).fetchone()
        return self._record(row, rounds[0] if rounds else None, with_rounds)

    def list_runs(
        self,
        *,
        source: str | None = None,
        status: str | None = None,
        with_rounds: bool = False,
    ) -> list[RunRecord]:
        where, params = [], []
        if source is not None:
            where.append("runs.source = ?")
            params.append(source)
        if status is not None:
            where.append("runs.status = ?")
            params.append(status)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        columns = ", ".join(f"runs.{c.strip()}" for c in _COLUMNS.split(","))
        rounds_column = ", run_rounds.rounds" if with_rounds else ", NULL"
        with self._lock, self._guard():
            rows = self._conn.execute(
                f"SELECT {columns}{rounds_column} FROM runs "
                f"LEFT JOIN run_rounds ON run_rounds.run_id = runs.run_id {clause} "
                "ORDER BY runs.started_at, runs.rowid",
                params,
            ).fetchall()
        return [self._record(row[:-1], row[-1], with_rounds) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
