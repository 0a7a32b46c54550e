"""The sweep folder format, read and written in this one place.

A sweep folder holds ``manifest.json`` (the run list and every run's config, written first) and
per run ``config.json``, ``rounds.csv`` and ``summary.json`` (written last). The reader works on a
folder on disk or on an archive's files in memory, and checks each finished run the same way for
``--resume``, ``velocity archive``, ``inspect`` and ``reproduce``: a run whose files disagree with
each other carries a ``problem`` and its results are never trusted.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from pydantic import ValidationError

from velocity.artifacts import (
    decode_floats,
    decode_floats_at,
    format_csv_value,
    parse_csv_value,
    rounds_csv_text,
    write_json_atomic,
    write_text_atomic,
)
from velocity.datafiles import is_copy_name, recorded_specs
from velocity.errors import InputError
from velocity.records import (
    SUMMARY_SCHEMA,
    is_timing,
    rounds_columns,
    run_name_problem,
    summarize_rounds,
)
from velocity.spec import RunSpec

__all__ = [
    "CONFIG_SCHEMA",
    "DAMAGED_SUFFIX",
    "LOCK_NAME",
    "OLDER_SWEEP_SCHEMAS",
    "RESULT_STATUSES",
    "RUN_FILES",
    "SET_ASIDE",
    "SUMMARY_NUMBERS",
    "SWEEP_SCHEMA",
    "DiskFolder",
    "FileSource",
    "MemoryFolder",
    "SweepData",
    "SweepLock",
    "SweepRun",
    "as_in_csv",
    "check_data_files",
    "config_payload",
    "final_problem",
    "fingerprint_of",
    "first_disagreement",
    "lock_holder",
    "older_sweep_message",
    "provide_plugins",
    "read_manifest",
    "read_run",
    "read_sweep",
    "set_aside",
    "set_aside_misplaced",
    "sweep_specs",
    "values_match",
    "write_config",
    "write_manifest",
    "write_run_results",
]

SWEEP_SCHEMA = "velocity.sweep/2"
OLDER_SWEEP_SCHEMAS = {
    "velocity.sweep/1": "per-client shuffle generators and Glorot-initialized logistic regression",
}
"""Manifest schemas of earlier velocity releases whose runs this one cannot reproduce (their
results came from other arithmetic), with what changed since: such a folder or archive is
refused with one line naming the version that made it."""
CONFIG_SCHEMA = "velocity.run-config/1"
RESULT_STATUSES = ("complete", "diverged", "failed")
ABSENT = "<absent>"
RUN_FILES = ("config.json", "rounds.csv", "summary.json")
"""The files of a run folder (``<run>/``)."""
LOCK_NAME = ".sweep.lock"
"""The lock file a running sweep holds in its folder (see :class:`SweepLock`)."""
DAMAGED_SUFFIX = ".damaged-"
"""``<run>.damaged-<n>/``: where ``--resume`` keeps a damaged run's files before re-running it."""
SET_ASIDE = re.compile(r".+\.damaged-[0-9]+")
"""The name of an entry ``--resume`` set aside: kept for the user, no part of the sweep."""


# ----------------------------------------------------------------------------- where files live


class FileSource(Protocol):
    """Read access to a sweep's files by posix path relative to the sweep folder."""

    @property
    def label(self) -> str:
        """Where the files are, for messages."""

    def read(self, name: str) -> bytes | None:
        """The file's bytes, None when there is no file of that name (raises OSError only for a
        file that exists but cannot be read)."""


