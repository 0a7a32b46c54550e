"""Reading an untrusted crate zip safely: every entry checked before it is read, into memory.

Nothing is extracted: names, types, sizes and compression ratios are checked against hard limits,
each entry is stream-decompressed under a cap, and every ``@id`` of the metadata is checked.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import struct
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from velocity.errors import ArchiveError, InputError

__all__ = [
    "CRATE_METADATA_NAME",
    "ArchiveLimits",
    "CrateContents",
    "entity_types",
    "is_local",
    "member_name_problem",
    "read_crate",
]

CRATE_METADATA_NAME = "ro-crate-metadata.json"
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_CHUNK = 1 << 16


@dataclass(frozen=True)
class ArchiveLimits:
    """Sanity limits on an untrusted archive (a sweep crate is a few MB; these are generous)."""

    max_archive_bytes: int = 2 * 1024**3
    max_entries: int = 10_000
    max_entry_bytes: int = 256 * 1024**2
    max_total_bytes: int = 1024**3
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1024**2  # entries smaller than this cannot be a meaningful bomb
    max_name_length: int = 512


@dataclass
class CrateContents:
    """An archive read into memory: its files, folders and parsed crate metadata."""

    path: Path
    sha256: str
    size: int
    files: dict[str, bytes]
    folders: set[str]
    metadata: dict[str, Any]
    entities: dict[str, dict[str, Any]]


def member_name_problem(name: str, limits: ArchiveLimits = ArchiveLimits()) -> str | None:
    """Why ``name`` is not a safe relative path inside a crate (None when it is)."""
    if not name:
        return "empty name"
    if len(name) > limits.max_name_length:
        return f"name longer than {limits.max_name_length} characters"
    if "\x00" in name:
        return "NUL byte in name"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "control character in name"
    if "\\" in name:
        return "backslash in name"
    if name.startswith("/"):
        return "absolute path"
    if _DRIVE_LETTER.match(name):
        return "drive letter in name"
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    if ".." in parts:
        return "'..' in path"
    if any(part in ("", ".") for part in parts):
        return "empty or '.' path component"
    return None


def _fail(path: Path, message: str) -> ArchiveError:
    return ArchiveError(message, source=str(path))


def _check_entry(info: zipfile.ZipInfo, path: Path, limits: ArchiveLimits) -> None:
    problem = member_name_problem(info.filename, limits)
    if problem is not None:
        raise _fail(path, f"unsafe entry name {info.filename!r} ({problem}); refusing the archive")
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise _fail(path, f"entry {info.filename!r} is a symbolic link; refusing the archive")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _fail(path, f"entry {info.filename!r} is a device or special file; refusing it")
    is_dir = info.filename.endswith("/")
    if kind == stat.S_IFDIR and not is_dir:
        raise _fail(path, f"entry {info.filename!r} is marked as a folder but named as a file")
    if info.flag_bits & 0x1:
        raise _fail(path, f"entry {info.filename!r} is encrypted; velocity crates never are")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _fail(path, f"entry {info.filename!r} uses an unsupported compression method")
    if is_dir and info.file_size != 0:
        raise _fail(path, f"folder entry {info.filename!r} has content")
    if info.file_size > limits.max_entry_bytes:
        raise _fail(
            path,
            f"entry {info.filename!r} declares {info.file_size} bytes, over the limit of "
            f"{limits.max_entry_bytes} (zip bomb?)",
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > limits.ratio_floor_bytes and ratio > limits.max_ratio:
        raise _fail(
            path,
            f"entry {info.filename!r} compresses {ratio:.0f}:1, over the limit of "
            f"{limits.max_ratio:.0f}:1 (zip bomb?)",
        )


def _read_entry(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, path: Path, cap: int
) -> bytes:
    """Stream-decompress one entry, stopping at its declared size or the byte budget."""
    chunks: list[bytes] = []
    total = 0
    limit = min(info.file_size, cap, budget)
    with archive.open(info) as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise _fail(
                    path,
                    f"entry {info.filename!r} decompresses to more than its declared or allowed "
                    "size (zip bomb or corrupt archive)",
                )
            chunks.append(chunk)
    if total != info.file_size:
        raise _fail(path, f"entry {info.filename!r} is truncated (corrupt archive)")
    return b"".join(chunks)


def _raw_entry_names(path: Path, start: int, count: int) -> list[bytes]:
    """Entry names exactly as the central directory stores them (zipfile cuts them at a NUL)."""
    names = []
    with path.open("rb") as handle:
        handle.seek(start)
        for _ in range(count):
            header = handle.read(46)
            if len(header) != 46 or header[:4] != b"PK\x01\x02":
                raise _fail(path, "corrupt central directory (not a readable zip archive)")
            name_length, extra_length, comment_length = struct.unpack("<HHH", header[28:34])
            names.append(handle.read(name_length))
            handle.seek(extra_length + comment_length, 1)
    return names


def _id_problem(value: str, limits: ArchiveLimits) -> str | None:
    if value == "./" or value.startswith("#"):
        return None
    if URI_SCHEME.match(value) and not _DRIVE_LETTER.match(value):
        scheme = value.split(":", 1)[0].lower()
        return None if scheme in ("http", "https") else f"URI scheme {scheme!r} is not allowed"
    decoded = unquote(value)
    problem = member_name_problem(decoded, limits)
    if problem is None and decoded != value:
        return "percent-encoded path (velocity crates use plain names)"
    return problem


def _walk_ids(value: Any) -> Iterable[Any]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "@id":
                yield item
            else:
                yield from _walk_ids(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_ids(item)


def _parse_metadata(
    raw: bytes, path: Path, limits: ArchiveLimits
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _fail(path, f"{CRATE_METADATA_NAME} is not valid JSON ({exc})") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("@graph"), list):
        raise _fail(path, f"{CRATE_METADATA_NAME} has no @graph list (not an RO-Crate)")
    entities: dict[str, dict[str, Any]] = {}
    try:
        ids = list(_walk_ids(metadata["@graph"]))
    except RecursionError:
        raise _fail(path, f"{CRATE_METADATA_NAME} is nested too deeply") from None
    for value in ids:
        if not isinstance(value, str):
            raise _fail(path, f"{CRATE_METADATA_NAME}: an @id is not a string ({value!r})")
        problem = _id_problem(value, limits)
        if problem is not None:
            raise _fail(
                path,
                f"{CRATE_METADATA_NAME}: @id {value!r} escapes the crate or is unsafe ({problem})",
            )
    for entity in metadata["@graph"]:
        if not isinstance(entity, dict) or not isinstance(entity.get("@id"), str):
            raise _fail(path, f"{CRATE_METADATA_NAME}: every @graph entry needs a string @id")
        if entity["@id"] in entities:
            raise _fail(path, f"{CRATE_METADATA_NAME}: duplicate @id {entity['@id']!r}")
        entities[entity["@id"]] = entity
    return metadata, entities


def read_crate(path: str | Path, limits: ArchiveLimits = ArchiveLimits()) -> CrateContents:
    """Read an untrusted crate zip into memory, rejecting anything unsafe (ArchiveError).

    Checks every entry's name, type, size and compression ratio before reading it, streams each
    entry under a hard cap, and checks every ``@id`` of the metadata. Nothing touches the disk.
    """
    archive_path = Path(path)
    if not archive_path.is_file():
        raise InputError("archive not found (give a .crate.zip file)", source=str(archive_path))
    size = archive_path.stat().st_size
    if size > limits.max_archive_bytes:
        raise _fail(
            archive_path, f"archive is {size} bytes, over the limit of {limits.max_archive_bytes}"
        )
    digest = hashlib.sha256()
    with archive_path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    files: dict[str, bytes] = {}
    folders: set[str] = set()
    try:
        with zipfile.ZipFile(archive_path) as archive:
            infos = archive.infolist()
            if not infos:
                raise _fail(archive_path, "the archive is empty (not a velocity crate)")
            if len(infos) > limits.max_entries:
                raise _fail(
                    archive_path,
                    f"the archive has {len(infos)} entries, over the limit of {limits.max_entries}",
                )
            start = getattr(archive, "start_dir", None)
            if isinstance(start, int):
                for raw in _raw_entry_names(archive_path, start, len(infos)):
                    if b"\x00" in raw:
                        raise _fail(
                            archive_path,
                            f"unsafe entry name {raw!r} (NUL byte in name); refusing the archive",
                        )
            seen: dict[str, str] = {}
            for info in infos:
                _check_entry(info, archive_path, limits)
                key = info.filename.rstrip("/").casefold()
                if key in seen:
                    raise _fail(
                        archive_path,
                        f"duplicate entry {info.filename!r} (also "
                        f"{seen[key]!r}); refusing the archive",
                    )
                seen[key] = info.filename
            declared = sum(i.file_size for i in infos)
            if declared > limits.max_total_bytes:
                raise _fail(
                    archive_path,
                    f"entries declare {declared} bytes in total, over the "
                    f"limit of {limits.max_total_bytes} (zip bomb?)",
                )
            budget = limits.max_total_bytes
            for info in infos:
                if info.filename.endswith("/"):
                    folders.add(info.filename)
                    continue
                data = _read_entry(archive, info, budget, archive_path, limits.max_entry_bytes)
                budget -= len(data)
                files[info.filename] = data
    except ArchiveError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
        RuntimeError,
        struct.error,
    ) as exc:
        raise _fail(archive_path, f"not a readable zip archive ({exc})") from None
    for name in files:
        for parent in PurePosixPath(name).parents:
            if str(parent) != "." and str(parent) in files:
                raise _fail(archive_path, f"entry {str(parent)!r} is both a file and a folder")
    if CRATE_METADATA_NAME not in files:
        raise _fail(archive_path, f"no {CRATE_METADATA_NAME} at the top (not an RO-Crate)")
    metadata, entities = _parse_metadata(files[CRATE_METADATA_NAME], archive_path, limits)
    return CrateContents(
        path=archive_path,
        sha256=digest.hexdigest(),
        size=size,
        files=files,
        folders=folders,
        metadata=metadata,
        entities=entities,
    )


def entity_types(entity: Mapping[str, Any]) -> set[str]:
    """The ``@type`` values of a metadata entity, as a set."""
    kind = entity.get("@type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def is_local(entity_id: str) -> bool:
    """Whether an ``@id`` names something inside the crate (not the root, a #fragment or a URL)."""
    return entity_id != "./" and not entity_id.startswith("#") and not URI_SCHEME.match(entity_id)
