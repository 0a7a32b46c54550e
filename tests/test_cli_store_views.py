"""``velocity runs`` fits the terminal without cutting names; ``velocity show`` prints TOML that
``velocity run`` reads back as the same run."""

from __future__ import annotations

import csv
import io
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from velocity.attacks import ATTACKS
from velocity.cli import main
from velocity.cli._app import out_console
from velocity.data import DATASETS, PARTITIONERS
from velocity.models import MODELS
from velocity.registry import REQUIRED
from velocity.spec import RunSpec, spec_from_mapping, spec_toml
from velocity.strategies import AGGREGATORS, PRE_AGGREGATORS, SERVER_OPTIMIZERS

LONG_NAMES = (
    "fedprox-mu0.01__dirichlet-alpha0.1__s1",
    "trimmed_mean-k2__sign_flip__s2",
    "centered_clipping__fang_trimmed_mean__s0",
)
TINY = ["--rounds", "1", "--model", "logreg", "--num-clients", "4"]


@pytest.fixture
def store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "runs.db"
    for name in LONG_NAMES:
        assert main(["run", *TINY, "--name", name, "--store", str(path), "--quiet"]) == 0
    capsys.readouterr()
    return path


def _runs_at(
    width: int, store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> str:
    monkeypatch.setattr(out_console, "_width", width)
    assert main(["runs", "--store", str(store)]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("width", [80, 120])
def test_runs_fit_the_width_and_never_cut_names_or_statuses(
    width: int,
    store: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = _runs_at(width, store, capsys, monkeypatch)
    assert "…" not in out
    lines = out.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == len(LONG_NAMES)
    for name, row in zip(LONG_NAMES, rows, strict=True):
        assert f" {name} " in row and " complete " in row


def test_a_wider_terminal_shows_more_columns_and_the_hidden_ones_are_named(
    store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    narrow = _runs_at(80, store, capsys, monkeypatch)
    wide = _runs_at(160, store, capsys, monkeypatch)
    header = next(line for line in wide.splitlines() if line.startswith("┃"))
    for column in ("id", "name", "status", "dataset", "strategy", "attack", "seed", "started"):
        assert f" {column} " in header
    assert "not shown" not in wide
    note = " ".join(narrow.split()).split("not shown at 80 columns: ")[1]
    assert "started" in note and "--csv" in note


def test_runs_csv_and_json_hold_the_same_rows(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "--store", str(store), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert main(["runs", "--store", str(store), "--csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["name"] for r in table] == [r["name"] for r in rows] == list(LONG_NAMES)
    assert set(table[0]) == set(rows[0])
    assert float(table[0]["test_accuracy"]) == rows[0]["test_accuracy"]
    assert main(["runs", "--store", str(store), "--json", "--csv"]) == 2
    assert "either --json or --csv" in capsys.readouterr().err


def _toml_after_marker(text: str) -> str:
    marker = text.index("spec (TOML")
    return text[text.index("\n", marker) + 1 :]


def test_show_prints_the_spec_as_toml_that_runs_again_as_the_same_run(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = LONG_NAMES[0]
    assert main(["show", name, "--store", str(store), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert main(["show", name, "--store", str(store)]) == 0
    shown = tomllib.loads(_toml_after_marker(capsys.readouterr().out))
    assert spec_from_mapping(shown, "show").fingerprint == record["fingerprint"]

    assert main(["show", name, "--store", str(store), "--spec"]) == 0
    run_file = tmp_path / "again.toml"
    run_file.write_text(capsys.readouterr().out)
    assert main(["run", str(run_file), "--store", str(store), "--json"]) == 0
    (again,) = json.loads(capsys.readouterr().out)
    assert again["name"] == name and again["fingerprint"] == record["fingerprint"]
    assert again["final"]["test_accuracy"] == record["final"]["test_accuracy"]


def _defaults(registry: Any) -> list[str]:
    return [
        entry.name
        for entry in registry
        if not entry.extra.get("user_data") and all(p.default is not REQUIRED for p in entry.params)
    ]


def _specs() -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = [
        {"dataset": d} for d in _defaults(DATASETS)
    ]  # e.g. synthetic's nullable max_per_client
    specs += [{"partition": p} for p in _defaults(PARTITIONERS) if p != "natural"]
    specs += [{"model": m} for m in _defaults(MODELS)]
    specs += [{"strategy": a} for a in _defaults(AGGREGATORS)]
    specs += [{"strategy": f"{p} > mean"} for p in _defaults(PRE_AGGREGATORS)]
    specs += [{"strategy": f"mean > {s}"} for s in _defaults(SERVER_OPTIMIZERS)]
    specs += [{"attack": a, "byzantine": 2} for a in _defaults(ATTACKS)]
    specs += [
        {"dataset": "synthetic:max_per_client=none", "partition": "natural"},
        {"clients_per_round": 3, "mu": 0.1, "attacks": ["sign_flip", "gaussian"], "byzantine": 1},
    ]
    return specs


@pytest.mark.parametrize(
    "fields", _specs(), ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items())
)
def test_spec_toml_reads_back_as_the_same_spec(fields: dict[str, Any]) -> None:
    spec = RunSpec(name="x", **fields)
    text = spec_toml(spec.canonical())
    again = spec_from_mapping(tomllib.loads(text), "toml")
    assert again.fingerprint == spec.fingerprint, text
    assert text.startswith('name = "x"\n')