@dataclass(frozen=True)
class DiskFolder:
    """A sweep folder on disk."""

    root: Path

    @property
    def label(self) -> str:
        return str(self.root)

    def read(self, name: str) -> bytes | None:
        path = self.root / name
        link = self._link_in(name)
        if link is not None:
            raise OSError(f"{link} is a symbolic link; a sweep folder holds plain files only")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise OSError(f"{path.parent} is a file where a folder belongs") from None
        except IsADirectoryError:
            raise OSError(f"{path} is a folder where a file belongs") from None

    def _link_in(self, name: str) -> Path | None:
        """The first symbolic link on the way from the sweep folder to ``name``, if any: a
        link could point outside the folder, and what is written there must stay inside."""
        path = self.root
        for part in Path(name).parts:
            path = path / part
            if path.is_symlink():
                return path
        return None

    def run_folder_problem(self, name: str) -> str | None:
        """Why ``<name>/`` cannot take the run's files as it is (None when it can): a file or
        link where the folder belongs, a folder or link where one of its files belongs."""
        folder = self.root / name
        try:
            mode = folder.lstat().st_mode
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(mode):
            return f"{folder} is a symbolic link; a sweep folder holds plain files only"
        if not stat.S_ISDIR(mode):
            return f"{folder} is a file where the run's folder belongs"
        for file_name in RUN_FILES:
            try:
                mode = (folder / file_name).lstat().st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(mode):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a plain file"
                return f"{folder / file_name} is {kind}"
        return None


@dataclass(frozen=True)
class MemoryFolder:
    """A sweep's files held in memory (an archive read by ``velocity.archives``)."""

    files: Mapping[str, bytes]
    label: str

    def read(self, name: str) -> bytes | None:
        return self.files.get(name)


# ----------------------------------------------------------------------------- decoding


SUMMARY_NUMBERS = (("final",), ("best",), ("totals",), ("wall_seconds",))
"""Where summary.json holds numbers: the only places its "NaN"/"Infinity" strings are floats."""


def _json(data: bytes, what: str, *, floats: bool = True) -> Any:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{what}: not valid JSON ({exc})") from None
    return decode_floats(value) if floats else value


