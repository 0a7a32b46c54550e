"""Writing the crate: pack a finished sweep folder into one deterministic RO-Crate zip.

The crate (Process Run Crate 0.5) holds every sweep artifact, environment.txt, a README and
ro-crate-metadata.json (one CreateAction per run, a sha256 for every file); the same sweep always
gives the same bytes. The folder is read, and checked, by the one sweep reader first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import zipfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from velocity.archives.code import velocity_wheel
from velocity.archives.safezip import CRATE_METADATA_NAME
from velocity.artifacts import atomic_file
from velocity.errors import InputError
from velocity.sweepdir import SET_ASIDE, SweepData, read_sweep

__all__ = [
    "CRATE_CONTEXT",
    "ENCODING_FORMATS",
    "PROCESS_RUN_PROFILE",
    "VELOCITY_URL",
    "ArchiveResult",
    "SweepFolder",
    "archive_sweep",
    "archived_packages",
    "build_crate_metadata",
    "default_archive_path",
    "encoding_format",
    "environment_text",
    "iso_utc",
    "read_sweep_folder",
    "readme_text",
    "velocity_version",
    "write_deterministic_zip",
]

CRATE_CONTEXT = [
    "https://w3id.org/ro/crate/1.1/context",
    "https://w3id.org/ro/terms/workflow-run/context",  # defines the sha256 term
]
RO_CRATE_SPEC = "https://w3id.org/ro/crate/1.1"
PROCESS_RUN_PROFILE = "https://w3id.org/ro/wfrun/process/0.5"
VELOCITY_URL = "https://github.com/velocity-fl/velocity"
ADDED_FILES = ("README.md", "environment.txt", CRATE_METADATA_NAME)
ADDED_FOLDERS = ("code",)
"""Files the archive adds next to the sweep's own artifacts."""

ENCODING_FORMATS = {
    ".json": "application/json",
    ".csv": "text/csv",
    ".md": "text/markdown",
    ".html": "text/html",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
    ".toml": "application/toml",
    ".log": "text/plain",
    ".pdf": "application/pdf",
    ".py": "text/x-python",
    ".whl": "application/zip",
    ".npz": "application/zip",
}
_FALLBACK_FORMAT = "application/octet-stream"

_ACTION_STATUS = {
    "complete": "http://schema.org/CompletedActionStatus",
    "diverged": "http://schema.org/CompletedActionStatus",
    "failed": "http://schema.org/FailedActionStatus",
}
_SPDX_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,63}$")
_FILE_MODE = 0o100644
_DIR_MODE = 0o040755
_ZIP_EPOCH = datetime(1980, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SweepFolder:
    """A sweep folder to archive: the sweep as the one reader read it, and its files."""

    data: SweepData
    files: list[str]  # posix paths relative to the folder, sorted

    @property
    def path(self) -> Path:
        return self.data.out_dir

    @property
    def manifest(self) -> dict[str, Any]:
        return self.data.manifest

    @property
    def runs(self) -> list[str]:
        return [run.name for run in self.data.runs]

    @property
    def summaries(self) -> dict[str, dict[str, Any]]:
        return {r.name: r.summary for r in self.data.runs if r.complete and r.summary}

    @property
    def finished_runs(self) -> list[str]:
        return [run.name for run in self.data.runs if run.complete]

    @property
    def missing_runs(self) -> list[str]:
        return self.data.missing

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete")) and not self.missing_runs


@dataclass(frozen=True)
class ArchiveResult:
    """The written archive: where, its sha256, which runs it holds and which are missing."""

    path: Path
    sha256: str
    size: int
    runs: list[str]
    missing_runs: list[str]
    warnings: list[str] = field(default_factory=list)


def iso_utc(text: str | None) -> str | None:
    """An ISO 8601 time as ``YYYY-MM-DDTHH:MM:SS[.mmm]+00:00`` (the form Process Run Crate asks
    for); None when ``text`` is missing or not a time."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    millis = f".{moment.microsecond // 1000:03d}" if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + millis + "+00:00"


def encoding_format(name: str) -> str:
    """The MIME type recorded for a file of the crate."""
    return ENCODING_FORMATS.get(PurePosixPath(name).suffix.lower(), _FALLBACK_FORMAT)


def default_archive_path(sweep_dir: str | Path) -> Path:
    """``<OUT_DIR>.crate.zip`` next to the sweep folder."""
    folder = Path(sweep_dir).resolve()
    return folder.with_name(folder.name + ".crate.zip")


def _list_files(root: Path, runs: Collection[str] = ()) -> list[str]:
    """Every regular, non-hidden file under ``root`` (posix, sorted); a symlink is an error.
    What ``--resume`` set aside as damaged (``<run>.damaged-<n>/``, never one of ``runs``) is
    no part of the sweep and left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        if base == root:
            dirnames[:] = [d for d in dirnames if d in runs or not SET_ASIDE.fullmatch(d)]
            filenames = [f for f in filenames if f in runs or not SET_ASIDE.fullmatch(f)]
        for name in sorted(dirnames):
            if (base / name).is_symlink():
                raise InputError(
                    "sweep folders hold plain files only; found a symbolic link",
                    source=str(base / name),
                )
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):  # temp files of atomic writes, editor droppings
                continue
            path = base / name
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise InputError(
                    "sweep folders hold plain files only; found a link or special file",
                    source=str(path),
                )
            found.append(path.relative_to(root).as_posix())
    return sorted(found)


