"""The run-store interface: a small abstract storage with a written contract, one backend a module.

Every backend passes the same contract suite (tests/test_store_contract.py); callers only ever
see :class:`RunStore` and :class:`RunRecord`.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from velocity.errors import InputError

__all__ = [
    "FINISHED_STATUSES",
    "RecordFinishedError",
    "RunRecord",
    "RunStart",
    "RunStore",
    "StoreError",
]

FINISHED_STATUSES = ("complete", "diverged", "failed")
"""A record is ``running`` until it reaches one of these; then it never changes again."""


class StoreError(InputError):
    """The run store cannot be opened or does not hold what was asked for (CLI exit 2)."""


class RecordFinishedError(StoreError):
    """An attempt to change a finished (immutable) record."""


@dataclass(frozen=True)
class RunStart:
    """What is known about a run when it starts."""

    name: str
    source: str | None  # the sweep folder it belongs to; None for a stand-alone ``velocity run``
    fingerprint: str
    fingerprint_without_seed: str
    seed: int
    spec: Mapping[str, Any]
    started_at: str
    sweep_id: str | None = None  # the manifest's id: tells a reused folder's new sweep apart
    host: str | None = None  # where the process recording it runs (for stale detection)
    pid: int | None = None
    process_start: str | None = None  # tells that pid apart from a later process reusing it


@dataclass
class RunRecord:
    """One stored run. ``rounds`` is filled only when asked for (it can be long)."""

    run_id: str
    name: str
    source: str | None
    fingerprint: str
    fingerprint_without_seed: str
    seed: int
    spec: dict[str, Any]
    status: str
    started_at: str
    error: str | None = None
    finished_at: str | None = None
    wall_seconds: float | None = None
    final: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)
    rounds_completed: int = 0
    rounds: list[dict[str, Any]] | None = None
    sweep_id: str | None = None
    host: str | None = None
    pid: int | None = None
    process_start: str | None = None
    heartbeat_at: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.__dict__)


class RunStore(ABC):
    """Abstract run store.

    Contract (every backend, checked by the shared contract suite):

    - ``start_run`` creates a record with status ``running`` and returns its id. Records are keyed
      by ``(source, sweep_id, name)`` when ``source`` is given: starting the same key again while
      its latest record is still ``running`` (a crashed run being redone) restarts that record
      under the same id; starting a key whose latest record is finished (a damaged run re-run
      by ``--resume``) adds a new record and leaves the finished one as it was. Without a
      source every start is a new record.
    - ``heartbeat`` marks a ``running`` record as still alive now (the owner's process does it
      periodically, so a record whose process died can be told ``stale``); on a finished
      record it changes nothing.
    - ``finish_run`` moves a ``running`` record to ``complete``, ``diverged`` or ``failed`` with
      its results, in one atomic step: a crash never leaves a half-finished record. Finished
      records are immutable: finishing again raises :class:`RecordFinishedError`.
    - Safe for concurrent use by several threads and several processes: no write is lost.
    - Reads return independent copies; changing them never changes the store.
    - Unknown ids raise :class:`StoreError`; nothing else is written by a read.
    """

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store lives: opening ``open_store(location)`` in another process reaches it."""

    @abstractmethod
    def start_run(self, start: RunStart) -> str:
        """Record a run as ``running``; returns its id (see the contract for restarts)."""

    @abstractmethod
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
        """Finish a running record with its results (atomic; finished records are immutable)."""

    @abstractmethod
    def heartbeat(self, run_id: str, at: str) -> None:
        """Record that the running record ``run_id`` is alive at ``at`` (UTC ISO 8601)."""

    @abstractmethod
    def get_run(self, run_id: str, *, with_rounds: bool = True) -> RunRecord:
        """The record with this id (StoreError when there is none)."""

    @abstractmethod
    def list_runs(
        self,
        *,
        source: str | None = None,
        status: str | None = None,
        with_rounds: bool = False,
    ) -> list[RunRecord]:
        """Records, oldest start first, optionally only those of one source or status."""

    @abstractmethod
    def close(self) -> None:
        """Release resources; the store is unusable afterwards."""

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def find_run(self, ref: str) -> RunRecord:
        """A run by id, unique id prefix (>= 4 characters) or name (the most recently started)."""
        records = self.list_runs()
        exact = [r for r in records if r.run_id == ref]
        if not exact and len(ref) >= 4:
            exact = [r for r in records if r.run_id.startswith(ref)]
            if len(exact) > 1:
                ids = ", ".join(r.run_id for r in exact[:5])
                raise StoreError(f"run id prefix '{ref}' is ambiguous: {ids}")
        if not exact:
            exact = [r for r in records if r.name == ref][-1:]
        if not exact:
            raise StoreError(f"no stored run with id or name '{ref}' (see 'velocity runs')")
        return self.get_run(exact[0].run_id)


def check_finish_status(status: str) -> None:
    """Finishing needs a final status; anything else is a caller bug reported clearly."""
    if status not in FINISHED_STATUSES:
        raise StoreError(
            f"finish status must be one of {', '.join(FINISHED_STATUSES)}, got {status!r}"
        )
