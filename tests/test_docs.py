"""Every Python and shell block of README.md and docs/*.md runs, as written, so the docs cannot rot.

The blocks of one Markdown file run in order in one fresh folder holding a copy of examples/ and
benchmarks/, with their own run store and home: a shell block with ``bash -e``, a Python block as
a script file (so a sweep in it needs its main guard, as a reader's would). An HTML comment on the
line before a block steers it:

- ``<!-- doc-test: skip (reason) -->``: not run (the reason is required and shown in the skip);
- ``<!-- doc-test: file NAME -->``: the block (e.g. TOML) is written to NAME for later blocks.

Other languages (toml, text, json) are documentation only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"sh": "shell", "bash": "shell", "shell": "shell", "python": "python", "py": "python"}
_FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*doc-test:\s*(skip|file)\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    language: str
    text: str
    directive: str | None
    argument: str

    @property
    def label(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the directive on the line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start, language = i, match.group(1).lower()
        i += 1
        body = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        i += 1
        directive = _DIRECTIVE.match(lines[start - 1]) if start > 0 else None
        found.append(
            Block(
                path,
                start + 1,
                language,
                "\n".join(body) + "\n",
                directive.group(1) if directive else None,
                directive.group(2) if directive else "",
            )
        )
    return found


def _folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    work = tmp_path / "work"
    work.mkdir()
    for name in ("examples", "benchmarks"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "VELOCITY_STORE": str(tmp_path / "store" / "runs.db"),
        "HOME": str(tmp_path / "home"),
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
    }
    return work, env


def _run(block: Block, work: Path, env: dict[str, str], index: int) -> None:
    if RUNNABLE[block.language] == "shell":
        command = ["bash", "-e", "-o", "pipefail", "-c", block.text]
    else:
        script = work / f"doc_block_{index}.py"
        script.write_text(block.text, encoding="utf-8")
        command = [sys.executable, script.name]
    done = subprocess.run(
        command, cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, (
        f"{block.label}: the {block.language} block failed (exit {done.returncode})\n"
        f"--- block\n{block.text}--- stdout\n{done.stdout[-3000:]}--- stderr\n{done.stderr[-3000:]}"
    )
    assert "Traceback" not in done.stderr, f"{block.label}: a traceback\n{done.stderr}"


def test_every_directive_is_well_formed() -> None:
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines():
            if "doc-test" in line:
                match = _DIRECTIVE.match(line)
                assert match is not None, f"{path}: malformed directive {line!r}"
                assert match.group(2), f"{path}: {line!r} needs a reason or a file name"
        for block in blocks(path):
            if block.directive == "file":
                name = Path(block.argument)
                assert not name.is_absolute() and ".." not in name.parts, block.label


def test_the_docs_have_runnable_blocks() -> None:
    runnable = [b for p in DOCS for b in blocks(p) if b.language in RUNNABLE]
    assert len(runnable) >= 10
    assert {p.name for p in DOCS} >= {"README.md", "api.md", "plugins.md"}


@pytest.mark.slow
@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_python_and_shell_block_runs(path: Path, tmp_path: Path) -> None:
    work, env = _folder(tmp_path)
    skipped = []
    for index, block in enumerate(blocks(path)):
        if block.directive == "file":
            target = work / block.argument
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
            continue
        if block.language not in RUNNABLE:
            continue
        if block.directive == "skip":
            skipped.append(f"{block.label} {block.argument}")
            continue
        _run(block, work, env, index)
    if skipped:
        print("skipped by directive:", *skipped, sep="\n  ")
