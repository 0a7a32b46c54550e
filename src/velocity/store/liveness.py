"""Whether a ``running`` record's process is still alive: stale-run detection for the run store.

Like Optuna's ``fail_stale_trials``, but from the recorder's identity rather than only a clock:
a record names the host, pid and process start of its recorder, which beats a heartbeat while
it runs. On the recorder's own host a record is stale as soon as that process is gone (a pid
reused by a later process does not count, nor does a reboot); elsewhere, once its heartbeat is
older than ``STALE_AFTER_SECONDS``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from velocity.records import utc_now

if TYPE_CHECKING:
    from velocity.store.base import RunRecord, RunStore

__all__ = [
    "HEARTBEAT_SECONDS",
    "STALE_AFTER_SECONDS",
    "heartbeat_while",
    "process_start",
    "stale_reason",
    "this_host",
]

HEARTBEAT_SECONDS = 30.0
"""How often a running ``velocity run`` marks its record alive."""
STALE_AFTER_SECONDS = 600.0
"""A record from another host is stale after this long without a heartbeat (20 missed)."""


def this_host() -> str:
    return socket.gethostname()


def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    return ""


def process_start(pid: int | None = None) -> str | None:
    """An identity of process ``pid`` (default: this one) that a later process reusing the pid
    does not share: boot id and start time on Linux; None where the system does not tell."""
    pid = os.getpid() if pid is None else pid
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()  # the command name may hold spaces and ')'
    if len(fields) < 20:
        return None
    return f"{_boot_id()}:{fields[19]}"  # field 22 of stat: start time in clock ticks


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    if start is None:
        return True
    now = process_start(pid)
    return now is None or now == start


def _age_seconds(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return (now - then).total_seconds()


def stale_reason(record: RunRecord, *, now: datetime | None = None) -> str | None:
    """Why a ``running`` record will never finish (its process is gone), or None: finished
    records, and running ones whose process may still be at work, are not stale."""
    if record.status != "running":
        return None
    if record.pid is not None and record.host == this_host():
        if record.process_start and record.process_start.split(":")[0] != _boot_id():
            return f"its process (pid {record.pid}) ran before this machine restarted"
        if not _alive(record.pid, record.process_start):
            return f"its process (pid {record.pid}) is gone"
        return None
    age = _age_seconds(record.heartbeat_at or record.started_at, now or datetime.now(UTC))
    if age is not None and age > STALE_AFTER_SECONDS:
        return f"no heartbeat from {record.host or 'its host'} for {age / 60:.0f} min"
    return None


@contextlib.contextmanager
def heartbeat_while(
    store: RunStore, run_id: str, interval: float = HEARTBEAT_SECONDS
) -> Iterator[Callable[[], None]]:
    """Beat ``run_id``'s heartbeat every ``interval`` seconds from a daemon thread while the
    block runs; a store error stops the beating, never the run."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                store.heartbeat(run_id, utc_now())
            except Exception:  # the store is for bookkeeping; the run goes on
                return

    thread = threading.Thread(target=beat, name="velocity-heartbeat", daemon=True)
    thread.start()
    try:
        yield stop.set
    finally:
        stop.set()
        thread.join(5.0)
