"""Reproducing an archive: verify it whole, re-run its runs with the archived specs through the
sweep machinery, compare run by run, and say what differs in the environment.
"""

from __future__ import annotations

import hashlib
import math
import platform
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import velocity.datafiles as datafiles
from velocity.archives.compare import VERDICTS, RunComparison, compare_run
from velocity.archives.crate import archived_packages, velocity_version
from velocity.archives.safezip import CrateContents, read_crate
from velocity.archives.verify import ArchivedSweep, load_archived_sweep, verify_crate
from velocity.artifacts import write_json_atomic
from velocity.errors import InputError
from velocity.records import run_name_problem, utc_now
from velocity.spec import RunSpec
from velocity.sweepdir import read_sweep
from velocity.sweeps import SweepInterrupted, default_out_dir, run_sweep
from velocity.sweeps.environment import installed_packages

__all__ = [
    "DEFAULT_TOLERANCE",
    "REPRODUCTION_SCHEMA",
    "PackageDrift",
    "ReproductionReport",
    "default_reproduce_dir",
    "environment_drift",
    "reproduce_archive",
]

REPRODUCTION_SCHEMA = "velocity.reproduction/1"
DEFAULT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PackageDrift:
    """A package whose version differs between the archive's environment and this one."""

    package: str
    archived: str | None
    current: str | None


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
            "counts": {v: sum(r.verdict == v for r in self.runs) for v in VERDICTS},
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
        problem = run_name_problem(name)
        if problem is not None:
            raise InputError(f"--runs: {problem}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(
            "output folder exists and is not empty; choose another --out", source=str(out_dir)
        )
    return DEFAULT_TOLERANCE if tolerance is None else float(tolerance)


def _check_data_dir(data_dir: str | Path | None) -> Path | None:
    if data_dir is None:
        return None
    folder = Path(data_dir)
    if not folder.is_dir():
        raise InputError("--data-dir: not a folder", source=str(folder))
    return folder


def _provide_data(
    crate: CrateContents, specs: Sequence[RunSpec], data_dir: Path | None
) -> list[str]:
    """Make every data file the runs read available from the archive or ``data_dir`` only,
    each checked against its recorded sha256; InputError naming what is missing. Returns notes."""
    notes = []
    for spec in specs:
        if spec.dataset["type"] == "hf" and spec.dataset.get("path"):
            raise InputError(
                f"run {spec.name!r} reads a Hugging Face dataset saved in the folder "
                f"{spec.dataset['path']!r}, which archives do not carry; reproduce reads only "
                "the archive and --data-dir"
            )
        for record in spec.data_files:
            sha = record["sha256"]
            if datafiles.is_provided(sha):
                continue
            name = datafiles.copy_name(record)
            archived = crate.files.get(f"data/{name}")
            if archived is not None and hashlib.sha256(archived).hexdigest() == sha:
                datafiles.provide(sha, archived)
                continue
            if data_dir is None:
                raise InputError(
                    f"run {spec.name!r} reads the data file {name} (sha256 {sha[:12]}...), "
                    "which the archive does not hold (archived with --no-data?): give "
                    "--data-dir DIR, a folder holding it"
                )
            candidate = data_dir / name
            if not candidate.is_file():
                raise InputError(
                    f"--data-dir: no {name} in {data_dir} (run {spec.name!r} reads it; sha256 "
                    f"{sha[:12]}...)"
                )
            found = datafiles.file_sha256(candidate)
            if found != sha:
                raise InputError(
                    f"--data-dir: {candidate} has sha256 {found[:12]}..., but run "
                    f"{spec.name!r} was made with {sha[:12]}...: not the same data"
                )
            datafiles.provide(sha, candidate)
            notes.append(f"data file {name} read from --data-dir, sha256 checked")
    return sorted(set(notes))


def _reproduced(out_dir: Path, names: Sequence[str]) -> dict[str, tuple[Any, Any, Any]]:
    """``name -> (status, error, rounds)`` of the re-run (all None for a run without results)."""
    if not (out_dir / "manifest.json").is_file():
        return {name: (None, None, None) for name in names}
    runs = {run.name: run for run in read_sweep(out_dir).runs}
    found: dict[str, tuple[Any, Any, Any]] = {}
    for name in names:
        run = runs.get(name)
        if run is None or not run.complete:
            found[name] = (None, None, None)
        else:
            found[name] = (run.status, run.error, run.rounds)
    return found


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
    data_dir: str | Path | None = None,
) -> ReproductionReport:
    """Verify ``archive``, re-run its runs (or ``runs``) into ``out_dir`` and compare them.

    Options are checked first, then the whole archive is verified (ArchiveError, nothing run);
    only then does ``velocity.sweeps.run_sweep`` re-run the archived specs unchanged. Writes
    ``reproduction.json`` into ``out_dir``; ``report.exit_code`` is 1 on any mismatch when
    ``check`` is true. ``on_verified`` is called once verification passed, before any run.
    Data files the runs read come from the archive or ``data_dir`` only (their sha256 checked),
    never from the paths the archived specs name; each archived spec is resource-bounded like
    user input before anything runs.
    """
    target = Path(out_dir) if out_dir is not None else default_reproduce_dir()
    tol = _check_options(exact, tolerance, parallel, runs, target)
    data_folder = _check_data_dir(data_dir)
    # Only the archive's own copies and --data-dir are data files for this reproduction.
    with datafiles.isolated():
        return _reproduce(
            archive,
            target,
            tol,
            check=check,
            exact=exact,
            runs=runs,
            parallel=parallel,
            command=command,
            on_event=on_event,
            on_verified=on_verified,
            data_folder=data_folder,
        )


def _reproduce(
    archive: str | Path,
    target: Path,
    tol: float,
    *,
    check: bool,
    exact: bool,
    runs: Sequence[str] | None,
    parallel: int | None,
    command: list[str] | None,
    on_event: Callable[[dict[str, Any]], None] | None,
    on_verified: Callable[[ArchivedSweep, list[PackageDrift], list[str]], None] | None,
    data_folder: Path | None,
) -> ReproductionReport:
    started_at = utc_now()
    crate = read_crate(archive)
    verify_crate(crate)
    sweep = load_archived_sweep(crate)
    selected = list(dict.fromkeys(runs)) if runs else list(sweep.order)
    unknown = [name for name in selected if name not in sweep.runs]
    if unknown:
        raise InputError(
            f"--runs: no run {unknown[0]!r} in the archive; it holds: {', '.join(sweep.order)}"
        )

    from velocity._version import __version__

    drift = environment_drift(
        archived_packages(sweep.manifest),
        installed_packages(),
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
    notes += _provide_data(crate, to_run, data_folder)
    if to_run:
        try:
            run_sweep(
                to_run,
                target,
                parallel=parallel,
                command=command if command is not None else ["velocity", "reproduce", str(archive)],
                store=None,  # a reproduction writes nothing outside its own folder
                on_event=on_event,
            )
        except SweepInterrupted as exc:
            raise exc.with_hint("start the reproduction again with another --out") from None
    else:
        target.mkdir(parents=True, exist_ok=True)
    comparisons = []
    reproduced = _reproduced(target, selected)
    for name in selected:
        status, error, rounds = reproduced[name]
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
        finished_at=utc_now(),
    )
    write_json_atomic(target / "reproduction.json", report.to_json())
    return report
