"""Reproduce an archived sweep: read the crate without trusting it, verify, re-run, compare.

Nothing is extracted: entries are checked and read into memory under hard limits, every file is
verified against its sha256 before anything runs, and only the re-run writes (into --out).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import json
import math
import re
import stat
import struct
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from velocity.archive import (
    CRATE_METADATA_NAME,
    iso_utc,
    velocity_version,
)
from velocity.artifacts import (
    CONFIG_SCHEMA,
    SUMMARY_SCHEMA,
    SWEEP_SCHEMA,
    decode_floats,
    format_csv_value,
    parse_csv_value,
    read_json,
    read_rounds_csv,
    write_json_atomic,
)
from velocity.errors import ArchiveError, InputError
from velocity.spec import RUN_NAME_PATTERN, RunSpec, spec_from_mapping

__all__ = [
    "DEFAULT_TOLERANCE",
    "REPRODUCTION_SCHEMA",
    "ArchiveInspection",
    "ArchiveLimits",
    "ArchivedRun",
    "ArchivedSweep",
    "CrateContents",
    "PackageDrift",
    "ReproductionReport",
    "RunComparison",
    "compare_rounds",
    "compare_run",
    "default_reproduce_dir",
    "environment_drift",
    "inspect_archive",
    "load_archived_sweep",
    "member_name_problem",
    "read_crate",
    "reproduce_archive",
    "run_name_problem",
    "values_match",
    "verify_crate",
]

REPRODUCTION_SCHEMA = "velocity.reproduction/1"
DEFAULT_TOLERANCE = 1e-6
RESULT_STATUSES = ("complete", "diverged", "failed")
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 16
_SWEEP_LEVEL_NAMES = frozenset(
    {"manifest.json", "comparison.json", "comparison.md", "report.html", "plots"}
    | {"reproduction.json", "readme.md", "environment.txt", "ro-crate-metadata.json"}
)
_DEVICE_NAMES = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)


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


@dataclass
class ArchivedRun:
    """One run as the archive records it (``status`` None: the archive holds no results)."""

    name: str
    spec: RunSpec | None
    spec_data: dict[str, Any] | None
    fingerprint: str | None
    status: str | None
    error: str | None
    rounds: list[dict[str, Any]] | None
    columns: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None


@dataclass
class ArchivedSweep:
    """The verified, self-consistent sweep inside an archive."""

    manifest: dict[str, Any]
    runs: dict[str, ArchivedRun]
    order: list[str]
    missing: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PackageDrift:
    """A package whose version differs between the archive's environment and this one."""

    package: str
    archived: str | None
    current: str | None


@dataclass
class RunComparison:
    """Verdict for one run: ``ok``, ``MISMATCH``, ``MISSING`` or ``FAILED``."""

    name: str
    verdict: str
    archived_status: str | None
    reproduced_status: str | None
    detail: str = ""
    first_difference: dict[str, Any] | None = None
    differences: int = 0
    reproduced_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "archived_status": self.archived_status,
            "reproduced_status": self.reproduced_status,
            "detail": self.detail,
            "first_difference": self.first_difference,
            "differences": self.differences,
            "reproduced_error": self.reproduced_error,
        }


@dataclass
class ReproductionReport:
    """Outcome of ``reproduce_archive``; ``exit_code`` follows the CLI convention."""

    archive: Path
    archive_sha256: str
    out_dir: Path
    checked: bool
    exact: bool
    tolerance: float
    runs: list[RunComparison]
    drift: list[PackageDrift]
    platform_notes: list[str]
    notes: list[str]
    started_at: str
    finished_at: str

    @property
    def all_matched(self) -> bool:
        return all(r.verdict == "ok" for r in self.runs)

    @property
    def exit_code(self) -> int:
        return 1 if self.checked and not self.all_matched else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": REPRODUCTION_SCHEMA,
            "archive": str(self.archive),
            "archive_sha256": self.archive_sha256,
            "out_dir": str(self.out_dir),
            "checked": self.checked,
            "comparison": "exact" if self.exact else f"rel_tol={self.tolerance!r}",
            "tolerance": None if self.exact else self.tolerance,
            "verdict": "reproduced" if self.all_matched else "not reproduced",
            "exit_code": self.exit_code,
            "counts": {v: sum(r.verdict == v for r in self.runs) for v in _VERDICTS},
            "runs": [r.to_json() for r in self.runs],
            "environment_drift": [
                {"package": d.package, "archived": d.archived, "current": d.current}
                for d in self.drift
            ],
            "platform_notes": self.platform_notes,
            "notes": self.notes,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


_VERDICTS = ("ok", "MISMATCH", "MISSING", "FAILED")


# ----------------------------------------------------------------------------- safe reading


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


