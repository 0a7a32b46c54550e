"""Verifying a crate read into memory: every file against its recorded sha256 and size, then the
records against each other (through the one sweep-folder reader, ``velocity.sweepdir``) and
comparison.json / comparison.md against what velocity derives from the runs' rounds.csv.

The archive's own content never relaxes a check: whatever velocity version it claims, every
derived record is re-derived and compared.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velocity.archives.safezip import (
    CRATE_METADATA_NAME,
    CrateContents,
    entity_types,
    is_local,
)
from velocity.artifacts import decode_floats_at
from velocity.errors import ArchiveError, InputError
from velocity.records import check_target_accuracy, is_timing
from velocity.report import COMPARISON_NUMBERS
from velocity.sweepdir import (
    RESULT_STATUSES,
    MemoryFolder,
    SweepData,
    SweepRun,
    as_in_csv,
    final_problem,
    first_disagreement,
    read_sweep,
    values_match,
)

__all__ = ["ArchivedSweep", "load_archived_sweep", "verify_crate"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ACTION_STATUS = {
    "complete": "http://schema.org/CompletedActionStatus",
    "diverged": "http://schema.org/CompletedActionStatus",
    "failed": "http://schema.org/FailedActionStatus",
}


def _fail(path: Path, message: str) -> ArchiveError:
    return ArchiveError(message, source=str(path))


def _inconsistent(crate: CrateContents, message: str) -> ArchiveError:
    return _fail(crate.path, f"inconsistent archive: {message}")


def verify_crate(crate: CrateContents) -> int:
    """Check every file against the sha256 and size the metadata lists (ArchiveError naming the
    file otherwise); no unlisted or missing file is allowed. Returns how many files matched."""
    where = crate.path
    listed: dict[str, dict[str, Any]] = {}
    for entity_id, entity in crate.entities.items():
        if "File" in entity_types(entity):
            if not is_local(entity_id):
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
        if dataset is None or "Dataset" not in entity_types(dataset):
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


@dataclass
class ArchivedSweep:
    """The verified, self-consistent sweep inside an archive."""

    data: SweepData
    notes: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> dict[str, Any]:
        return self.data.manifest

    @property
    def order(self) -> list[str]:
        return [run.name for run in self.data.runs]

    @property
    def runs(self) -> dict[str, SweepRun]:
        return {run.name: run for run in self.data.runs}

    @property
    def data_files(self) -> list[dict[str, str]]:
        """``{name, sha256}`` of the user data files the runs read (the manifest's list)."""
        return [dict(r) for r in self.manifest.get("data_files", [])]

    @property
    def missing(self) -> list[str]:
        """Runs the archive holds no results for."""
        return [run.name for run in self.data.runs if run.summary is None]


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
    for old, new in zip(expected, found, strict=True):
        for metric in dict.fromkeys([*old, *new]):
            if is_timing(metric):
                continue
            a, b = old.get(metric), as_in_csv(new.get(metric))
            if not values_match(a, b, exact=True, tolerance=0.0):
                raise _inconsistent(
                    crate,
                    f"{label} disagrees with rounds.csv at round {old.get('round')}, "
                    f"{metric}: {a!r} vs {b!r}",
                )


def _check_entry(crate: CrateContents, run: SweepRun, entry: Mapping[str, Any] | None) -> None:
    """comparison.json's entry for ``run`` must agree with the run's own files."""
    name = run.name
    if run.summary is None:
        if entry is not None and entry.get("status") in RESULT_STATUSES:
            raise _inconsistent(
                crate,
                f"comparison.json has results for {name!r} but the archive has no "
                f"{name}/summary.json",
            )
        return
    if entry is None:
        return
    rounds = run.rounds or []
    if entry.get("status") != run.status or entry.get("fingerprint") != run.fingerprint:
        raise _inconsistent(
            crate,
            f"comparison.json's entry for {name!r} has status {entry.get('status')!r}, "
            f"{name}/summary.json has {run.status!r} (or their fingerprints differ)",
        )
    if "spec" in entry and entry["spec"] != run.spec_data:
        raise _inconsistent(crate, f"comparison.json's spec for {name!r} differs from config.json")
    if "error" in entry and entry["error"] != run.error:
        raise _inconsistent(
            crate, f"comparison.json's error for {name!r} differs from {name}/summary.json"
        )
    recorded = entry.get("rounds")
    if isinstance(recorded, list):
        _same_records(crate, f"comparison.json ({name})", rounds, recorded)
    elif isinstance(recorded, int) and not isinstance(recorded, bool) and recorded != len(rounds):
        raise _inconsistent(
            crate,
            f"comparison.json says {name!r} ran {recorded} rounds, "
            f"{name}/rounds.csv holds {len(rounds)}",
        )
    problem = final_problem(
        entry.get("final"), rounds, f"comparison.json ({name})", f"{name}/rounds.csv"
    )
    if problem is not None:
        raise _inconsistent(crate, problem)


def _check_actions(crate: CrateContents, runs: Sequence[SweepRun]) -> None:
    for run in runs:
        if run.status is None:
            continue
        action = crate.entities.get(f"#run-{run.name}")
        if action is None or "CreateAction" not in entity_types(action):
            raise _inconsistent(
                crate, f"{CRATE_METADATA_NAME} has no CreateAction for run {run.name!r}"
            )
        if action.get("actionStatus") != _ACTION_STATUS[run.status]:
            raise _inconsistent(
                crate,
                f"{CRATE_METADATA_NAME} records run {run.name!r} as "
                f"{action.get('actionStatus')!r}, its summary as {run.status!r}",
            )


def _check_comparison(crate: CrateContents, data: SweepData, comparison: Any) -> None:
    """comparison.json must equal what ``velocity.report.build_comparison`` makes of the
    archived runs, and comparison.md exactly what ``comparison_markdown`` renders of it."""
    from velocity.report import build_comparison, comparison_markdown

    for run in data.runs:
        if run.spec is None:
            raise _inconsistent(
                crate, f"comparison.json cannot be re-derived: run {run.name!r} has no config.json"
            )
    try:
        target = check_target_accuracy(comparison.get("target_accuracy"), "target_accuracy")
    except InputError as exc:
        raise _inconsistent(crate, f"comparison.json: {exc}") from None
    derived = build_comparison(data, target_accuracy=target)
    found = first_disagreement(comparison, derived)
    if found is not None:
        path, old, new = found
        raise _inconsistent(
            crate,
            f"comparison.json: {path} is {old!r} but the archived runs' rounds.csv and "
            f"summary.json give {new!r}",
        )
    if "comparison.md" not in crate.files:
        return
    try:
        text = crate.files["comparison.md"].decode("utf-8")
    except UnicodeDecodeError:
        raise _inconsistent(crate, "comparison.md is not UTF-8 text") from None
    expected = comparison_markdown(comparison, data.manifest)
    if text == expected:
        return
    old_lines, new_lines = text.split("\n"), expected.split("\n")
    line = next(
        (i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=False)) if a != b),
        min(len(old_lines), len(new_lines)),
    )
    old = old_lines[line] if line < len(old_lines) else "<absent>"
    new = new_lines[line] if line < len(new_lines) else "<absent>"
    raise _inconsistent(
        crate, f"comparison.md: line {line + 1} is {old!r} but comparison.json renders {new!r}"
    )


