"""docs/cli.md documents every command and every option of the CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main

from velocity.cli import app

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _commands() -> dict[str, Any]:
    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


def _sections() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^## `velocity ([a-z-]+)", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_every_command_has_a_section() -> None:
    sections = _sections()
    missing = sorted(set(_commands()) - set(sections))
    assert not missing, f"commands missing from docs/cli.md: {missing}"


def test_every_option_and_argument_is_documented_in_its_section() -> None:
    sections = _sections()
    missing = []
    for name, command in _commands().items():
        body = sections.get(name, "")
        for param in command.params:
            if param.param_type_name == "option":
                for opt in param.opts:
                    if opt.startswith("--") and f"`{opt}" not in body:
                        missing.append(f"{name} {opt}")
            elif param.param_type_name == "argument":
                label = (getattr(param, "metavar", None) or param.name or "").upper()
                if label not in body:
                    missing.append(f"{name} {label}")
    assert not missing, f"undocumented in docs/cli.md: {missing}"


def test_no_section_for_a_command_that_does_not_exist() -> None:
    stale = sorted(set(_sections()) - set(_commands()))
    assert not stale, f"docs/cli.md documents commands that do not exist: {stale}"