def run_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a run folder of a reproduction (None when it can)."""
    if not isinstance(name, str) or not RUN_NAME_PATTERN.match(name) or name in (".", ".."):
        return "is not a safe folder name (letters, digits, . _ = + -)"
    if name.casefold() in _SWEEP_LEVEL_NAMES:
        return "is reserved: it would clash with a file of the sweep"
    if name.split(".")[0].casefold() in _DEVICE_NAMES:
        return "is reserved: it is a device name on Windows"
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
    if _URI_SCHEME.match(value) and not _DRIVE_LETTER.match(value):
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


def _types(entity: Mapping[str, Any]) -> set[str]:
    kind = entity.get("@type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def _is_local(entity_id: str) -> bool:
    return entity_id != "./" and not entity_id.startswith("#") and not _URI_SCHEME.match(entity_id)


def verify_crate(crate: CrateContents) -> int:
    """Check every file against the sha256 and size the metadata lists (ArchiveError naming the
    file otherwise); no unlisted or missing file is allowed. Returns how many files matched."""
    where = crate.path
    listed: dict[str, dict[str, Any]] = {}
    for entity_id, entity in crate.entities.items():
        kinds = _types(entity)
        if "File" in kinds:
            if not _is_local(entity_id):
                raise _fail(where, f"File {entity_id!r} is not inside the crate; cannot verify it")
            listed[entity_id] = entity
    for name in sorted(crate.files):
        if name != CRATE_METADATA_NAME and name not in listed:
            raise _fail(
                where,
                f"{name}: file not listed in {CRATE_METADATA_NAME} (tampered or corrupt archive)",
            )
    for folder in sorted(crate.folders):
        dataset = crate.entities.get(folder)
        if dataset is None or "Dataset" not in _types(dataset):
            raise _fail(
                where,
                f"{folder}: folder not listed in {CRATE_METADATA_NAME} "
                "(tampered or corrupt archive)",
            )
    for name, entity in sorted(listed.items()):
        if name not in crate.files:
            raise _fail(
                where,
                f"{name}: listed in {CRATE_METADATA_NAME} but missing from the "
                "archive (tampered or corrupt archive)",
            )
        expected = entity.get("sha256")
        if not isinstance(expected, str) or not _SHA256.match(expected):
            raise _fail(
                where, f"{name}: no sha256 recorded in {CRATE_METADATA_NAME}; cannot verify it"
            )
        size = entity.get("contentSize")
        data = crate.files[name]
        if str(size) != str(len(data)):
            raise _fail(
                where,
                f"{name}: size {len(data)} differs from the recorded {size} "
                "(tampered or corrupt archive)",
            )
        if hashlib.sha256(data).hexdigest() != expected:
            raise _fail(where, f"{name}: sha256 mismatch (tampered or corrupt archive)")
    return len(listed)


# ----------------------------------------------------------------------------- archived records


def _json_document(crate: CrateContents, name: str, *, floats: bool = True) -> Any:
    try:
        value = json.loads(crate.files[name].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _fail(crate.path, f"{name}: not valid JSON ({exc})") from None
    return decode_floats(value) if floats else value


def _rounds_from_csv(crate: CrateContents, name: str) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        text = crate.files[name].decode("utf-8")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = list(reader.fieldnames or [])
        rows = [{k: parse_csv_value(v or "") for k, v in row.items()} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _fail(crate.path, f"{name}: not a readable CSV ({exc})") from None
    if "round" not in columns or any(None in row for row in rows):
        raise _fail(crate.path, f"{name}: malformed rounds table (needs a 'round' column)")
    return columns, rows


def _fingerprint_of(spec_data: Mapping[str, Any]) -> str:
    """RunSpec.fingerprint computed on the archived dict itself (independent of this version)."""
    data = {k: v for k, v in spec_data.items() if k != "name"}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _is_timing(metric: str) -> bool:
    from velocity.simulation import TIMING_METRICS

    return metric in TIMING_METRICS or metric.endswith("_seconds")


def _as_in_csv(value: Any) -> Any:
    """A JSON-recorded value as rounds.csv records it (CSV cannot tell "2" from 2)."""
    return parse_csv_value(format_csv_value(value))


def _inconsistent(crate: CrateContents, message: str) -> ArchiveError:
    return _fail(crate.path, f"inconsistent archive: {message}")


def _same_records(
    crate: CrateContents,
    label: str,
    expected: Sequence[Mapping[str, Any]],
    found: Sequence[Mapping[str, Any]],
) -> None:
    if len(expected) != len(found):
        raise _inconsistent(
            crate, f"{label} holds {len(found)} rounds but rounds.csv holds {len(expected)}"
        )
    as_csv = [{k: _as_in_csv(v) for k, v in record.items()} for record in found]
    first = _first_difference(expected, as_csv, exact=True, tolerance=0.0)
    if first is not None:
        raise _inconsistent(
            crate,
            f"{label} disagrees with rounds.csv at round {first['round']}, "
            f"{first['metric']}: {first['archived']!r} vs {first['reproduced']!r}",
        )


def _check_final(
    crate: CrateContents, name: str, final: Any, rounds: Sequence[Mapping[str, Any]], label: str
) -> None:
    if not isinstance(final, Mapping) or not final:
        if rounds and isinstance(final, Mapping):
            raise _inconsistent(crate, f"{label} has no final metrics but rounds.csv has rounds")
        return
    by_round = {r.get("round"): r for r in rounds}
    record = by_round.get(final.get("round"))
    if record is None:
        raise _inconsistent(
            crate, f"{label}: final round {final.get('round')!r} is not in {name}/rounds.csv"
        )
    for metric, value in final.items():
        if _is_timing(metric):
            continue
        if not values_match(_as_in_csv(value), record.get(metric), exact=True, tolerance=0.0):
            raise _inconsistent(
                crate,
                f"{label}: final {metric} {value!r} differs from "
                f"{name}/rounds.csv ({record.get(metric)!r})",
            )


_ABSENT = "<absent>"
_PRESENTATION_KEYS = frozenset(
    {"spec", "fingerprint", "fingerprint_without_seed", "strategy", "attack", "dataset"}
    | {"group", "label", "schema"}
)
"""Keys of comparison.json that another velocity version may legitimately render differently."""


def _element_label(item: Any, index: int) -> str:
    if isinstance(item, Mapping):
        for key in ("name", "label"):
            if isinstance(item.get(key), str):
                return repr(item[key])
    return str(index)


def _first_disagreement(
    archived: Any, derived: Any, where: str, *, lenient: bool
) -> tuple[str, Any, Any] | None:
    """Where a recorded document first differs from the one re-derived from rounds.csv:
    ``(field path, archived, derived)``. Timings never count; ``lenient`` (another velocity
    version wrote the archive) also skips presentation keys and keys present on one side only."""
    if isinstance(archived, Mapping) and isinstance(derived, Mapping):
        for key in dict.fromkeys([*derived, *archived]):
            if _is_timing(str(key)) or (lenient and key in _PRESENTATION_KEYS):
                continue
            path = f"{where}.{key}" if where else str(key)
            if key not in archived or key not in derived:
                if lenient:
                    continue
                return path, archived.get(key, _ABSENT), derived.get(key, _ABSENT)
            found = _first_disagreement(archived[key], derived[key], path, lenient=lenient)
            if found is not None:
                return found
        return None
    if isinstance(archived, list) and isinstance(derived, list):
        if len(archived) != len(derived):
            return f"{where} (number of entries)", len(archived), len(derived)
        for index, (old, new) in enumerate(zip(archived, derived, strict=True)):
            path = f"{where}[{_element_label(new, index)}]"
            found = _first_disagreement(old, new, path, lenient=lenient)
            if found is not None:
                return found
        return None
    if isinstance(archived, Mapping | list) or isinstance(derived, Mapping | list):
        return where, archived, derived
    if not values_match(archived, derived, exact=True, tolerance=0.0):
        return where, archived, derived
    return None


def _check_summary_derived(
    crate: CrateContents,
    name: str,
    summary: Mapping[str, Any],
    rounds: Sequence[Mapping[str, Any]],
    *,
    lenient: bool,
) -> None:
    """summary.json's ``best`` and ``totals`` must be what the sweep computes from rounds.csv."""
    from velocity.sweep import summarize_rounds

    best, totals = summarize_rounds(rounds)
    for key, derived in (("best", best), ("totals", totals)):
        found = _first_disagreement(summary.get(key, _ABSENT), derived, key, lenient=lenient)
        if found is not None:
            path, old, new = found
            raise _inconsistent(
                crate,
                f"{name}/summary.json: {path} is {old!r} but {name}/rounds.csv gives {new!r}",
            )