def _rounds(data: bytes, what: str) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
        columns = list(reader.fieldnames or [])
        rows = [{k: parse_csv_value(v or "") for k, v in row.items()} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{what}: not a readable CSV ({exc})") from None
    if "round" not in columns or any(None in row for row in rows):
        raise ValueError(f"{what}: malformed rounds table (needs a 'round' column)")
    return columns, rows


def fingerprint_of(spec_data: Mapping[str, Any]) -> str:
    """RunSpec.fingerprint computed on a recorded spec dict itself (independent of this
    version's reading of it)."""
    import hashlib

    data = {k: v for k, v in spec_data.items() if k != "name"}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- comparing values


def values_match(archived: Any, reproduced: Any, *, exact: bool, tolerance: float) -> bool:
    """Whether two recorded values agree: integers and text exactly; floats bitwise with
    ``exact`` (so 0.0 != -0.0), else ``math.isclose(rel_tol=tolerance)``; NaN only matches NaN."""
    import struct

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


def as_in_csv(value: Any) -> Any:
    """A JSON-recorded value as rounds.csv records it (CSV cannot tell "2" from 2)."""
    return parse_csv_value(format_csv_value(value))


def _element_label(item: Any, index: int) -> str:
    if isinstance(item, Mapping):
        for key in ("name", "label"):
            if isinstance(item.get(key), str):
                return repr(item[key])
    return str(index)


def first_disagreement(
    recorded: Any, derived: Any, where: str = "", *, skip: frozenset[str] = frozenset()
) -> tuple[str, Any, Any] | None:
    """Where a recorded document first differs from the one re-derived from rounds.csv:
    ``(field path, recorded, derived)``; timings and the keys in ``skip`` never count."""
    if isinstance(recorded, Mapping) and isinstance(derived, Mapping):
        for key in dict.fromkeys([*derived, *recorded]):
            if is_timing(str(key)) or key in skip:
                continue
            path = f"{where}.{key}" if where else str(key)
            if key not in recorded or key not in derived:
                return path, recorded.get(key, ABSENT), derived.get(key, ABSENT)
            found = first_disagreement(recorded[key], derived[key], path, skip=skip)
            if found is not None:
                return found
        return None
    if isinstance(recorded, list) and isinstance(derived, list):
        if len(recorded) != len(derived):
            return f"{where} (number of entries)", len(recorded), len(derived)
        for index, (old, new) in enumerate(zip(recorded, derived, strict=True)):
            found = first_disagreement(
                old, new, f"{where}[{_element_label(new, index)}]", skip=skip
            )
            if found is not None:
                return found
        return None
    if isinstance(recorded, Mapping | list) or isinstance(derived, Mapping | list):
        return where, recorded, derived
    if not values_match(recorded, derived, exact=True, tolerance=0.0):
        return where, recorded, derived
    return None


def final_problem(
    final: Any, rounds: Sequence[Mapping[str, Any]], label: str, rounds_name: str
) -> str | None:
    """Why a recorded ``final`` block is not the rounds' own final record (None if it is)."""
    if not isinstance(final, Mapping) or not final:
        if rounds and isinstance(final, Mapping):
            return f"{label} has no final metrics but {rounds_name} has rounds"
        if not isinstance(final, Mapping):
            return f"{label}: final must be a table of metrics, got {final!r}"
        return None
    by_round = {r.get("round"): r for r in rounds}
    record = by_round.get(final.get("round"))
    if record is None:
        return f"{label}: final round {final.get('round')!r} is not in {rounds_name}"
    for metric, value in final.items():
        if is_timing(metric):
            continue
        if not values_match(as_in_csv(value), record.get(metric), exact=True, tolerance=0.0):
            return (
                f"{label}: final {metric} {value!r} differs from {rounds_name} "
                f"({record.get(metric)!r})"
            )
    return None


# ----------------------------------------------------------------------------- reading


@dataclass
class SweepRun:
    """One run of a sweep as read back: its config and, when finished and consistent, results.

    ``problem`` says why the run's results (or config) cannot be trusted; such a run counts as
    unfinished (``complete`` is false) and its ``summary``/``rounds`` are what the files held.
    """

    name: str
    spec: RunSpec | None
    config: dict[str, Any] | None
    summary: dict[str, Any] | None
    rounds: list[dict[str, Any]] | None
    columns: list[str] = field(default_factory=list)
    spec_data: dict[str, Any] | None = None
    fingerprint: str | None = None
    problem: str | None = None

    @property
    def complete(self) -> bool:
        """Finished with results that agree with each other and with the config."""
        return self.summary is not None and self.problem is None

    @property
    def status(self) -> str | None:
        return self.summary.get("status") if self.complete and self.summary else None

    @property
    def error(self) -> str | None:
        return self.summary.get("error") if self.complete and self.summary else None


@dataclass
class SweepData:
    """A sweep as read back: its folder (or archive), manifest and runs in manifest order."""

    out_dir: Path
    manifest: dict[str, Any]
    runs: list[SweepRun]

    def run(self, name: str) -> SweepRun:
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(name)

    @property
    def missing(self) -> list[str]:
        """Runs without trustworthy results."""
        return [run.name for run in self.runs if not run.complete]


def older_sweep_message(manifest: Mapping[str, Any]) -> str:
    """The one line that refuses a sweep written with an older manifest schema."""
    schema = str(manifest.get("schema"))
    version = manifest.get("velocity_version")
    made = version if isinstance(version, str) and version else "an older velocity"
    pin = f"pip install 'velocity-fl=={version}'" if made == version else "that release"
    return (
        f"made by velocity {made} ({schema}: {OLDER_SWEEP_SCHEMAS[schema]}); this velocity "
        f"writes {SWEEP_SCHEMA} and cannot reproduce its results: use velocity {made} ({pin})"
    )


def read_manifest(source: FileSource) -> dict[str, Any]:
    """The sweep's manifest, checked (schema, a non-empty list of distinct, safe run names)."""
    try:
        data = source.read("manifest.json")
    except OSError as exc:
        raise InputError(f"unreadable manifest.json ({exc})", source=source.label) from None
    if data is None:
        raise InputError("not a sweep folder (no manifest.json)", source=source.label)
    try:
        manifest = _json(data, "manifest.json", floats=False)
    except ValueError as exc:
        raise InputError(str(exc), source=source.label) from None
    if isinstance(manifest, dict) and manifest.get("schema") in OLDER_SWEEP_SCHEMAS:
        raise InputError(older_sweep_message(manifest), source=source.label)
    if not isinstance(manifest, dict) or manifest.get("schema") != SWEEP_SCHEMA:
        raise InputError(f"manifest.json is not a {SWEEP_SCHEMA} manifest", source=source.label)
    names = manifest.get("runs")
    if not isinstance(names, list) or not names:
        raise InputError(
            "manifest.json: 'runs' must be a non-empty list of run names", source=source.label
        )
    seen: set[str] = set()
    for name in names:
        problem = run_name_problem(name)
        if problem is not None:
            raise InputError(f"manifest.json: {problem}", source=source.label)
        if name.casefold() in seen:
            raise InputError(f"manifest.json: run name {name!r} appears twice", source=source.label)
        seen.add(name.casefold())
    configs = manifest.get("configs")
    if configs is not None and not isinstance(configs, dict):
        raise InputError("manifest.json: 'configs' must be a table", source=source.label)
    data_files = manifest.get("data_files", [])
    if not isinstance(data_files, list) or not all(
        isinstance(r, dict)
        and set(r) == {"name", "sha256"}
        and is_copy_name(r["name"])
        and isinstance(r["sha256"], str)
        for r in data_files
    ):
        raise InputError(
            "manifest.json: 'data_files' must be a list of {name, sha256} with plain file names",
            source=source.label,
        )
    plugins = manifest.get("plugins", [])
    if not isinstance(plugins, list) or not all(
        isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("sha256"), str)
        for r in plugins
    ):
        raise InputError(
            "manifest.json: 'plugins' must be a list of {name, sha256}", source=source.label
        )
    return manifest


