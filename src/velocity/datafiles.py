"""User data files: the files a run reads besides velocity's own (a CSV, an .npz), known by
their sha256.

A run that reads a user file records ``{"path": <as written in the dataset spec>, "sha256": ...}``
in ``RunSpec.data_files``, so its fingerprint changes when the data does. A sweep copies each
file into ``data/<name>`` of its folder, the archive carries that copy (unless ``--no-data``),
and a run is only ever fed bytes whose sha256 is the recorded one: a loader opens its file with
:func:`open_user_file`, which reads a provided copy (from a sweep folder, an archive or
``--data-dir``) or the path itself, hashes what it reads and refuses a mismatch.

Two switches keep recorded specs from steering what is read: while specs are read back from
records (:func:`recorded_specs`: sweep folders, archives, worker tasks) validation never touches
a path, it needs the record; and under :func:`only_provided` (worker processes, ``reproduce``)
a file is read only from a copy provided by its sha256, never from the path the spec names.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

from velocity.errors import InputError

__all__ = [
    "DataFileReader",
    "check_available",
    "copy_name",
    "file_sha256",
    "hash_record",
    "is_copy_name",
    "is_provided",
    "isolated",
    "only_provided",
    "open_copy",
    "open_user_file",
    "provide",
    "provided_source",
    "reading",
    "reading_recorded",
    "recorded_specs",
    "scoped",
    "source_for",
    "valid_record",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COPY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,119}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")
_CHUNK = 1 << 20

_GLOBAL_PROVIDED: dict[str, Path | bytes] = {}  # sha256 -> a copy with that content
_SCOPE: ContextVar[dict[str, Path | bytes] | None] = ContextVar("velocity_data_scope", default=None)
_HASHES: dict[tuple[str, int, int, int], str] = {}  # (path, size, mtime_ns, inode) -> sha256
_RECORDED: ContextVar[bool] = ContextVar("velocity_recorded_specs", default=False)
_ONLY_PROVIDED: ContextVar[bool] = ContextVar("velocity_only_provided_data", default=False)
_READING: ContextVar[tuple[Mapping[str, str], ...]] = ContextVar(
    "velocity_data_records", default=()
)


def valid_record(record: Any) -> bool:
    """Whether ``record`` is ``{"path": non-empty text, "sha256": 64 hex digits}``."""
    return (
        isinstance(record, Mapping)
        and set(record) == {"path", "sha256"}
        and isinstance(record["path"], str)
        and bool(record["path"])
        and isinstance(record["sha256"], str)
        and bool(_SHA256.match(record["sha256"]))
    )


def copy_name(record: Mapping[str, str]) -> str:
    """The file name of a data file's copy in a sweep folder or archive (``data/<name>``): the
    path's last component, with characters a folder entry may not hold replaced by ``_``."""
    base = re.split(r"[\\/]", record["path"])[-1]
    name = _UNSAFE.sub("_", base).lstrip("._-+=")
    return name if _COPY_NAME.match(name) else "data"