def _target_accuracy(crate: CrateContents, comparison: Mapping[str, Any]) -> float:
    target = comparison.get("target_accuracy")
    if (
        isinstance(target, bool)
        or not isinstance(target, int | float)
        or not (math.isfinite(target) and 0 < target <= 1)
    ):
        raise _inconsistent(
            crate, f"comparison.json: target_accuracy must be a number in (0, 1], got {target!r}"
        )
    return float(target)


def _check_comparison_derived(
    crate: CrateContents,
    manifest: dict[str, Any],
    runs: Mapping[str, ArchivedRun],
    order: Sequence[str],
    comparison: Mapping[str, Any],
    *,
    lenient: bool,
) -> None:
    """comparison.json must equal what ``velocity.report.build_comparison`` makes of the
    archived runs (best, totals, accuracy drops, rounds to target, seed groups, ranking)."""
    from velocity.report import build_comparison
    from velocity.sweep import SweepData, SweepRun

    sweep_runs = []
    for name in order:
        run = runs[name]
        if run.spec is None or run.config is None:
            raise _inconsistent(
                crate, f"comparison.json cannot be re-derived: run {name!r} has no config.json"
            )
        sweep_runs.append(SweepRun(name, run.spec, run.config, run.summary, run.rounds))
    data = SweepData(out_dir=crate.path, manifest=manifest, runs=sweep_runs)
    derived = build_comparison(data, target_accuracy=_target_accuracy(crate, comparison))
    found = _first_disagreement(comparison, derived, "", lenient=lenient)
    if found is not None:
        path, old, new = found
        raise _inconsistent(
            crate,
            f"comparison.json: {path} is {old!r} but the archived runs' rounds.csv and "
            f"summary.json give {new!r}",
        )