def provide_plugins(source: FileSource, manifest: Mapping[str, Any]) -> list[dict[str, str]]:
    """Make the sweep's own plug-in copies (``plugins/<name>``) loadable, each checked against
    the sha256 the manifest records; returns the records."""
    import hashlib

    from velocity.plugins import copy_name, provide_sources

    records = list(manifest.get("plugins", []))
    files = {}
    for record in records:
        name = f"plugins/{copy_name(record)}"
        try:
            data = source.read(name)
        except OSError as exc:
            raise InputError(f"unreadable {name} ({exc})", source=source.label) from None
        if data is None:
            raise InputError(
                f"{name} is missing: the sweep's runs need that plug-in", source=source.label
            )
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise InputError(
                f"{name} does not have the sha256 manifest.json records for it (edited?)",
                source=source.label,
            )
        files[copy_name(record)] = data
    provide_sources(files, origin=f"{source.label}/plugins")
    return records


def check_data_files(source: FileSource, manifest: Mapping[str, Any]) -> list[str]:
    """Check the sweep's copies of its runs' data files (``data/<name>``) against the sha256
    the manifest records (InputError naming an edited copy); returns the names of the copies
    the folder (or archive) does not hold (an archive made with ``--no-data``)."""
    from velocity.datafiles import file_sha256

    missing = []
    for record in manifest.get("data_files", []):
        name, sha = f"data/{record['name']}", record["sha256"]
        if isinstance(source, DiskFolder):
            path = source.root / name
            if not path.is_file():
                missing.append(record["name"])
                continue
            found = file_sha256(path)
        else:
            try:
                data = source.read(name)
            except OSError as exc:
                raise InputError(f"unreadable {name} ({exc})", source=source.label) from None
            if data is None:
                missing.append(record["name"])
                continue
            found = hashlib.sha256(data).hexdigest()
        if found != sha:
            raise InputError(
                f"{name} does not have the sha256 manifest.json records for it (edited?)",
                source=source.label,
            )
    return missing


def _read_config(
    source: FileSource, name: str, saved: Any
) -> tuple[dict[str, Any] | None, str | None]:
    """The run's config document, and the problem with it (None when it is consistent)."""
    config_name = f"{name}/config.json"
    problem: str | None = None
    try:
        data = source.read(config_name)
        config = _json(data, config_name, floats=False) if data is not None else None
    except (OSError, ValueError) as exc:
        config, problem = None, str(exc)
    if config is None and isinstance(saved, dict):
        # Killed after the manifest but before this config: the manifest has it.
        return saved, problem
    if config is None:
        return None, problem
    if not isinstance(config, dict) or config.get("schema") != CONFIG_SCHEMA:
        return None, f"{config_name}: not a {CONFIG_SCHEMA} document"
    if isinstance(saved, dict) and config != saved:
        return saved, f"{config_name} differs from the config manifest.json recorded (edited?)"
    return config, None


