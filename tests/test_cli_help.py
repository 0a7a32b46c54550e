"""What ``--help`` shows: the words as written, no ``<bool>`` on flags, usage without braces,
and ``velocity --version`` as well as ``velocity version``."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer.main

from velocity.cli import app, main


def _help(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    assert main([*command, "--help"]) == 0
    return capsys.readouterr().out


def _commands() -> list[str]:
    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_toml_table_names_survive_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    run_help = " ".join(_help(capsys, "run").split())
    assert "TOML file with [shared] and [[runs]]" in run_help
    sweep_help = " ".join(_help(capsys, "sweep").split())
    assert "[shared], [[runs]], [matrix]" in sweep_help


@pytest.mark.parametrize("command", ["", *_commands()])
def test_no_bool_placeholder_and_no_braces_in_usage(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help(capsys, *([command] if command else []))
    assert "<bool>" not in text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage
    assert "--help" in text and "Show this message and exit." in text


def test_required_argument_is_plain_in_usage(capsys: pytest.CaptureFixture[str]) -> None:
    usage = next(line for line in _help(capsys, "archive").splitlines() if "Usage:" in line)
    assert re.search(r"velocity archive \[OPTIONS\] OUT_DIR\s*$", usage), usage


def test_value_options_keep_their_type(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "run")
    assert re.search(r"--rounds\s+<int>", text)
    # A repeatable option shows what one occurrence takes.
    assert re.search(r"--plugin\s+<str>", text) and "<list[str]>" not in text


def test_version_flag_and_command_agree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    flag = capsys.readouterr().out
    assert main(["version"]) == 0
    assert flag == capsys.readouterr().out
    assert flag.startswith("velocity ") and "python" in flag


def test_version_flag_through_the_console_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "velocity", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("velocity ")