def _check_comparison_markdown(
    crate: CrateContents, manifest: Mapping[str, Any], comparison: Mapping[str, Any]
) -> None:
    """comparison.md must be exactly what ``comparison_markdown`` renders of comparison.json."""
    from velocity.report import comparison_markdown

    try:
        text = crate.files["comparison.md"].decode("utf-8")
    except UnicodeDecodeError:
        raise _inconsistent(crate, "comparison.md is not UTF-8 text") from None
    expected = comparison_markdown(comparison, manifest)
    if text == expected:
        return
    old_lines, new_lines = text.split("\n"), expected.split("\n")
    line = next(
        (i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=False)) if a != b),
        min(len(old_lines), len(new_lines)),
    )
    old = old_lines[line] if line < len(old_lines) else _ABSENT
    new = new_lines[line] if line < len(new_lines) else _ABSENT
    raise _inconsistent(
        crate,
        f"comparison.md: line {line + 1} is {old!r} but comparison.json renders {new!r}",
    )


def _load_run(
    crate: CrateContents,
    name: str,
    comparison: Mapping[str, Any] | None,
    *,
    lenient: bool = False,
) -> ArchivedRun:
    config_name, summary_name, rounds_name = (
        f"{name}/{f}" for f in ("config.json", "summary.json", "rounds.csv")
    )
    spec = spec_data = fingerprint = config = None
    if config_name in crate.files:
        config = _json_document(crate, config_name, floats=False)
        if not isinstance(config, dict) or config.get("schema") != CONFIG_SCHEMA:
            raise _fail(crate.path, f"{config_name}: not a {CONFIG_SCHEMA} document")
        spec_data = config.get("spec")
        if not isinstance(spec_data, dict) or config.get("name") != name:
            raise _inconsistent(crate, f"{config_name} does not describe run {name!r}")
        if spec_data.get("name") != name:
            raise _inconsistent(
                crate, f"{config_name}: its spec is named {spec_data.get('name')!r}, not {name!r}"
            )
        fingerprint = _fingerprint_of(spec_data)
        if config.get("fingerprint") != fingerprint:
            raise _inconsistent(
                crate, f"{config_name}: the fingerprint does not match the spec (spec edited?)"
            )
        try:
            spec = spec_from_mapping(spec_data, config_name)
        except InputError as exc:
            raise _fail(crate.path, f"invalid archived spec: {exc}") from None
    if summary_name not in crate.files:
        if comparison is not None and comparison.get("status") in RESULT_STATUSES:
            raise _inconsistent(
                crate,
                f"comparison.json has results for {name!r} but the archive has no {summary_name}",
            )
        return ArchivedRun(name, spec, spec_data, fingerprint, None, None, None, config=config)
    if spec is None:
        raise _inconsistent(crate, f"{name!r} has results but no {config_name}")
    summary = _json_document(crate, summary_name)
    if not isinstance(summary, dict) or summary.get("schema") != SUMMARY_SCHEMA:
        raise _fail(crate.path, f"{summary_name}: not a {SUMMARY_SCHEMA} document")
    status = summary.get("status")
    if status not in RESULT_STATUSES:
        raise _fail(
            crate.path,
            f"{summary_name}: status must be one of {', '.join(RESULT_STATUSES)}, got {status!r}",
        )
    if summary.get("name") != name or summary.get("fingerprint") != fingerprint:
        raise _inconsistent(
            crate,
            f"{summary_name} names another run or configuration "
            "(name or fingerprint differs from config.json)",
        )
    if rounds_name not in crate.files:
        raise _inconsistent(crate, f"{name!r} has a summary but no {rounds_name}")
    columns, rounds = _rounds_from_csv(crate, rounds_name)
    completed = summary.get("rounds_completed")
    if completed is not None and completed != len(rounds):
        raise _inconsistent(
            crate, f"{summary_name} says {completed} rounds, {rounds_name} holds {len(rounds)}"
        )
    _check_final(crate, name, summary.get("final"), rounds, summary_name)
    _check_summary_derived(crate, name, summary, rounds, lenient=lenient)
    error = summary.get("error")
    if comparison is None:
        pass
    elif comparison.get("status") != status or comparison.get("fingerprint") != fingerprint:
        raise _inconsistent(
            crate,
            f"comparison.json's entry for {name!r} has status "
            f"{comparison.get('status')!r}, {summary_name} has {status!r} "
            "(or their fingerprints differ)",
        )
    else:
        if "spec" in comparison and comparison["spec"] != spec_data:
            raise _inconsistent(
                crate, f"comparison.json's spec for {name!r} differs from {config_name}"
            )
        if "error" in comparison and comparison["error"] != error:
            raise _inconsistent(
                crate, f"comparison.json's error for {name!r} differs from {summary_name}"
            )
        recorded = comparison.get("rounds")
        if isinstance(recorded, list):
            _same_records(crate, f"comparison.json ({name})", rounds, recorded)
        elif isinstance(recorded, int) and not isinstance(recorded, bool):
            if recorded != len(rounds):
                raise _inconsistent(
                    crate,
                    f"comparison.json says {name!r} ran {recorded} "
                    f"rounds, {rounds_name} holds {len(rounds)}",
                )
        _check_final(crate, name, comparison.get("final"), rounds, f"comparison.json ({name})")
    return ArchivedRun(
        name, spec, spec_data, fingerprint, status, error, rounds, columns, config, summary
    )