def _check_config(name: str, config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    where = f"{name}/config.json"
    spec_data = config.get("spec")
    if not isinstance(spec_data, dict) or config.get("name") != name:
        raise ValueError(f"{where} does not describe run {name!r}")
    if spec_data.get("name") != name:
        raise ValueError(f"{where}: its spec is named {spec_data.get('name')!r}, not {name!r}")
    fingerprint = fingerprint_of(spec_data)
    if config.get("fingerprint") != fingerprint:
        raise ValueError(f"{where}: the fingerprint does not match the spec (spec edited?)")
    return spec_data, fingerprint


def _results_problem(
    name: str,
    summary: Any,
    rounds: list[dict[str, Any]],
    fingerprint: str,
    *,
    skip: frozenset[str],
) -> str | None:
    """Why a run's summary.json and rounds.csv do not describe one finished run of its config."""
    summary_name, rounds_name = f"{name}/summary.json", f"{name}/rounds.csv"
    if not isinstance(summary, dict) or summary.get("schema") != SUMMARY_SCHEMA:
        return f"{summary_name}: not a {SUMMARY_SCHEMA} document"
    status = summary.get("status")
    if status not in RESULT_STATUSES:
        return f"{summary_name}: status must be one of {', '.join(RESULT_STATUSES)}, got {status!r}"
    if summary.get("name") != name or summary.get("fingerprint") != fingerprint:
        return (
            f"{summary_name} names another run or configuration "
            "(name or fingerprint differs from config.json)"
        )
    completed = summary.get("rounds_completed")
    if completed != len(rounds):
        return f"{summary_name} says {completed!r} rounds, {rounds_name} holds {len(rounds)}"
    problem = final_problem(summary.get("final"), rounds, summary_name, rounds_name)
    if problem is not None:
        return problem
    best, totals = summarize_rounds(rounds)
    for key, derived in (("best", best), ("totals", totals)):
        found = first_disagreement(summary.get(key, ABSENT), derived, key, skip=skip)
        if found is not None:
            path, old, new = found
            return f"{summary_name}: {path} is {old!r} but {rounds_name} gives {new!r}"
    return None


def read_run(
    source: FileSource,
    name: str,
    saved_config: Any = None,
    *,
    with_results: bool = True,
    skip: frozenset[str] = frozenset(),
) -> SweepRun:
    """One run of a sweep: its config and, with ``with_results``, its results.

    ``saved_config`` is the manifest's copy of the config, which the run's own must equal (the
    manifest's copy wins). A config that exists but is invalid is an InputError; no config at
    all (``spec`` None), or results that disagree with each other or belong to another config,
    set ``problem``.
    """
    config, config_problem = _read_config(source, name, saved_config)
    if config is None:
        return SweepRun(
            name, None, None, None, None, problem=config_problem or f"{name}/config.json missing"
        )
    try:
        spec_data, fingerprint = _check_config(name, config)
        with recorded_specs():  # a recorded spec never makes velocity read a path it names
            spec = RunSpec.model_validate(spec_data)
    except ValidationError as exc:  # before ValueError, its base class: one line, not pydantic's
        from velocity.spec import format_validation_error

        raise InputError(
            f"invalid spec: {format_validation_error(exc, f'{name}/config.json')}",
            source=source.label,
        ) from None
    except ValueError as exc:
        raise InputError(str(exc), source=source.label) from None
    if config_problem is None and isinstance(source, DiskFolder):
        config_problem = source.run_folder_problem(name)
    run = SweepRun(
        name=name,
        spec=spec,
        config=config,
        summary=None,
        rounds=None,
        spec_data=spec_data,
        fingerprint=fingerprint,
        problem=config_problem,
    )
    summary_name, rounds_name = f"{name}/summary.json", f"{name}/rounds.csv"
    try:
        summary_bytes = source.read(summary_name)
    except OSError as exc:
        run.summary, run.problem = {}, str(exc)
        return run
    if summary_bytes is None or not with_results:
        if summary_bytes is not None:
            run.summary = {}
        return run
    try:
        summary = decode_floats_at(
            _json(summary_bytes, summary_name, floats=False), SUMMARY_NUMBERS
        )
        rounds_bytes = source.read(rounds_name)
        if rounds_bytes is None:
            raise ValueError(f"{name!r} has a summary but no {rounds_name}")
        run.columns, rounds = _rounds(rounds_bytes, rounds_name)
    except (OSError, ValueError) as exc:
        run.summary, run.problem = {}, str(exc)
        return run
    run.summary = summary if isinstance(summary, dict) else {}
    run.rounds = rounds
    run.problem = run.problem or _results_problem(name, summary, rounds, fingerprint, skip=skip)
    return run


def read_sweep(
    folder: str | Path | FileSource,
    *,
    with_results: bool = True,
    skip: frozenset[str] = frozenset(),
) -> SweepData:
    """Read a sweep (a folder path, or any :class:`FileSource`): manifest, every run's config
    and, with ``with_results``, its checked results. ``skip`` names summary keys another
    velocity version may record differently (archives only)."""
    source: FileSource = DiskFolder(Path(folder)) if isinstance(folder, str | Path) else folder
    manifest = read_manifest(source)
    provide_plugins(source, manifest)
    check_data_files(source, manifest)
    configs = manifest.get("configs") or {}
    runs = [
        read_run(source, name, configs.get(name), with_results=with_results, skip=skip)
        for name in manifest["runs"]
    ]
    out_dir = source.root if isinstance(source, DiskFolder) else Path(source.label)
    return SweepData(out_dir=out_dir, manifest=manifest, runs=runs)


def sweep_specs(out_dir: str | Path) -> list[RunSpec]:
    """The RunSpecs a sweep folder was started with (for ``--resume``), in order."""
    specs = []
    for run in read_sweep(out_dir, with_results=False).runs:
        if run.spec is None:
            raise InputError(f"cannot resume: {run.problem}", source=str(out_dir))
        specs.append(run.spec)
    return specs


# ----------------------------------------------------------------------------- writing


def config_payload(spec: RunSpec) -> dict[str, Any]:
    """The content of a run's config.json (also kept in the manifest's ``configs``)."""
    return {
        "schema": CONFIG_SCHEMA,
        "name": spec.name,
        "fingerprint": spec.fingerprint,
        "spec": spec.canonical(),
    }


def write_manifest(out_dir: Path, manifest: Mapping[str, Any]) -> None:
    write_json_atomic(out_dir / "manifest.json", manifest)


def write_config(out_dir: Path, spec: RunSpec) -> None:
    write_json_atomic(out_dir / spec.name / "config.json", config_payload(spec))


def _free_aside_name(out_dir: Path, name: str, taken: Iterable[str]) -> Path:
    reserved = {t.casefold() for t in taken}
    number = 1
    while True:
        candidate = out_dir / f"{name}{DAMAGED_SUFFIX}{number}"
        if not os.path.lexists(candidate) and candidate.name.casefold() not in reserved:
            return candidate
        number += 1


def set_aside(out_dir: Path, name: str, taken: Iterable[str] = ()) -> Path:
    """Move the entry ``<out_dir>/<name>`` (a damaged run folder, or whatever stands where it
    belongs) to a new ``<name>.damaged-<n>/`` and return that folder: kept for the user, never
    read again. A folder is renamed; a file or link is moved into the new folder (a link is
    moved itself, never followed). ``taken``: names the new folder must not have (run names)."""
    entry = out_dir / name
    aside = _free_aside_name(out_dir, name, taken)
    if entry.is_dir() and not entry.is_symlink():
        entry.rename(aside)
    else:
        aside.mkdir()
        entry.rename(aside / name)
    return aside


def set_aside_misplaced(
    out_dir: Path, files: Iterable[str], folders: Iterable[str] = (), taken: Iterable[str] = ()
) -> list[tuple[str, Path]]:
    """Set aside each of ``files`` that is not a plain file and each of ``folders`` that is not
    a plain folder (links included), so that writing them cannot fail or leave the sweep
    folder; returns ``(name, where it went)`` for each."""
    moved = []
    # Folders first: a file is only looked at through a folder that is really the sweep's.
    for name, wanted in [
        *((d, stat.S_ISDIR) for d in folders),
        *((f, stat.S_ISREG) for f in files),
    ]:
        try:
            mode = (out_dir / name).lstat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISLNK(mode) or not wanted(mode):
            parent = (out_dir / name).parent
            moved.append((name, set_aside(parent, Path(name).name, taken)))
    return moved


def write_run_results(
    out_dir: Path, name: str, rounds: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]
) -> None:
    """rounds.csv, then summary.json: a run is finished once its summary exists."""
    folder = out_dir / name
    write_text_atomic(folder / "rounds.csv", rounds_csv_text(rounds, rounds_columns(rounds)))
    write_json_atomic(folder / "summary.json", summary)


