"""Plug-ins: a researcher's own aggregators, attacks, datasets or models, loaded from a file or
a module and registered with the same public decorators the built-ins use.

A plug-in is identified by its source: the record ``{"name": "my_aggs.py", "sha256": ...}``
enters every RunSpec that names it (so the fingerprint changes when the source does), the source
is copied into the sweep folder and the archive, and a run is only ever re-created from a source
whose sha256 matches its record. Installed packages advertise plug-ins through the entry-point
group ``velocity.plugins``; they load the first time a component name is not found.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import re
import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velocity.errors import InputError
from velocity.registry import on_unknown_name, registering_plugin

__all__ = [
    "ENTRY_POINT_GROUP",
    "Plugin",
    "base_dir",
    "copy_name",
    "load_plugin",
    "load_plugins",
    "provide_sources",
    "set_load_guard",
    "source_of",
]

ENTRY_POINT_GROUP = "velocity.plugins"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,100}\.py$")


@dataclass(frozen=True)
class Plugin:
    """A loaded plug-in: its record (``name``, ``sha256``) and where its source came from."""

    name: str
    sha256: str
    origin: str

    @property
    def record(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256}


_SOURCES: dict[str, tuple[str, bytes, str]] = {}  # sha256 -> (name, source, origin)
_LOADED: dict[str, Plugin] = {}  # sha256 -> plug-in
_BASE_DIR: ContextVar[Path | None] = ContextVar("velocity_plugin_base_dir", default=None)
_LOAD_GUARD: list[Callable[[str, str, str], None]] = []


def set_load_guard(guard: Callable[[str, str, str], None] | None) -> None:
    """Install (None: remove) a process-wide check that runs before a plug-in named by a spec,
    a sweep folder or an archive is read or executed: ``guard(kind, name, origin)`` with kind
    ``"file"`` (a .py file at ``origin``), ``"copy"`` (a sweep's or archive's copy, ``origin``
    its folder) or ``"module"`` (an installed module); it raises InputError to refuse. Plug-in
    packages found through entry points are installed by the operator and never guarded.

    The MCP server uses it so that an agent's spec cannot read or run code it may not."""
    _LOAD_GUARD[:] = [guard] if guard is not None else []


def _guard(kind: str, name: str, origin: str) -> None:
    for guard in _LOAD_GUARD:
        guard(kind, name, origin)


@contextlib.contextmanager
def base_dir(folder: str | Path) -> Iterator[None]:
    """Resolve relative plug-in paths against ``folder`` (the experiment file's folder)."""
    token = _BASE_DIR.set(Path(folder))
    try:
        yield
    finally:
        _BASE_DIR.reset(token)


def copy_name(record: Mapping[str, str]) -> str:
    """The file name of a plug-in's copy in a sweep folder or archive (``plugins/<name>``)."""
    name = record["name"]
    return name if name.endswith(".py") else f"{name}.py"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def provide_sources(files: Mapping[str, bytes], origin: str) -> None:
    """Make plug-in sources known by their sha256 (copies from a sweep folder, an archive or a
    task); a record whose sha256 matches loads from them."""
    for name, data in files.items():
        _SOURCES.setdefault(_sha(data), (name, bytes(data), origin))


def source_of(record: Mapping[str, str]) -> bytes:
    """The source bytes of a loaded plug-in (to copy it into a sweep folder or a task)."""
    known = _SOURCES.get(record["sha256"])
    if known is None:
        raise InputError(f"plug-in {record['name']!r}: its source is not loaded in this process")
    return known[1]


def _execute(name: str, source: bytes, origin: str, record: dict[str, str]) -> None:
    """Run a plug-in's source as a fresh module, its registrations tagged with ``record``."""
    stem = re.sub(r"\W", "_", name.removesuffix(".py"))
    module_name = f"velocity_plugins.{stem}_{record['sha256'][:12]}"
    module = types.ModuleType(module_name)
    module.__file__ = origin
    try:
        code = compile(source, origin, "exec")
    except (SyntaxError, ValueError) as exc:
        raise InputError(f"plug-in {name!r} is not valid Python ({exc})", source=origin) from None
    sys.modules[module_name] = module
    try:
        with registering_plugin(record):
            exec(code, module.__dict__)
    except InputError as exc:
        del sys.modules[module_name]
        raise InputError(f"plug-in {name!r}: {exc}", source=origin) from None
    except Exception as exc:
        del sys.modules[module_name]
        raise InputError(
            f"plug-in {name!r} failed to load ({type(exc).__name__}: {exc})", source=origin
        ) from None