def load_archived_sweep(crate: CrateContents) -> ArchivedSweep:
    """The sweep inside a verified crate, cross-checked: config, rounds.csv, summary.json,
    comparison.json and the crate's CreateActions must agree (ArchiveError 'inconsistent')."""
    from velocity._version import __version__

    source = MemoryFolder(crate.files, str(crate.path))
    try:
        data = read_sweep(source)
    except InputError as exc:
        raise _fail(crate.path, str(exc).removeprefix(f"{crate.path}: ")) from None
    for run in data.runs:
        if run.config is None and f"{run.name}/summary.json" in crate.files:
            raise _inconsistent(crate, f"{run.name!r} has results but no {run.name}/config.json")
        if run.problem is not None and run.config is not None:
            raise _inconsistent(crate, run.problem)
    notes = [
        f"plug-in {r['name']} (sha256 {r['sha256'][:12]}...) is loaded from the archive's own "
        "copy, checked against that sha256"
        for r in data.manifest.get("plugins", [])
    ]
    listed = {r["sha256"]: r["name"] for r in data.manifest.get("data_files", [])}
    for run in data.runs:
        for record in run.spec.data_files if run.spec is not None else []:
            if record["sha256"] not in listed:
                raise _inconsistent(
                    crate,
                    f"run {run.name!r} reads {record['path']!r} (sha256 "
                    f"{record['sha256'][:12]}...), which manifest.json's data_files do not list",
                )
    for sha, name in sorted(listed.items(), key=lambda item: item[1]):
        if f"data/{name}" in crate.files:
            notes.append(f"data file {name} is read from the archive's copy, checked by sha256")
        else:
            notes.append(
                f"data file {name} (sha256 {sha[:12]}...) is not in the archive (--no-data): "
                "reproduce needs --data-dir"
            )
    archived_version = data.manifest.get("velocity_version")
    if archived_version != __version__:
        notes.append(
            f"archived by velocity {archived_version!r}, this is {__version__}: every record "
            "was re-derived and checked as this version writes it"
        )
    names = set(data.manifest["runs"])
    entries: dict[str, Mapping[str, Any]] = {}
    comparison: Any = None
    if "comparison.json" in crate.files:
        try:
            comparison = decode_floats_at(
                json.loads(crate.files["comparison.json"].decode("utf-8")), COMPARISON_NUMBERS
            )
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise _fail(crate.path, f"comparison.json: not valid JSON ({exc})") from None
        rows = comparison.get("runs") if isinstance(comparison, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise _fail(crate.path, "comparison.json has no list of runs")
        for row in rows:
            if row.get("name") not in names:
                raise _inconsistent(
                    crate,
                    f"comparison.json has run {row.get('name')!r}, which manifest.json does not "
                    "list",
                )
            entries[row["name"]] = row
    for run in data.runs:
        _check_entry(crate, run, entries.get(run.name))
    _check_actions(crate, data.runs)
    if comparison is not None:
        _check_comparison(crate, data, comparison)
    elif "comparison.md" in crate.files:
        raise _inconsistent(
            crate, "comparison.md is archived without the comparison.json it renders"
        )
    return ArchivedSweep(data=data, notes=notes)