# ----------------------------------------------------------------------------- the folder lock


def _fcntl() -> Any:
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        raise InputError(
            "sweeps lock their folder with fcntl.flock, which this system lacks (POSIX only)"
        ) from None
    return fcntl


def lock_holder(folder: Path) -> str | None:
    """The pid (as text, or "unknown") of the process holding ``folder``'s sweep lock, or None
    when no one does. Only looks: creates nothing, and releases at once what it could take."""
    fcntl = _fcntl()
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not _flock_soon(fd, fcntl.LOCK_SH):
            return SweepLock(Path(folder))._holder()
    except OSError:
        return None
    finally:
        os.close(fd)  # closing also drops the lock if we took it
    return None


def _flock_soon(fd: int, kind: int) -> bool:
    """Take ``flock`` ``kind`` on ``fd``, trying for a fifth of a second: another process's
    :func:`lock_holder` holds it for an instant, a running sweep for its whole life."""
    fcntl = _fcntl()

    for attempt in range(20):
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt < 19:
                time.sleep(0.01)
    return False


class SweepLock:
    """An exclusive lock on a sweep folder, held for the sweep's whole life.

    The lock is ``fcntl.flock`` on ``<folder>/.sweep.lock``, which holds the holder's pid; the
    kernel drops it when the holder dies, however it died, so a stale file never blocks a later
    ``--resume``. :meth:`acquire` creates the folder when it is missing (and :meth:`release`
    removes it again when it stayed empty, so a refused sweep leaves nothing) and raises
    InputError naming the folder and the holder's pid when another process holds the lock.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created: list[Path] = []

    def acquire(self) -> SweepLock:
        if os.path.lexists(self.folder) and not self.folder.is_dir():
            raise InputError("output folder is a file; choose a folder", source=str(self.folder))
        missing = [p for p in (self.folder, *self.folder.parents) if not os.path.lexists(p)]
        self.folder.mkdir(parents=True, exist_ok=True)
        self._created = missing  # innermost first, as they are removed
        try:
            self._lock()
        except BaseException:
            self._remove_created()
            raise
        return self

    def _lock(self) -> None:
        fcntl = _fcntl()

        for _ in range(100):
            try:
                flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                fd = os.open(self.path, flags, 0o644)
            except OSError as exc:
                raise InputError(
                    f"cannot lock the folder ({exc.strerror}: {self.path})", source=str(self.folder)
                ) from None
            try:
                taken = _flock_soon(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            if not taken:
                os.close(fd)
                raise InputError(
                    f"another sweep (pid {self._holder()}) is writing this folder; wait for it "
                    "to finish or stop it first",
                    source=str(self.folder),
                )
            # The holder may have removed the file between our open and our lock: then we hold
            # a lock on a file nobody else sees, and must lock the one now in its place.
            try:
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                with contextlib.suppress(OSError):  # the pid is for messages; a full disk
                    os.ftruncate(fd, 0)  # fails the sweep's first real write instead
                    os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            os.close(fd)
        raise InputError(
            "could not lock the folder (its lock file keeps changing)", source=str(self.folder)
        )

    def _holder(self) -> str:
        for _ in range(20):  # the holder writes its pid right after it locks
            with contextlib.suppress(OSError, UnicodeDecodeError):
                text = self.path.read_text(encoding="ascii").strip()
                if re.fullmatch(r"[0-9]+", text):
                    return text
            time.sleep(0.01)
        return "unknown"

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # before the unlock: a waiter then finds no file, or a new one
        os.close(self._fd)
        self._fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                return  # not empty: something of the sweep (or of someone else) is in it
        self._created = []

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
