"""Inspecting an archive: what it holds and whether it verifies, without running anything."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velocity.archives.crate import archived_packages, iso_utc, velocity_version
from velocity.archives.safezip import CrateContents, entity_types, read_crate
from velocity.archives.verify import ArchivedSweep, load_archived_sweep, verify_crate
from velocity.errors import ArchiveError
from velocity.records import final_metrics

__all__ = ["ArchiveInspection", "inspect_archive"]


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
    data_files: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
        manifest = _loose_manifest(crate)
    python = manifest.get("python")
    host = manifest.get("host")
    numpy = manifest.get("numpy")
    runs: list[dict[str, Any]] = []
    if sweep is not None:
        for name in sweep.order:
            run = sweep.runs[name]
            final = final_metrics(run.rounds or [])
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
            if "CreateAction" in entity_types(entity):
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
        packages=archived_packages(manifest),
        runs=runs,
        missing_runs=sweep.missing if sweep is not None else [],
        verified=problem is None,
        problem=problem,
        data_files=[
            {**r, "included": f"data/{r.get('name')}" in crate.files}
            for r in manifest.get("data_files", [])
            if isinstance(r, Mapping)
        ]
        if isinstance(manifest.get("data_files"), list)
        else [],
        notes=list(sweep.notes) if sweep is not None else [],
    )


def _loose_manifest(crate: CrateContents) -> dict[str, Any]:
    """The manifest of an archive that did not verify, for description only."""
    import json

    try:
        candidate = json.loads(crate.files["manifest.json"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return candidate if isinstance(candidate, dict) else {}