def _check_actions(crate: CrateContents, runs: Mapping[str, ArchivedRun]) -> None:
    expected = {
        "complete": "http://schema.org/CompletedActionStatus",
        "diverged": "http://schema.org/CompletedActionStatus",
        "failed": "http://schema.org/FailedActionStatus",
    }
    for run in runs.values():
        if run.status is None:
            continue
        action = crate.entities.get(f"#run-{run.name}")
        if action is None or "CreateAction" not in _types(action):
            raise _inconsistent(
                crate, f"{CRATE_METADATA_NAME} has no CreateAction for run {run.name!r}"
            )
        if action.get("actionStatus") != expected[run.status]:
            raise _inconsistent(
                crate,
                f"{CRATE_METADATA_NAME} records run {run.name!r} as "
                f"{action.get('actionStatus')!r}, its summary as {run.status!r}",
            )


def load_archived_sweep(crate: CrateContents) -> ArchivedSweep:
    """The sweep inside a verified crate, cross-checked: config, rounds.csv, summary.json,
    comparison.json and the crate's CreateActions must agree (ArchiveError 'inconsistent')."""
    if "manifest.json" not in crate.files:
        raise _fail(crate.path, "no manifest.json (not a velocity sweep archive)")
    manifest = _json_document(crate, "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("schema") != SWEEP_SCHEMA:
        raise _fail(crate.path, f"manifest.json is not a {SWEEP_SCHEMA} manifest")
    names = manifest.get("runs")
    if not isinstance(names, list) or not names:
        raise _fail(crate.path, "manifest.json has no list of runs")
    seen: set[str] = set()
    for name in names:
        problem = run_name_problem(name)
        if problem is not None:
            raise _fail(crate.path, f"manifest.json: run name {name!r} {problem}")
        if name.casefold() in seen:
            raise _fail(crate.path, f"manifest.json: run name {name!r} appears twice")
        seen.add(name.casefold())
    from velocity import __version__

    archived_version = velocity_version(manifest)
    # Another velocity may label or lay out the comparison differently; its numbers still count.
    lenient = archived_version != __version__
    notes = []
    if lenient:
        notes.append(
            f"archived by velocity {archived_version}, this is {__version__}: comparison.json's "
            "numbers were re-derived, its labels and comparison.md were not"
        )
    entries: dict[str, Mapping[str, Any]] = {}
    comparison: Any = None
    if "comparison.json" in crate.files:
        comparison = _json_document(crate, "comparison.json")
        rows = comparison.get("runs") if isinstance(comparison, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise _fail(crate.path, "comparison.json has no list of runs")
        for row in rows:
            if row.get("name") not in names:
                raise _inconsistent(
                    crate,
                    f"comparison.json has run {row.get('name')!r}, "
                    "which manifest.json does not list",
                )
            entries[row["name"]] = row
    runs = {name: _load_run(crate, name, entries.get(name), lenient=lenient) for name in names}
    _check_actions(crate, runs)
    if comparison is not None:
        _check_comparison_derived(crate, manifest, runs, names, comparison, lenient=lenient)
        if "comparison.md" in crate.files and not lenient:
            _check_comparison_markdown(crate, manifest, comparison)
    elif "comparison.md" in crate.files:
        raise _inconsistent(
            crate, "comparison.md is archived without the comparison.json it renders"
        )
    missing = [name for name in names if runs[name].status is None]
    return ArchivedSweep(
        manifest=manifest, runs=runs, order=list(names), missing=missing, notes=notes
    )


# ----------------------------------------------------------------------------- comparison


def values_match(archived: Any, reproduced: Any, *, exact: bool, tolerance: float) -> bool:
    """Whether two recorded values agree: integers and text exactly; floats bitwise with
    ``exact`` (so 0.0 != -0.0), else ``math.isclose(rel_tol=tolerance)``; NaN only matches NaN."""
    if archived is None or reproduced is None:
        return archived is None and reproduced is None
    numeric = (int, float)
    if (
        isinstance(archived, bool)
        or isinstance(reproduced, bool)
        or not (isinstance(archived, numeric) and isinstance(reproduced, numeric))
    ):
        return type(archived) is type(reproduced) and bool(archived == reproduced)
    if isinstance(archived, int) and isinstance(reproduced, int):
        return archived == reproduced
    a, b = float(archived), float(reproduced)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if exact:
        return struct.pack("<d", a) == struct.pack("<d", b)
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=0.0)


def _metric_order(
    archived: Sequence[Mapping[str, Any]], reproduced: Sequence[Mapping[str, Any]]
) -> list[str]:
    order: list[str] = []
    for record in [*archived, *reproduced]:
        for key in record:
            if key not in order and not _is_timing(key):
                order.append(key)
    return order


def _differences(
    archived: Sequence[Mapping[str, Any]],
    reproduced: Sequence[Mapping[str, Any]],
    *,
    exact: bool,
    tolerance: float,
) -> Iterable[dict[str, Any]]:
    metrics = _metric_order(archived, reproduced)
    for index, (old, new) in enumerate(zip(archived, reproduced, strict=False)):
        for metric in metrics:
            if not values_match(old.get(metric), new.get(metric), exact=exact, tolerance=tolerance):
                yield {
                    "round": old.get("round", index + 1),
                    "metric": metric,
                    "archived": old.get(metric),
                    "reproduced": new.get(metric),
                }


def _first_difference(
    archived: Sequence[Mapping[str, Any]],
    reproduced: Sequence[Mapping[str, Any]],
    *,
    exact: bool,
    tolerance: float,
) -> dict[str, Any] | None:
    return next(iter(_differences(archived, reproduced, exact=exact, tolerance=tolerance)), None)


def compare_rounds(
    archived: Sequence[Mapping[str, Any]],
    reproduced: Sequence[Mapping[str, Any]],
    *,
    exact: bool,
    tolerance: float,
) -> tuple[dict[str, Any] | None, int]:
    """First difference and number of differing values between two per-round trajectories
    (every metric but timings); a different number of rounds is a difference too."""
    found = list(_differences(archived, reproduced, exact=exact, tolerance=tolerance))
    if len(archived) != len(reproduced):
        shorter = min(len(archived), len(reproduced))
        found.append(
            {
                "round": shorter + 1,
                "metric": "rounds",
                "archived": len(archived),
                "reproduced": len(reproduced),
            }
        )
    return (found[0] if found else None), len(found)


def _format_value(value: Any) -> str:
    return "missing" if value is None else repr(value)


def compare_run(
    archived: ArchivedRun,
    reproduced_status: str | None,
    reproduced_rounds: Sequence[Mapping[str, Any]] | None,
    *,
    exact: bool,
    tolerance: float,
    reproduced_error: str | None = None,
) -> RunComparison:
    """Verdict for one run: same status (a failed run failing with the same exception type)
    and same trajectory, else where it first differs."""
    verdict = RunComparison(
        archived.name, "ok", archived.status, reproduced_status, reproduced_error=reproduced_error
    )
    if archived.status is None or archived.rounds is None:
        verdict.verdict = "MISSING"
        verdict.detail = "the archive holds no results for this run"
        if reproduced_status is not None:
            verdict.detail += f" (re-run: {reproduced_status})"
        return verdict
    if reproduced_status is None or reproduced_rounds is None:
        verdict.verdict = "MISSING"
        verdict.detail = "the re-run produced no results for this run"
        return verdict
    first, count = compare_rounds(
        archived.rounds, reproduced_rounds, exact=exact, tolerance=tolerance
    )
    verdict.first_difference, verdict.differences = first, count
    if reproduced_status != archived.status:
        verdict.differences += 1
        verdict.verdict = "FAILED" if reproduced_status == "failed" else "MISMATCH"
        verdict.detail = f"status {archived.status} archived, {reproduced_status} now"
        if reproduced_status == "failed" and reproduced_error:
            verdict.detail += f": {reproduced_error}"
        elif first is not None:
            verdict.detail += "; " + _describe_difference(first)
        return verdict
    if archived.status == "failed" and _error_type(archived.error) != _error_type(reproduced_error):
        # The message wording may change between versions; the kind of failure may not.
        verdict.differences += 1
        verdict.verdict = "MISMATCH"
        verdict.detail = (
            f"failed differently: archived {_format_value(archived.error)}, "
            f"now {_format_value(reproduced_error)}"
        )
        return verdict
    if first is not None:
        verdict.verdict = "MISMATCH"
        verdict.detail = _describe_difference(first)
        if count > 1:
            verdict.detail += f" ({count} differences)"
    return verdict


def _error_type(error: str | None) -> str | None:
    """The exception type of a recorded error (the sweep writes them as 'Type: message')."""
    if error is None:
        return None
    return error.split(":", 1)[0].strip()


def _describe_difference(first: Mapping[str, Any]) -> str:
    if first["metric"] == "rounds":
        return f"{first['archived']} rounds archived, {first['reproduced']} now"
    return (
        f"round {first['round']} {first['metric']}: archived "
        f"{_format_value(first['archived'])}, now {_format_value(first['reproduced'])}"
    )


# ----------------------------------------------------------------------------- environment


def _current_packages() -> dict[str, str]:
    packages = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[str(name)] = str(dist.version)
    return packages


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def environment_drift(
    archived: Mapping[str, str],
    current: Mapping[str, str],
    *,
    archived_velocity: str | None = None,
    current_velocity: str | None = None,
) -> list[PackageDrift]:
    """Packages whose versions differ (or exist on one side only): velocity and numpy first."""
    old = {_normalized(k): (k, v) for k, v in archived.items()}
    new = {_normalized(k): (k, v) for k, v in current.items()}
    drift: list[PackageDrift] = []
    if archived_velocity and current_velocity and archived_velocity != current_velocity:
        drift.append(PackageDrift("velocity", archived_velocity, current_velocity))
    first = ("velocity-fl", "numpy")
    keys = sorted(
        set(old) | set(new), key=lambda k: (k not in first, first.index(k) if k in first else 0, k)
    )
    for key in keys:
        if key == "velocity-fl" and drift:
            continue  # already reported from the manifest's own velocity version
        before, after = old.get(key, (None, None)), new.get(key, (None, None))
        if before[1] != after[1]:
            drift.append(PackageDrift(before[0] or after[0] or key, before[1], after[1]))
    return drift


def _platform_notes(manifest: Mapping[str, Any]) -> list[str]:
    import platform

    notes = []
    python = manifest.get("python")
    archived_python = python.get("version") if isinstance(python, Mapping) else python
    if isinstance(archived_python, str) and archived_python != platform.python_version():
        notes.append(f"Python {archived_python} archived, {platform.python_version()} here")
    host = manifest.get("host")
    if isinstance(host, Mapping):
        machine, system = host.get("machine"), host.get("system")
        if machine and machine != platform.machine():
            notes.append(f"machine {machine} archived, {platform.machine()} here")
        if system and system != platform.system():
            notes.append(f"OS {system} archived, {platform.system()} here")
    if notes:
        notes.append(
            "bit-exact results are only promised on the same platform; use --tolerance elsewhere"
        )
    return notes


# ----------------------------------------------------------------------------- reproduce


def default_reproduce_dir(root: str | Path = "out") -> Path:
    """``out/<UTC timestamp>-reproduce`` (a suffix keeps two in one second apart)."""
    from velocity.sweep import default_out_dir

    return default_out_dir(root, kind="reproduce")


def _check_options(
    exact: bool,
    tolerance: float | None,
    parallel: int | None,
    runs: Sequence[str] | None,
    out_dir: Path,
) -> float:
    if tolerance is not None:
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
            raise InputError(f"--tolerance must be a number >= 0, got {tolerance!r}")
        if not math.isfinite(tolerance) or tolerance < 0:
            raise InputError(f"--tolerance must be a finite number >= 0, got {tolerance!r}")
        if exact:
            raise InputError("give either --exact (bitwise) or --tolerance, not both")
    if parallel is not None and (isinstance(parallel, bool) or parallel < 1):
        raise InputError(f"--parallel must be an integer >= 1, got {parallel!r}")
    for name in runs or []:
        if not RUN_NAME_PATTERN.match(name) or name in (".", ".."):
            raise InputError(f"--runs: {name!r} is not a run name (letters, digits, . _ = + -)")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(
            "output folder exists and is not empty; choose another --out", source=str(out_dir)
        )
    return DEFAULT_TOLERANCE if tolerance is None else float(tolerance)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reproduced(
    out_dir: Path, name: str
) -> tuple[str | None, str | None, list[dict[str, Any]] | None]:
    summary_path = out_dir / name / "summary.json"
    if not summary_path.is_file():
        return None, None, None
    summary = read_json(summary_path)
    rounds_path = out_dir / name / "rounds.csv"
    rounds = read_rounds_csv(rounds_path) if rounds_path.is_file() else []
    return summary.get("status"), summary.get("error"), rounds


def _reread_fields(spec: RunSpec, archived: Mapping[str, Any]) -> list[str]:
    """Fields whose canonical value under this velocity differs from the archived one."""
    now = spec.canonical()
    return sorted(k for k in set(now) | set(archived) if now.get(k) != archived.get(k))


def reproduce_archive(
    archive: str | Path,
    out_dir: str | Path | None = None,
    *,
    check: bool = True,
    exact: bool = False,
    tolerance: float | None = None,
    runs: Sequence[str] | None = None,
    parallel: int | None = None,
    command: list[str] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    on_verified: Callable[[ArchivedSweep, list[PackageDrift], list[str]], None] | None = None,
) -> ReproductionReport:
    """Verify ``archive``, re-run its runs (or ``runs``) into ``out_dir`` and compare them.

    Options are checked first, then the whole archive is verified (ArchiveError, nothing run);
    only then does ``velocity.sweep.run_sweep`` re-run the archived specs unchanged. Writes
    ``reproduction.json`` into ``out_dir``; ``report.exit_code`` is 1 on any mismatch when
    ``check`` is true. ``on_verified`` is called once verification passed, before any run.
    """
    target = Path(out_dir) if out_dir is not None else default_reproduce_dir()
    tol = _check_options(exact, tolerance, parallel, runs, target)
    started_at = _utc_now()
    crate = read_crate(archive)
    verify_crate(crate)
    sweep = load_archived_sweep(crate)
    selected = list(dict.fromkeys(runs)) if runs else list(sweep.order)
    unknown = [name for name in selected if name not in sweep.runs]
    if unknown:
        raise InputError(
            f"--runs: no run {unknown[0]!r} in the archive; it holds: {', '.join(sweep.order)}"
        )

    from velocity import __version__

    drift = environment_drift(
        _packages(sweep.manifest),
        _current_packages(),
        archived_velocity=velocity_version(sweep.manifest),
        current_velocity=__version__,
    )
    platform_notes = _platform_notes(sweep.manifest)
    if on_verified is not None:
        on_verified(sweep, drift, platform_notes)

    notes = list(sweep.notes)
    notes += [
        f"the archive holds no results for {name!r}" for name in sweep.missing if name in selected
    ]
    to_run: list[RunSpec] = []
    for name in selected:
        run = sweep.runs[name]
        if run.spec is None:
            notes.append(f"the archive holds no config.json for {name!r}; it was not re-run")
            continue
        changed = _reread_fields(run.spec, run.spec_data or {})
        if changed:
            notes.append(
                f"this velocity reads the archived spec of {name!r} differently "
                f"({', '.join(changed)}): results may differ"
            )
        to_run.append(run.spec)
    if to_run:
        from velocity.sweep import run_sweep

        run_sweep(
            to_run,
            target,
            parallel=parallel,
            command=command if command is not None else ["velocity", "reproduce", str(archive)],
            store=None,  # a reproduction writes nothing outside its own folder
            on_event=on_event,
        )
    else:
        target.mkdir(parents=True, exist_ok=True)
    comparisons = []
    for name in selected:
        status, error, rounds = _reproduced(target, name)
        comparisons.append(
            compare_run(
                sweep.runs[name], status, rounds, exact=exact, tolerance=tol, reproduced_error=error
            )
        )
    report = ReproductionReport(
        archive=Path(archive),
        archive_sha256=crate.sha256,
        out_dir=target,
        checked=check,
        exact=exact,
        tolerance=tol,
        runs=comparisons,
        drift=drift,
        platform_notes=platform_notes,
        notes=notes,
        started_at=started_at,
        finished_at=_utc_now(),
    )
    write_json_atomic(target / "reproduction.json", report.to_json())
    return report


def _packages(manifest: Mapping[str, Any]) -> dict[str, str]:
    packages = manifest.get("packages")
    if not isinstance(packages, Mapping):
        return {}
    return {str(k): str(v) for k, v in packages.items()}


# ----------------------------------------------------------------------------- inspect


@dataclass
class ArchiveInspection:
    """What ``velocity inspect`` shows: the crate's description, runs and verification status."""

    path: Path
    sha256: str
    size: int
    files: int
    name: str | None
    date_published: str | None
    license: str | None
    authors: list[str]
    velocity_version: str | None
    python: str | None
    platform: str | None
    numpy: str | None
    packages: dict[str, str]
    runs: list[dict[str, Any]]
    missing_runs: list[str]
    verified: bool
    problem: str | None

    def to_json(self) -> dict[str, Any]:
        payload = dict(self.__dict__)
        payload["path"] = str(self.path)
        return payload


def _names_of(crate: CrateContents, refs: Any) -> list[str]:
    items = refs if isinstance(refs, list) else [refs]
    names = []
    for ref in items:
        if isinstance(ref, Mapping) and isinstance(ref.get("@id"), str):
            entity = crate.entities.get(ref["@id"], {})
            names.append(str(entity.get("name", ref["@id"])))
        elif isinstance(ref, str):
            names.append(ref)
    return names


def inspect_archive(path: str | Path) -> ArchiveInspection:
    """Describe an archive without running anything. An unsafe archive raises ArchiveError; a
    tampered or inconsistent one is described with ``verified=False`` and the problem."""
    crate = read_crate(path)
    root = crate.entities.get("./", {})
    problem: str | None = None
    sweep: ArchivedSweep | None = None
    try:
        verify_crate(crate)
        sweep = load_archived_sweep(crate)
    except ArchiveError as exc:
        problem = str(exc)
    manifest: dict[str, Any] = {}
    if sweep is not None:
        manifest = sweep.manifest
    elif "manifest.json" in crate.files:
        try:
            candidate = _json_document(crate, "manifest.json")
            manifest = candidate if isinstance(candidate, dict) else {}
        except ArchiveError:
            manifest = {}
    python = manifest.get("python")
    host = manifest.get("host")
    numpy = manifest.get("numpy")
    runs: list[dict[str, Any]] = []
    if sweep is not None:
        for name in sweep.order:
            run = sweep.runs[name]
            final: dict[str, Any] = {}
            if run.rounds:
                final = next(
                    (r for r in reversed(run.rounds) if r.get("test_accuracy") is not None),
                    run.rounds[-1],
                )
            runs.append(
                {
                    "name": name,
                    "status": run.status or "missing",
                    "rounds": len(run.rounds) if run.rounds is not None else None,
                    "test_accuracy": final.get("test_accuracy"),
                    "test_loss": final.get("test_loss"),
                    "fingerprint": run.fingerprint,
                    "error": run.error,
                }
            )
    else:
        for entity in crate.entities.values():
            if "CreateAction" in _types(entity):
                runs.append(
                    {
                        "name": str(entity.get("@id", "")).removeprefix("#run-"),
                        "status": str(entity.get("actionStatus", "")).rsplit("/", 1)[-1],
                    }
                )
    license_ref = root.get("license")
    license_name = None
    if license_ref is not None:
        names = _names_of(crate, license_ref)
        license_name = names[0] if names else None
    return ArchiveInspection(
        path=crate.path,
        sha256=crate.sha256,
        size=crate.size,
        files=len(crate.files),
        name=root.get("name") if isinstance(root.get("name"), str) else None,
        date_published=iso_utc(root.get("datePublished")) or root.get("datePublished"),
        license=license_name,
        authors=_names_of(crate, root.get("author")) if root.get("author") else [],
        velocity_version=velocity_version(manifest) if manifest else None,
        python=(python.get("version") if isinstance(python, Mapping) else python)
        if python
        else None,
        platform=host.get("os") if isinstance(host, Mapping) else None,
        numpy=(numpy.get("version") if isinstance(numpy, Mapping) else numpy) if numpy else None,
        packages=_packages(manifest),
        runs=runs,
        missing_runs=sweep.missing if sweep is not None else [],
        verified=problem is None,
        problem=problem,
    )