def is_copy_name(name: Any) -> bool:
    return isinstance(name, str) and bool(_COPY_NAME.match(name))


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB blocks; remembered while the file is unchanged."""
    file = Path(path)
    try:
        info = file.stat()
        key = (str(file.resolve()), info.st_size, info.st_mtime_ns, info.st_ino)
        if key in _HASHES:
            return _HASHES[key]
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
    except FileNotFoundError:
        raise InputError("file not found", source=str(path)) from None
    except IsADirectoryError:
        raise InputError("is a folder, not a data file", source=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", source=str(path)) from None
    _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def hash_record(path: str) -> dict[str, str]:
    """The record of the user file at ``path`` (relative to the current folder), read now."""
    return {"path": path, "sha256": file_sha256(path)}


@contextlib.contextmanager
def recorded_specs() -> Iterator[None]:
    """Specs validated in the block come from records: no path they name is read."""
    token = _RECORDED.set(True)
    try:
        yield
    finally:
        _RECORDED.reset(token)


def reading_recorded() -> bool:
    return _RECORDED.get()


@contextlib.contextmanager
def only_provided() -> Iterator[None]:
    """In the block, data files come only from copies provided by sha256, never from paths."""
    token = _ONLY_PROVIDED.set(True)
    try:
        yield
    finally:
        _ONLY_PROVIDED.reset(token)


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """In the block, only the copies provided inside it exist, and data files are read only
    from them (:func:`only_provided`): what a reproduction or a worker task reads is exactly
    what it was given, whatever this process saw before."""
    token = _SCOPE.set({})
    try:
        with only_provided():
            yield
    finally:
        _SCOPE.reset(token)


@contextlib.contextmanager
def scoped() -> Iterator[None]:
    """Copies provided in the block are forgotten after it (what this process already knew
    stays known, and paths are still read): a check that reads a sweep's own copies leaves
    nothing behind for the next sweep of the process."""
    token = _SCOPE.set(dict(_provided()))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def _provided() -> dict[str, Path | bytes]:
    scope = _SCOPE.get()
    return _GLOBAL_PROVIDED if scope is None else scope


def provide(sha256: str, source: Path | bytes) -> None:
    """Make a copy of the data file with this sha256 available (a path or its bytes); the
    content is checked against the sha256 whenever it is read."""
    _provided().setdefault(sha256, source)


def is_provided(sha256: str) -> bool:
    return sha256 in _provided()


def provided_source(sha256: str) -> Path | bytes | None:
    return _provided().get(sha256)


def source_for(record: Mapping[str, str]) -> Path | bytes:
    """Where the data file of ``record`` is read from: a provided copy, else (outside
    :func:`only_provided`) the path the record names."""
    source = _provided().get(record["sha256"])
    if source is not None:
        return source
    if _ONLY_PROVIDED.get():
        raise InputError(
            f"data file {record['path']!r} (sha256 {record['sha256'][:12]}...) is not "
            "provided; it is read only from the sweep's or the archive's own copy (or "
            "--data-dir), never from the path the spec names"
        )
    return Path(record["path"])


@contextlib.contextmanager
def reading(records: Sequence[Mapping[str, str]]) -> Iterator[None]:
    """While a run's dataset loads: the records :func:`open_user_file` checks files against."""
    token = _READING.set(tuple(records))
    try:
        yield
    finally:
        _READING.reset(token)


class DataFileReader(io.RawIOBase):
    """A binary reader that hashes every byte it hands out (the check of a recorded sha256)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        view[: len(data)] = data
        self.digest.update(data)
        return len(data)

    def drain(self) -> None:
        for block in iter(lambda: self._raw.read(_CHUNK), b""):
            self.digest.update(block)

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_user_file(path: str) -> contextlib.AbstractContextManager[DataFileReader]:
    """Open a dataset's user file for reading: the run's provided copy when one is recorded,
    else the path. When the run records the file, every byte read is hashed and a content
    other than the recorded one is an InputError (after the block, before any round)."""
    record = next((r for r in _READING.get() if r.get("path") == path), None)
    return _open(path, record)


def open_copy(record: Mapping[str, str]) -> contextlib.AbstractContextManager[DataFileReader]:
    """Open the data file of ``record`` (its provided copy, else its path), checked against its
    sha256 once the block has read it."""
    return _open(record["path"], record)


def check_available(record: Mapping[str, str]) -> None:
    """InputError unless the data file of ``record`` can be read with its recorded content
    (a provided copy, or, outside :func:`only_provided`, the file at its path)."""
    source = source_for(record)
    if isinstance(source, Path) and file_sha256(source) != record["sha256"]:
        raise InputError(
            f"has sha256 {file_sha256(source)[:12]}..., but the run records "
            f"{record['sha256'][:12]}... (the file changed since the run was made)",
            source=str(source),
        )


@contextlib.contextmanager
def _open(path: str, record: Mapping[str, str] | None) -> Iterator[DataFileReader]:
    source: Path | bytes = source_for(record) if record is not None else Path(path)
    label = path if not isinstance(source, Path) or str(source) == path else f"{path} ({source})"
    try:
        raw: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")
    except FileNotFoundError:
        raise InputError("file not found", source=label) from None
    except IsADirectoryError:
        raise InputError("is a folder, not a data file", source=label) from None
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", source=label) from None
    reader = DataFileReader(raw)
    try:
        yield reader
        if record is not None:
            reader.drain()
            found = reader.digest.hexdigest()
            if found != record["sha256"]:
                raise InputError(
                    f"has sha256 {found[:12]}..., but the run records {record['sha256'][:12]}... "
                    "(the file changed since the run was made)",
                    source=label,
                )
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", source=label) from None
    finally:
        reader.close()
