"""The MCP server's workspace: the one folder its tools may read and write, and its limits.

Every path a tool receives is resolved (symlinks followed) and refused unless it stays inside
the workspace; folders handed to the library are refused when a link inside them leaves it;
plug-in code is confined (or refused) through :func:`velocity.plugins.set_load_guard`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velocity.errors import InputError
from velocity.records import run_name_problem
from velocity.spec import RunSpec

__all__ = [
    "REPRODUCTIONS",
    "STORE_NAME",
    "SWEEPS",
    "ServerLimits",
    "Workspace",
    "is_path_parameter",
]

STORE_NAME = "runs.db"
"""The server's run store, inside the workspace (never ``~/.velocity``)."""
SWEEPS = "sweeps"
"""Where sweeps started by the server live: ``<workspace>/sweeps/<id>/``."""
REPRODUCTIONS = "reproductions"
"""Where reproductions go unless told otherwise: ``<workspace>/reproductions/<id>/``."""

_PATH_SUFFIXES = ("_path", "_file", "_dir")


def is_path_parameter(name: str) -> bool:
    """Whether a component parameter names a file or folder (``path``, ``*_path``, ``*_file``,
    ``*_dir``): its value is a path the run reads, so it must stay inside the workspace."""
    return name == "path" or name.endswith(_PATH_SUFFIXES)