def read_sweep_folder(sweep_dir: str | Path) -> SweepFolder:
    """Read a sweep folder to archive: InputError when it is not a sweep, or when a run's files
    disagree with each other (the same checks ``inspect`` makes of an archive)."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise InputError("not a folder (give a sweep output folder)", source=str(root))
    data = read_sweep(root)
    for run in data.runs:
        if run.problem is not None and (run.summary is not None or run.config is not None):
            raise InputError(
                f"run {run.name!r} is damaged ({run.problem}); 'velocity sweep --resume' re-runs "
                "it",
                source=str(root),
            )
    files = _list_files(root, set(data.manifest["runs"]))
    clashes = sorted(set(files) & set(ADDED_FILES))
    clashes += sorted(f for f in files if f.split("/")[0] in ADDED_FOLDERS)
    if clashes:
        raise InputError(
            f"the sweep folder already holds {clashes[0]}, a file the archive writes itself",
            source=str(root),
        )
    return SweepFolder(data=data, files=files)


def _published_at(sweep: SweepFolder) -> str:
    """The crate's date: the sweep's end (never the clock), else the last run's end or the start."""
    candidates = [sweep.manifest.get("finished_at")]
    ends = sorted(t for t in (iso_utc(s.get("finished_at")) for s in sweep.summaries.values()) if t)
    candidates += [ends[-1] if ends else None, sweep.manifest.get("started_at")]
    for value in candidates:
        moment = iso_utc(value)
        if moment is not None:
            return moment
    raise InputError(
        "manifest.json has no finished_at/started_at time to date the archive",
        source=str(sweep.path),
    )


