"""`velocity attacks`, the arena example file and the arena table script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from velocity.attacks import ATTACKS
from velocity.cli import main
from velocity.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[1]


def test_attacks_json_lists_every_registry_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attacks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ATTACKS.names()
    by_name = {r["name"]: r for r in rows}
    assert by_name["minmax"]["omniscient"] is True
    assert by_name["sign_flip"]["omniscient"] is False
    assert by_name["sign_flip"]["parameters"] == {"scale": 1.0}
    assert by_name["backdoor"]["kind"] == "data"
    assert "attack_success_rate" in by_name["backdoor"]["records"]
    assert "Fang" in by_name["fang_krum"]["paper"]


def test_attacks_table_names_each_attack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attacks"]) == 0
    out = capsys.readouterr().out
    for name in ("sign_flip", "fang_krum", "minsum", "backdoor", "targeted_label_flip"):
        assert name in out


def test_attacks_rejects_unknown_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attacks", "--bogus"]) == 2


def test_arena_example_expands_to_strategy_by_attack_runs_with_baselines() -> None:
    specs = load_experiment(ROOT / "examples" / "attack_arena.toml")
    attacked = [s for s in specs if s.attacks]
    baselines = [s for s in specs if not s.attacks]
    assert len(attacked) == 8 * 11 * 3
    assert len(baselines) == 8 * 3
    assert all(s.byzantine == 4 and s.num_clients == 20 and s.rounds == 30 for s in attacked)


def test_arena_table_pivots_seed_groups() -> None:
    spec = importlib.util.spec_from_file_location(
        "attack_arena", ROOT / "benchmarks" / "attack_arena.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    comparison = {
        "runs": [
            {"strategy": "fedavg", "attack": "none"},
            {"strategy": "fedavg", "attack": "alie"},
            {"strategy": "median", "attack": "none"},
        ],
        "groups": [
            {
                "strategy": "fedavg",
                "attack": "none",
                "seeds": [0, 1],
                "test_accuracy_mean": 0.95,
                "test_accuracy_std": 0.01,
            },
            {
                "strategy": "fedavg",
                "attack": "alie",
                "seeds": [0, 1],
                "test_accuracy_mean": 0.5,
                "test_accuracy_std": 0.25,
            },
            {
                "strategy": "median",
                "attack": "none",
                "seeds": [0, 1],
                "test_accuracy_mean": None,
                "test_accuracy_std": None,
            },
        ],
    }
    lines = module.arena_table(comparison).splitlines()
    assert lines[0] == "| strategy \\ attack (2 seeds) | `none` | `alie` |"
    assert lines[2] == "| `fedavg` | 0.950 ± 0.010 | 0.500 ± 0.250 |"
    assert lines[3] == "| `median` | failed | - |"
