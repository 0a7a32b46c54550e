"""Strategy specs: presets, chains, tables, case-insensitivity, canonical form and errors."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from velocity.errors import RunError, SpecError
from velocity.strategies import PRESETS, aggregate, build_strategy, canonical_strategy

SPECS: list[Any] = [
    "fedavg",
    "FedProx:mu=0.1",
    "fedadam:lr=0.03",
    "FedTrimmedAvg:k=2",
    "krum:f=2",
    "nnm:f=2 > trimmed_mean:k=2 > adam:lr=0.01",
    "clip:max_norm=5 > bucketing:s=3 > geometric_median > momentum:beta=0.5",
    {"type": "krum", "f": 2},
    {"type": "FedYogi", "lr": 0.02},
    {"aggregator": "median", "pre": ["nnm:f=1"], "server": "yogi", "mu": 0.05},
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_canonical_form_is_json_able_and_idempotent(spec: Any) -> None:
    table, mu = canonical_strategy(spec)
    assert json.loads(json.dumps(table, sort_keys=True)) == table
    again, again_mu = canonical_strategy(table)
    assert again == table
    assert again_mu is None or again_mu == mu
    build_strategy(spec)


def test_names_are_case_insensitive() -> None:
    assert canonical_strategy("KRUM:f=2") == canonical_strategy("krum:f=2")
    assert canonical_strategy("FedAvg") == canonical_strategy("fedavg")
    assert canonical_strategy("NNM:f=1 > Median > ADAM") == canonical_strategy(
        "nnm:f=1>median>adam"
    )


def test_every_preset_expands_to_its_stages() -> None:
    expected = {
        "fedavg": ("mean", "sgd"),
        "fedprox": ("mean", "sgd"),
        "fedavgm": ("mean", "momentum"),
        "fedadam": ("mean", "adam"),
        "fedyogi": ("mean", "yogi"),
        "fedadagrad": ("mean", "adagrad"),
        "fedmedian": ("median", "sgd"),
        "fedtrimmedavg": ("trimmed_mean", "sgd"),
    }
    assert set(PRESETS) == set(expected)
    for name, (aggregator, server) in expected.items():
        table, mu = canonical_strategy(name)
        assert table["aggregator"]["type"] == aggregator
        assert table["server"]["type"] == server
        assert table["pre"] == []
        assert (mu is not None) == (name == "fedprox")


def test_preset_parameters_pass_to_the_stage_that_declares_them() -> None:
    table, _ = canonical_strategy("fedadam:lr=0.01,beta2=0.9")
    assert table["server"] == {"type": "adam", "lr": 0.01, "beta1": 0.9, "beta2": 0.9, "tau": 1e-3}
    table, _ = canonical_strategy("fedtrimmedavg")
    assert table["aggregator"] == {"type": "trimmed_mean", "k": None, "beta": 0.2}
    table, _ = canonical_strategy("fedtrimmedavg:k=1,lr=0.5")
    assert table["aggregator"] == {"type": "trimmed_mean", "k": 1, "beta": None}
    assert table["server"] == {"type": "sgd", "lr": 0.5}
    assert canonical_strategy("fedprox")[1] == 0.01
    assert canonical_strategy("fedprox:mu=0.5")[1] == 0.5


def test_chain_canonical_form() -> None:
    table, mu = canonical_strategy("nnm:f=2 > trimmed_mean:k=2 > adam:lr=0.01")
    assert mu is None
    assert table == {
        "pre": [{"type": "nnm", "f": 2}],
        "aggregator": {"type": "trimmed_mean", "k": 2, "beta": None},
        "server": {"type": "adam", "lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
    }
    assert canonical_strategy("median")[0]["server"] == {"type": "sgd", "lr": 1.0}
    assert canonical_strategy("trimmed_mean")[0]["aggregator"]["beta"] == 0.1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("krumm", r"unknown strategy 'krumm'; available: .*krum"),
        ("krum:f=-1", r"aggregator 'krum': parameter 'f' must be an integer >= 0, got -1"),
        ("krum:g=1", r"aggregator 'krum': unknown parameter 'g'; allowed: f"),
        ("adam > mean", r"server optimizer 'adam' must come last"),
        ("mean > median", r"more than one aggregator"),
        ("mean > nnm", r"pre-aggregator 'nnm' after the aggregator"),
        ("nnm > clip", r"no aggregator"),
        ("mean >", r"empty stage"),
        ("trimmed_mean:k=1,beta=0.1", r"give either 'k' or 'beta', not both"),
        ("trimmed_mean:beta=0.5", r"parameter 'beta' must be a number >= 0 and < 0.5"),
        ("fedadam:mu=0.1", r"strategy 'fedadam': unknown parameter 'mu'"),
        ("fedprox:mu=-1", r"strategy 'fedprox': parameter 'mu' must be a number >= 0"),
        ("fedavg > adam", r"preset 'fedavg' cannot be part of a chain"),
        ({"aggregator": "mean", "bogus": 1}, r"unknown key 'bogus'"),
        ({"pre": []}, r"needs 'aggregator'"),
        (3, r"strategy must be a string or a table"),
    ],
)
def test_bad_specs_fail_with_a_message_naming_the_problem(spec: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        canonical_strategy(spec)


def test_public_aggregate_validates_its_arrays() -> None:
    with pytest.raises(SpecError, match="2-D"):
        aggregate("mean", np.zeros(3))
    with pytest.raises(SpecError, match=r"weights must have shape \(2,\)"):
        aggregate("mean", np.zeros((2, 3)), np.ones(3))
    with pytest.raises(SpecError, match="not all zero"):
        aggregate("mean", np.zeros((2, 3)), np.zeros(2))


def test_round_time_precondition_is_a_run_error_from_the_strategy() -> None:
    strategy = build_strategy("krum:f=2", seed=1)
    updates = np.zeros((5, 4), dtype=np.float32)
    with pytest.raises(RunError, match=r"krum: needs n >= 2f\+3 clients per round, got n=5, f=2"):
        strategy.step(np.zeros(4, dtype=np.float32), updates, np.ones(5), 1)


def test_seeded_stages_draw_from_the_seed_tree_per_round() -> None:
    rng = np.random.default_rng(0)
    updates = rng.normal(size=(9, 6)).astype(np.float32)
    spec = "bucketing:s=2 > median"
    a = build_strategy(spec, seed=3).aggregate(updates, np.ones(9), 4)
    b = build_strategy(spec, seed=3).aggregate(updates, np.ones(9), 4)
    np.testing.assert_array_equal(a, b)
    others = [build_strategy(spec, seed=s).aggregate(updates, np.ones(9), 4) for s in range(4, 9)]
    assert any(not np.array_equal(a, o) for o in others)