def archived_packages(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The installed packages a sweep's manifest records (name -> version)."""
    packages = manifest.get("packages") or {}
    if not isinstance(packages, Mapping):
        return {}
    return {str(k): str(v) for k, v in packages.items()}


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_describe(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return " ".join(_describe(v) for v in value)
    return str(value)


def velocity_version(manifest: Mapping[str, Any]) -> str:
    """The velocity version that ran the sweep, as its manifest records it."""
    value = manifest.get("velocity_version")
    return value if isinstance(value, str) and value else "unknown"


def _environment_lines(manifest: Mapping[str, Any]) -> list[str]:
    """Python, platform, numpy/BLAS and git lines of environment.txt (comments)."""
    lines = [f"# velocity: {velocity_version(manifest)}"]
    python = manifest.get("python")
    if isinstance(python, Mapping):
        lines.append(f"# python: {python.get('version')} ({python.get('implementation')})")
    elif python:
        lines.append(f"# python: {python}")
    host = manifest.get("host")
    if isinstance(host, Mapping):
        lines.append(f"# platform: {host.get('os')}")
        lines.append(
            f"# machine: {host.get('machine')}, {host.get('cpu_model')}, "
            f"{host.get('cores')} cores, {host.get('memory_bytes')} bytes of memory"
        )
    elif host:
        lines.append(f"# platform: {_describe(host)}")
    numpy = manifest.get("numpy")
    if isinstance(numpy, Mapping):
        lines.append(f"# numpy: {numpy.get('version')}")
        blas = numpy.get("blas")
        for library in blas if isinstance(blas, list) else []:
            if isinstance(library, Mapping):
                lines.append(
                    f"# blas: {library.get('internal_api')} {library.get('version')} "
                    f"({library.get('user_api')}, threading {library.get('threading_layer')})"
                )
    elif numpy:
        lines.append(f"# numpy: {numpy}")
    git = manifest.get("git")
    if isinstance(git, Mapping) and git.get("commit"):
        dirty = " (uncommitted changes)" if git.get("dirty") else ""
        lines.append(f"# git commit: {git.get('commit')}{dirty}")
    return lines


def environment_text(manifest: Mapping[str, Any]) -> str:
    """environment.txt: the sweep's Python, platform and installed packages (from its manifest
    only), in a form ``pip install -r`` accepts (everything but the pins is a comment)."""
    lines = [
        "# Environment that ran this sweep, as recorded in its manifest.json.",
        *_environment_lines(manifest),
    ]
    packages = archived_packages(manifest)
    lines.append(f"# installed packages ({len(packages)}):")
    lines += [f"{name}=={version}" for name, version in sorted(packages.items(), key=_pkg_key)]
    return "\n".join(lines) + "\n"


def _pkg_key(item: tuple[str, str]) -> str:
    return item[0].lower()


def _install_lines(version: str, wheel: str | None) -> list[str]:
    """How to install the velocity that made the sweep, with and without a package index."""
    lines = [
        "## Install velocity",
        "",
        "With access to a package index:",
        "",
        "```sh",
        f"pip install 'velocity-fl=={version}'      # or: pip install -r environment.txt",
        "```",
        "",
    ]
    if wheel is not None:
        lines += [
            f"Without one (offline): this archive holds the wheel of velocity {version} itself, "
            f"`code/{wheel}`. Extract it and install it; pip needs velocity's dependencies "
            "(numpy, scipy, pydantic, ... at the versions `environment.txt` pins) either already "
            "installed or as wheels in a folder `WHEELS` (made on a connected machine with "
            "`pip download -r environment.txt -d WHEELS`, after deleting its `velocity-fl` "
            "line):",
            "",
            "```sh",
            f"unzip ARCHIVE 'code/{wheel}'      # ARCHIVE: this zip file",
            f"pip install --no-index --no-deps code/{wheel}      # dependencies installed",
            f"pip install --no-index --find-links WHEELS code/{wheel}      # or from WHEELS",
            "```",
            "",
        ]
    else:
        lines += [
            f"Without one (offline): install the wheel of velocity {version} with "
            "`pip install --no-index --find-links WHEELS velocity-fl==" + version + "`, where "
            "the folder `WHEELS` holds that wheel and the wheels of the packages "
            "`environment.txt` pins. This archive does not hold velocity itself; "
            "`velocity archive --include-code` puts its wheel into the archive.",
            "",
        ]
    return lines


def readme_text(
    sweep: SweepFolder,
    date_published: str,
    *,
    data_included: bool = True,
    wheel: str | None = None,
) -> str:
    """README.md of the crate: what it is and the exact commands to reproduce it. It names no
    file of the archive's own (the archive's bytes never depend on where it is written)."""
    version = velocity_version(sweep.manifest)
    data_files = sweep.manifest.get("data_files") or []
    lines = [
        f"# velocity sweep `{sweep.path.name}`",
        "",
        "This archive is an [RO-Crate 1.1](https://w3id.org/ro/crate/1.1) following the "
        f"[Process Run Crate 0.5]({PROCESS_RUN_PROFILE}) profile. It holds a federated-learning "
        f"sweep made with [velocity]({VELOCITY_URL}) {version}, finished {date_published}: every "
        "run's configuration (`<run>/config.json`), per-round metrics (`<run>/rounds.csv`) and "
        "summary (`<run>/summary.json`), the sweep's `manifest.json`, comparison files, report "
        "and plots. `environment.txt` lists the packages of the environment that ran it; "
        "`ro-crate-metadata.json` describes every file with its size and sha256.",
        "",
        *_install_lines(version, wheel),
        "## Reproduce",
        "",
        "`ARCHIVE` is this zip file.",
        "",
        "```sh",
        "velocity inspect ARCHIVE          # what it holds, checksums verified",
        "velocity reproduce ARCHIVE --check --exact   # same platform: bit-exact",
        "velocity reproduce ARCHIVE --check --tolerance 1e-6   # other platforms",
        "```",
        "",
        "`velocity reproduce` verifies every checksum before running anything, re-runs each run "
        "with its archived specification and compares status and every per-round metric "
        "(timings excepted); exit code 0 means every run matched.",
        "",
    ]
    if data_files:
        names = ", ".join(f"`{r['name']}` (sha256 `{r['sha256']}`)" for r in data_files)
        if data_included:
            lines += [
                f"The runs read user data files, archived in `data/`: {names}. `reproduce` "
                "reads them from the archive and checks their sha256.",
                "",
            ]
        else:
            lines += [
                f"The runs read user data files that this archive leaves out (`--no-data`): "
                f"{names}. Give them to `velocity reproduce ARCHIVE --data-dir DIR`, a folder "
                "holding files of those names; their sha256 is checked before any run.",
                "",
            ]
    lines += [
        "## Runs",
        "",
        "| run | status | rounds |",
        "|---|---|---|",
    ]
    summaries = sweep.summaries
    for name in sweep.runs:
        summary = summaries.get(name)
        if summary is None:
            lines.append(f"| `{name}` | missing (no results archived) | - |")
        else:
            lines.append(
                f"| `{name}` | {summary.get('status')} | {summary.get('rounds_completed', '-')} |"
            )
    if sweep.missing_runs:
        lines += [
            "",
            "**Incomplete sweep**: runs without results in this archive: "
            + ", ".join(f"`{n}`" for n in sweep.missing_runs)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def _file_entity(name: str, data: bytes) -> dict[str, Any]:
    return {
        "@id": name,
        "@type": "File",
        "name": PurePosixPath(name).name,
        "contentSize": str(len(data)),
        "encodingFormat": encoding_format(name),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _refs(ids: Sequence[str]) -> dict[str, str] | list[dict[str, str]]:
    """References to ``ids``: a single value for one (RO-Crate 1.1 compaction), else a list."""
    refs = [{"@id": i} for i in ids]
    return refs[0] if len(refs) == 1 else refs


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def _run_action(
    name: str,
    summary: Mapping[str, Any],
    run_files: Sequence[str],
    agent_id: str | None,
) -> dict[str, Any]:
    status = str(summary.get("status"))
    config = f"{name}/config.json"
    results = [f for f in run_files if f != config]
    description = f"velocity run {name}: status {status}"
    rounds = summary.get("rounds_completed")
    if rounds is not None:
        description += f" after {rounds} rounds"
    action: dict[str, Any] = {
        "@id": f"#run-{name}",
        "@type": "CreateAction",
        "name": f"Run {name}",
        "description": description,
        "instrument": {"@id": VELOCITY_URL},
        "actionStatus": _ACTION_STATUS[status],
    }
    if config in run_files:
        action["object"] = _refs([config])
    if results:
        action["result"] = _refs(results)
    if agent_id is not None:
        action["agent"] = {"@id": agent_id}
    start, end = iso_utc(summary.get("started_at")), iso_utc(summary.get("finished_at"))
    if start:
        action["startTime"] = start
    if end:
        action["endTime"] = end
    if status == "failed":
        action["error"] = str(summary.get("error") or "run failed")
    return action


def build_crate_metadata(
    sweep: SweepFolder,
    contents: Mapping[str, bytes],
    *,
    date_published: str,
    author: str | None = None,
    affiliation: str | None = None,
    affiliation_url: str | None = None,
    license_id: str | None = "CC-BY-4.0",
) -> dict[str, Any]:
    """The ro-crate-metadata.json document for ``contents`` (crate path -> bytes)."""
    files = sorted(contents)
    folders = sorted(
        {str(p) + "/" for f in files for p in PurePosixPath(f).parents if str(p) != "."}
    )
    org: dict[str, Any] | None = None
    if affiliation:
        org = {
            "@id": affiliation_url or f"#org-{_slug(affiliation)}",
            "@type": "Organization",
            "name": affiliation,
        }
        if affiliation_url:
            org["url"] = affiliation_url
    person: dict[str, Any] | None = None
    if author:
        person = {"@id": f"#author-{_slug(author)}", "@type": "Person", "name": author}
        if org is not None:
            person["affiliation"] = {"@id": org["@id"]}
    agent_id = person["@id"] if person else (org["@id"] if org else None)

    summaries = sweep.summaries
    actions = [
        _run_action(
            name,
            summaries[name],
            [f for f in files if f.startswith(name + "/")],
            agent_id,
        )
        for name in sweep.finished_runs
    ]
    description = (
        f"Federated-learning sweep of {len(sweep.runs)} runs made with velocity "
        f"{velocity_version(sweep.manifest)}, archived for reproduction with "
        "`velocity reproduce`."
    )
    if sweep.missing_runs:
        description += " Incomplete: no results for runs " + ", ".join(sweep.missing_runs) + "."

    def top_level(path: str) -> bool:
        return "/" not in path.rstrip("/")

    root: dict[str, Any] = {
        "@id": "./",
        "@type": "Dataset",
        "name": f"velocity sweep {sweep.path.name}",
        "description": description,
        "datePublished": date_published,
        "conformsTo": {"@id": PROCESS_RUN_PROFILE},
        "hasPart": _refs([p for p in sorted([*files, *folders]) if top_level(p)]),
    }
    if actions:
        root["mentions"] = _refs([a["@id"] for a in actions])
    license_entity: dict[str, Any] | None = None
    if license_id:
        license_entity = {
            "@id": f"https://spdx.org/licenses/{license_id}",
            "@type": "CreativeWork",
            "name": license_id,
        }
        root["license"] = {"@id": license_entity["@id"]}
    if person is not None:
        root["author"] = {"@id": person["@id"]}
    if org is not None:
        root["publisher"] = {"@id": org["@id"]}

    graph: list[dict[str, Any]] = [
        {
            "@id": CRATE_METADATA_NAME,
            "@type": "CreativeWork",
            "about": {"@id": "./"},
            "conformsTo": {"@id": RO_CRATE_SPEC},
        },
        root,
        {
            "@id": PROCESS_RUN_PROFILE,
            "@type": "CreativeWork",
            "name": "Process Run Crate",
            "version": "0.5",
        },
        {
            "@id": VELOCITY_URL,
            "@type": "SoftwareApplication",
            "name": "velocity",
            "url": VELOCITY_URL,
            "softwareVersion": velocity_version(sweep.manifest),
        },
    ]
    graph += [e for e in (license_entity, person, org) if e is not None]
    for folder in folders:
        inner = folder.rstrip("/")
        parts = [
            p
            for p in sorted([*files, *folders])
            if p != folder and str(PurePosixPath(p.rstrip("/")).parent) == inner
        ]
        graph.append(
            {
                "@id": folder,
                "@type": "Dataset",
                "name": PurePosixPath(inner).name,
                "hasPart": _refs(parts),
            }
        )
    graph += [_file_entity(name, contents[name]) for name in files]
    graph += actions
    return {"@context": CRATE_CONTEXT, "@graph": graph}


def _zip_time(date_published: str) -> tuple[int, int, int, int, int, int]:
    moment = max(datetime.fromisoformat(date_published), _ZIP_EPOCH).astimezone(UTC)
    seconds = moment.second - moment.second % 2  # zip times have 2-second resolution
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, seconds)


def write_deterministic_zip(
    contents: Mapping[str, bytes],
    target: str | Path,
    date_time: tuple[int, int, int, int, int, int],
) -> None:
    """Write a zip whose bytes depend only on ``contents``: sorted entries, an entry for every
    folder, fixed time and permissions, no extra fields; atomically (temp file + rename)."""
    names = sorted(contents)
    folders = {str(p) + "/" for n in names for p in PurePosixPath(n).parents if str(p) != "."}
    entries = sorted([*names, *folders])
    with atomic_file(target) as handle, zipfile.ZipFile(handle, "w") as archive:
        for name in entries:
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.create_system = 3  # unix, so the permission bits below are meaningful
            if name.endswith("/"):
                info.external_attr = (_DIR_MODE << 16) | 0x10  # 0x10: MS-DOS directory
                info.compress_type = zipfile.ZIP_STORED
                archive.writestr(info, b"")
            else:
                info.external_attr = _FILE_MODE << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, contents[name], compresslevel=9)


def _check_options(license_id: str | None, affiliation_url: str | None) -> None:
    if license_id is not None and not _SPDX_PATTERN.match(license_id):
        raise InputError(
            f"--license takes an SPDX identifier such as CC-BY-4.0 or MIT, got {license_id!r}"
        )
    if affiliation_url is not None and not re.match(r"^https?://\S+$", affiliation_url):
        raise InputError(f"--affiliation-url takes an http(s) URL, got {affiliation_url!r}")


def archive_sweep(
    sweep_dir: str | Path,
    output: str | Path | None = None,
    *,
    author: str | None = None,
    affiliation: str | None = None,
    affiliation_url: str | None = None,
    license_id: str | None = "CC-BY-4.0",
    allow_incomplete: bool = False,
    include_data: bool = True,
    include_code: bool = False,
    force: bool = False,
) -> ArchiveResult:
    """Pack the sweep folder ``sweep_dir`` into a deterministic RO-Crate zip.

    Raises InputError when the folder is not a sweep, or is incomplete and ``allow_incomplete``
    is false, or ``output`` exists and ``force`` is false. ``include_data=False`` leaves the
    runs' user data files (``data/``) out; ``include_code`` adds the wheel of the running
    velocity (``code/``). The archive's date is the sweep's finish time, so the bytes never
    depend on when (or where, or under which file name) archiving happened.
    """
    _check_options(license_id, affiliation_url)
    sweep = read_sweep_folder(sweep_dir)
    if not sweep.complete and not allow_incomplete:
        detail = (
            f"runs without summary.json: {', '.join(sweep.missing_runs)}"
            if sweep.missing_runs
            else "its manifest.json says complete: false"
        )
        raise InputError(
            f"not a complete sweep ({detail}); finish it with 'velocity sweep --resume' "
            "or archive it anyway with --allow-incomplete",
            source=str(sweep.path),
        )
    target = Path(output) if output is not None else default_archive_path(sweep.path)
    if target.resolve().is_relative_to(sweep.path.resolve()):
        raise InputError(
            "the archive cannot be written inside the sweep folder", source=str(target)
        )
    if target.is_dir():
        raise InputError("is a folder; give the archive's file name", source=str(target))
    if target.exists() and not force:
        raise InputError(
            "the archive file exists; give --force to replace it (or another -o)",
            source=str(target),
        )
    if not target.parent.is_dir():
        raise InputError(
            "no such folder for the archive; create it first (velocity archive never creates "
            "folders)",
            source=str(target.parent),
        )

    date_published = _published_at(sweep)
    names = [n for n in sweep.files if include_data or not n.startswith("data/")]
    try:
        contents: dict[str, bytes] = {name: (sweep.path / name).read_bytes() for name in names}
    except OSError as exc:
        raise InputError(f"cannot read {exc.filename} ({exc.strerror})") from None
    wheel = None
    if include_code:
        epoch = int(datetime.fromisoformat(date_published).timestamp())
        wheel, contents_of_wheel = velocity_wheel(epoch)
        contents[f"code/{wheel}"] = contents_of_wheel
    contents["environment.txt"] = environment_text(sweep.manifest).encode("utf-8")
    contents["README.md"] = readme_text(
        sweep, date_published, data_included=include_data, wheel=wheel
    ).encode("utf-8")
    metadata = build_crate_metadata(
        sweep,
        contents,
        date_published=date_published,
        author=author,
        affiliation=affiliation,
        affiliation_url=affiliation_url,
        license_id=license_id,
    )
    contents[CRATE_METADATA_NAME] = (
        json.dumps(metadata, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    ).encode("utf-8")
    try:
        write_deterministic_zip(contents, target, _zip_time(date_published))
    except OSError as exc:
        raise InputError(f"cannot write the archive ({exc.strerror})", source=str(target)) from None

    warnings = []
    if author is None:
        warnings.append("no --author given: the crate names no author (RO-Crate recommends one)")
    if affiliation is None:
        warnings.append("no --affiliation given: the crate names no publisher organization")
    elif affiliation_url is None:
        warnings.append("no --affiliation-url given: RO-Crate recommends a URL for organizations")
    data = target.read_bytes()
    return ArchiveResult(
        path=target,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        runs=sweep.finished_runs,
        missing_runs=sweep.missing_runs,
        warnings=warnings,
    )