def _load_source(name: str, source: bytes, origin: str) -> Plugin:
    sha = _sha(source)
    if sha in _LOADED:
        return _LOADED[sha]
    clash = next((p for p in _LOADED.values() if p.name == name), None)
    if clash is not None:
        raise InputError(
            f"another plug-in named {name!r} (sha256 {clash.sha256[:12]}, from {clash.origin}) "
            "is already loaded; give different plug-ins different file names",
            source=origin,
        )
    plugin = Plugin(name, sha, origin)
    _SOURCES.setdefault(sha, (name, source, origin))
    _execute(name, source, origin, plugin.record)
    _LOADED[sha] = plugin
    return plugin


def _load_file(path: Path) -> Plugin:
    if not _FILE_NAME.match(path.name):
        raise InputError(
            "a plug-in file name uses letters, digits and _ . + - and ends in .py",
            source=str(path),
        )
    _guard("file", path.name, str(path))
    try:
        source = path.read_bytes()
    except FileNotFoundError:
        raise InputError("plug-in file not found", source=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read plug-in file ({exc.strerror})", source=str(path)) from None
    return _load_source(path.name, source, str(path))


def _module_source(name: str) -> tuple[bytes, str]:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise InputError(f"plug-in module {name!r} cannot be found ({exc})") from None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        raise InputError(f"plug-in module {name!r} is not installed (or has no source file)")
    return Path(spec.origin).read_bytes(), spec.origin


def _load_module(name: str) -> Plugin:
    """An installed module: imported normally, identified by its source file's sha256."""
    source, origin = _module_source(name)
    sha = _sha(source)
    if sha in _LOADED:
        return _LOADED[sha]
    plugin = Plugin(name, sha, origin)
    _SOURCES.setdefault(sha, (name, source, origin))
    try:
        with registering_plugin(plugin.record):
            importlib.import_module(name)
    except InputError as exc:
        raise InputError(f"plug-in {name!r}: {exc}", source=origin) from None
    except Exception as exc:
        raise InputError(
            f"plug-in {name!r} failed to load ({type(exc).__name__}: {exc})", source=origin
        ) from None
    _LOADED[sha] = plugin
    return plugin


def _load_record(record: Mapping[str, Any]) -> Plugin:
    """A plug-in named by its record: from a known source with that sha256, else from the file
    next to the spec or the installed module, which must have that sha256."""
    name, sha = record.get("name"), record.get("sha256")
    if not isinstance(name, str) or not isinstance(sha, str) or not _SHA256.match(sha):
        raise InputError(f"a plug-in record needs a name and a sha256, got {dict(record)!r}")
    if set(record) - {"name", "sha256"}:
        raise InputError(f"a plug-in record has only name and sha256, got {sorted(record)}")
    if sha in _LOADED:
        return _LOADED[sha]
    if sha in _SOURCES:
        _, source, origin = _SOURCES[sha]
        _guard("copy", name, origin)
        return _load_source(name, source, origin)
    if name.endswith(".py"):
        folder = _BASE_DIR.get() or Path.cwd()
        candidate = folder / name
        _guard("file", name, str(candidate))
        if candidate.is_file() and _sha(candidate.read_bytes()) == sha:
            return _load_file(candidate)
    elif _MODULE_NAME.match(name):
        _guard("module", name, name)
        try:
            source, origin = _module_source(name)
        except InputError:
            source, origin = b"", ""
        if source and _sha(source) == sha:
            return _load_module(name)
    raise InputError(
        f"plug-in {name!r} with sha256 {sha[:12]}... is not available: the run was made with "
        "that exact source (give the file with --plugin, or reproduce from its archive)"
    )


def load_plugin(ref: str | Mapping[str, Any]) -> Plugin:
    """Load a plug-in named by a file path (relative to :func:`base_dir`), an importable module
    name (``mypkg.aggs``), or a record ``{"name", "sha256"}``; loading twice is a no-op."""
    if isinstance(ref, Mapping):
        return _load_record(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise InputError(f"a plug-in is a .py file or a module name, got {ref!r}")
    text = ref.strip()
    if text.endswith(".py") or "/" in text or "\\" in text:
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = (_BASE_DIR.get() or Path.cwd()) / path
        return _load_file(path)
    if not _MODULE_NAME.match(text):
        raise InputError(f"a plug-in is a .py file or a module name like mypkg.aggs, got {ref!r}")
    _guard("module", text, text)
    return _load_module(text)


def load_plugins(refs: Any) -> list[Plugin]:
    """Every plug-in of a spec's ``plugins`` list, in order, each once."""
    if isinstance(refs, str | Mapping):
        refs = [refs]
    if not isinstance(refs, Sequence):
        raise InputError(f"plugins must be a list of .py files or module names, got {refs!r}")
    loaded: list[Plugin] = []
    for ref in refs:
        plugin = load_plugin(ref)
        if plugin not in loaded:
            loaded.append(plugin)
    return loaded


def _load_entry_points() -> None:
    """Load every installed plug-in package of the ``velocity.plugins`` entry-point group."""
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        _load_module(entry_point.value.split(":")[0].strip())


on_unknown_name(_load_entry_points)
