"""The package's import graph flows one way (DESIGN.md): no cycles, no layer importing a higher one.

Every ``import`` of a velocity module counts, also inside functions and under TYPE_CHECKING.
The layers are written down once, here; a component is a top-level module or package of
``velocity`` and may import its own layer and the layers below it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "velocity"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "errors", "seeds", "registry", "artifacts", "records", "limits", "datafiles"),
    # kernels: arrays in, arrays out (federation: who takes part; privacy: DP mechanisms)
    ("data", "models", "federation", "privacy", "strategies", "attacks"),
    ("plugins", "testing"),
    ("spec",),
    ("experiment", "sizing"),
    ("simulation",),
    ("sweepdir", "store"),
    ("report",),
    ("sweeps", "leaderboards"),
    ("archives",),
    ("api",),
    ("cli", "mcp", "__main__", "__init__"),
)
"""Lowest first. Kernels know nothing of runs; ``simulation`` nothing of sweeps; ``sweep``
nothing of the terminal; ``cli`` and ``mcp`` are thin shells over ``api``."""


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str, package: str) -> Iterator[str]:
    """Every velocity module ``path`` imports (absolute names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == package:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name.split(".")[0] == package:
                yield name


def import_graph(root: Path) -> dict[str, set[str]]:
    """Component -> components it imports, for the package at ``root``."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        source = _component(module)
        graph.setdefault(source, set())
        for target in _imports(path, module, root.name):
            if _component(target) != source:
                graph[source].add(_component(target))
    return graph


def layer_violations(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...]) -> list[str]:
    level = {name: i for i, layer in enumerate(layers) for name in layer}
    problems = [f"{name} is in no layer" for name in sorted(graph) if name not in level]
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            if source in level and target in level and level[target] > level[source]:
                problems.append(
                    f"{source} (layer {level[source]}) imports {target} (layer {level[target]})"
                )
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle's nodes, found by depth-first search (the graph is tiny)."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                key = frozenset(path)
                if key not in seen:
                    seen.add(key)
                    found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return found


def test_every_component_has_a_layer_and_imports_only_downwards() -> None:
    assert layer_violations(import_graph(PACKAGE), LAYERS) == []


def test_the_component_graph_has_no_cycle() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def _fake_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "velocity"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


@pytest.mark.parametrize(
    "back_import",
    [
        "from velocity.sweep import run_sweep\n",  # absolute, at module level
        "def f():\n    from velocity.sweep import run_sweep\n",  # lazy, inside a function
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import velocity.sweep.runner\n",
        "from ..sweep import run_sweep\n",  # relative, from a subpackage
    ],
)
def test_a_back_import_is_caught_however_it_is_written(tmp_path: Path, back_import: str) -> None:
    package = _fake_package(
        tmp_path,
        {
            "__init__.py": "",
            "records.py": "",
            "sweep/__init__.py": "from velocity.records import x\n",
            "sweep/runner.py": "",
            "data/__init__.py": "",
            "data/loader.py": back_import,
        },
    )
    graph = import_graph(package)
    assert graph["data"] == {"sweep"}
    layers = (("records",), ("data",), ("sweep",), ("__init__",))
    assert layer_violations(graph, layers) == ["data (layer 1) imports sweep (layer 2)"]


def test_a_cycle_is_caught(tmp_path: Path) -> None:
    package = _fake_package(
        tmp_path,
        {
            "__init__.py": "",
            "store/__init__.py": "from velocity.sweep import utc_now\n",
            "sweep.py": "from velocity.report import x\n",
            "report.py": "import velocity.store\n",
        },
    )
    assert cycles(import_graph(package)) == [["report", "store", "sweep", "report"]]


@pytest.mark.parametrize(
    "script", sorted((PACKAGE.parents[1] / "benchmarks").glob("*.py")), ids=lambda p: p.name
)
def test_every_benchmark_script_imports_what_exists(script: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