@dataclass(frozen=True)
class ServerLimits:
    """How much work one tool call may start (server options, safe defaults)."""

    max_rounds: int = 200
    max_clients: int = 100
    max_runs: int = 64
    max_sweeps: int = 1
    max_parallel: int = field(default_factory=lambda: os.cpu_count() or 1)

    def __post_init__(self) -> None:
        for name in ("max_rounds", "max_clients", "max_runs", "max_sweeps", "max_parallel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                option = "--" + name.replace("_", "-")
                raise InputError(f"{option} must be an integer >= 1, got {value!r}")

    def check_specs(self, specs: Sequence[RunSpec]) -> None:
        """Refuse a request over the limits, naming the run, the field and the server option."""
        if len(specs) > self.max_runs:
            raise InputError(
                f"{len(specs)} runs is over this server's limit of {self.max_runs} runs per "
                "sweep (server option --max-runs)"
            )
        for spec in specs:
            if spec.rounds > self.max_rounds:
                raise InputError(
                    f"run {spec.name!r}: rounds = {spec.rounds} is over this server's limit of "
                    f"{self.max_rounds} (server option --max-rounds)"
                )
            if spec.num_clients > self.max_clients:
                raise InputError(
                    f"run {spec.name!r}: num_clients = {spec.num_clients} is over this "
                    f"server's limit of {self.max_clients} (server option --max-clients)"
                )

    def parallel(self, requested: int | None) -> int:
        """Worker processes for one sweep: the request, at most ``max_parallel``."""
        if requested is None:
            return self.max_parallel
        if requested > self.max_parallel:
            raise InputError(
                f"parallel = {requested} is over this server's limit of {self.max_parallel} "
                "worker processes (server option --max-parallel)"
            )
        return requested

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


class Workspace:
    """The folder a server works in: path confinement and the layout inside it."""

    def __init__(self, root: str | Path) -> None:
        folder = Path(root).expanduser()
        if folder.exists() and not folder.is_dir():
            raise InputError("--workspace must be a folder", source=str(root))
        folder.mkdir(parents=True, exist_ok=True)
        self.root = folder.resolve()

    # ------------------------------------------------------------------ paths

    def path(self, value: Any, what: str) -> Path:
        """``value`` (relative to the workspace, or absolute) resolved, symlinks followed;
        InputError naming ``what`` when it is not a path or leaves the workspace."""
        if not isinstance(value, str) or not value.strip() or "\x00" in value:
            raise InputError(f"{what} must be a path inside the workspace, got {value!r}")
        candidate = Path(
            value
        )  # no expanduser: '~' is a plain folder name here, as for the loaders
        if not candidate.is_absolute():
            candidate = self.root / candidate
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise InputError(f"{what}: cannot resolve {value!r} ({exc})") from None
        if not resolved.is_relative_to(self.root):
            raise InputError(
                f"{what}: {value!r} is outside the workspace {self.root} (the MCP server reads "
                "and writes only inside it)"
            )
        return resolved

    def existing_file(self, value: Any, what: str) -> Path:
        path = self.path(value, what)
        if not path.is_file():
            raise InputError(f"{what}: no such file {self.show(path)!r} in the workspace")
        return path

    def real_folder(self, folder: Path, what: str) -> Path:
        """``folder`` checked to hold no symlink that leaves the workspace (the library reads
        the files in a sweep folder as they are)."""
        for link in _links_under(folder):
            try:
                target = link.resolve()
            except (OSError, RuntimeError):
                target = None
            if target is None or not target.is_relative_to(self.root):
                raise InputError(
                    f"{what}: {self.show(link)!r} is a symbolic link out of the workspace; the "
                    "MCP server reads only files inside it"
                )
        return folder

    def show(self, path: Path) -> str:
        """A path as the tools report it: relative to the workspace, with forward slashes."""
        try:
            relative = path.resolve().relative_to(self.root)
        except ValueError:
            return str(path)
        return relative.as_posix() or "."

    # ------------------------------------------------------------------ layout

    @property
    def store_path(self) -> Path:
        return self.path(STORE_NAME, "the run store")

    @property
    def sweeps(self) -> Path:
        return self.path(SWEEPS, "the sweeps folder")

    def sweep_folder(self, value: Any, what: str = "sweep") -> Path:
        """A sweep by id (a folder under ``sweeps/``) or by path inside the workspace."""
        if isinstance(value, str) and run_name_problem(value) is None:
            by_id = self.root / SWEEPS / value
            if by_id.exists() or by_id.is_symlink():
                return self._sweep_checked(self.path(f"{SWEEPS}/{value}", what), value, what)
        path = self.path(value, what)
        return self._sweep_checked(path, value, what)

    def _sweep_checked(self, path: Path, value: Any, what: str) -> Path:
        if not (path / "manifest.json").is_file():
            raise InputError(
                f"{what}: {value!r} is not a sweep folder (no manifest.json); give a sweep id "
                f"from the sweep tool or a sweep folder inside the workspace"
            )
        return self.real_folder(path, what)

    def new_folder(self, parent: str, name: Any, what: str) -> Path:
        """A new folder ``<workspace>/<parent>/<name>`` (``name`` a simple name)."""
        if run_name_problem(name) is not None:
            raise InputError(
                f"{what} must be a simple name (letters, digits and . _ = + -, at most 120, "
                f"starting with a letter or digit), got {name!r}"
            )
        return self.path(f"{parent}/{name}", what)

    # ------------------------------------------------------------------ specs

    def check_spec_paths(self, spec: RunSpec) -> None:
        """Every file a run would read (component parameters that are paths) lies inside."""
        for kind, table in _component_tables(spec):
            for key, value in table.items():
                if key != "type" and is_path_parameter(key) and isinstance(value, str) and value:
                    self.path(value, f"run {spec.name!r}: {kind} parameter '{key}'")

    def plugin_guard(self, allow: bool) -> Callable[[str, str, str], None]:
        """The policy :func:`velocity.plugins.set_load_guard` enforces: plug-in files and
        copies only from inside the workspace, and none at all unless ``allow``."""

        def guard(kind: str, name: str, origin: str) -> None:
            if kind in ("file", "copy"):
                self.path(origin, f"plug-in {name!r}")
            if not allow:
                raise InputError(
                    f"plug-in {name!r}: plug-ins run Python code, and this MCP server loads none "
                    "(start it with --allow-plugins to load plug-ins from its workspace)"
                )

        return guard


def _links_under(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            if (base / name).is_symlink():
                yield base / name


def _component_tables(spec: RunSpec) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield "dataset", spec.dataset
    yield "partition", spec.partition
    yield "model", spec.model
    strategy = spec.strategy
    for stage in strategy.get("pre", []):
        yield "pre-aggregator", stage
    for key, kind in (("aggregator", "aggregator"), ("server", "server optimizer")):
        if isinstance(strategy.get(key), Mapping):
            yield kind, strategy[key]
    for attack in spec.attacks:
        yield "attack", attack
