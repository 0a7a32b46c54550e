"""Contract checks run over every attack in the registry (like scikit-learn's estimator checks).

Model attacks: default-constructible, (>= m, d) float32 finite output, inputs untouched, seed
determinism, declared records, and non-omniscient attacks blind to the honest rows.
Data attacks: same shapes and dtypes, labels in range, inputs untouched, seed determinism.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from velocity.attacks import ATTACKS, canonical_attack
from velocity.registry import REQUIRED
from velocity.testing import check_attack

MODEL_ATTACKS = [e.name for e in ATTACKS if e.extra["kind"] == "model"]
DATA_ATTACKS = [e.name for e in ATTACKS if e.extra["kind"] == "data"]


def _round(num_malicious: int = 3, n: int = 10, d: int = 7) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(42)
    updates = rng.normal(0.1, 1.0, (n, d)).astype(np.float32)
    weights = rng.integers(20, 80, n).astype(np.float64)
    malicious = np.zeros(n, dtype=bool)
    malicious[np.linspace(1, n - 1, num_malicious).astype(int)] = True
    return updates, weights, malicious


def _call(
    name: str, updates: np.ndarray, weights: np.ndarray, malicious: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    entry, params = ATTACKS.resolve(name)
    return entry.obj(updates, weights, malicious, np.random.default_rng(seed), **params)


def test_registry_has_every_attack_of_the_issue() -> None:
    expected = {
        "sign_flip",
        "gaussian",
        "ipm",
        "alie",
        "fang_krum",
        "fang_trimmed_mean",
        "minmax",
        "minsum",
        "mimic",
        "sybil",
        "scaling",
        "label_flip",
        "targeted_label_flip",
        "backdoor",
    }
    assert expected <= set(ATTACKS.names())


@pytest.mark.parametrize("name", ATTACKS.names())
def test_default_constructible_and_documented(name: str) -> None:
    entry = ATTACKS.get(name)
    assert all(p.default is not REQUIRED for p in entry.params)
    assert entry.paper and entry.summary
    assert entry.extra["kind"] in ("model", "data")
    assert isinstance(entry.extra["omniscient"], bool)
    assert canonical_attack(name) == {"type": name, **entry.defaults()}
    # The spec-string form round-trips to the same canonical table.
    assert canonical_attack(canonical_attack(name)) == canonical_attack(name)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_passes_the_public_contract(name: str) -> None:
    check_attack(name)


@pytest.mark.parametrize("name", MODEL_ATTACKS)
@pytest.mark.parametrize("num_malicious", [1, 3])
def test_model_attack_output_shape_and_dtype(name: str, num_malicious: int) -> None:
    updates, weights, malicious = _round(num_malicious)
    out, info = _call(name, updates, weights, malicious)
    assert out.ndim == 2 and out.shape[1] == updates.shape[1]
    assert out.shape[0] >= num_malicious
    if name != "sybil":
        assert out.shape[0] == num_malicious
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert set(info) == set(ATTACKS.get(name).extra["records"])


@pytest.mark.parametrize("name", MODEL_ATTACKS)
def test_model_attack_actually_changes_the_malicious_rows(name: str) -> None:
    updates, weights, malicious = _round()
    out, _ = _call(name, updates, weights, malicious)
    if name == "sybil":  # sybil keeps the rows and adds copies
        assert out.shape[0] > malicious.sum()
    else:
        assert not np.array_equal(out, updates[malicious])


@pytest.mark.parametrize("name", [n for n in MODEL_ATTACKS if ATTACKS.get(n).extra["omniscient"]])
def test_omniscient_attack_reacts_to_the_honest_rows(name: str) -> None:
    updates, weights, malicious = _round()
    changed = updates.copy()
    changed[~malicious] = np.random.default_rng(1).normal(5.0, 3.0, changed[~malicious].shape)
    first, _ = _call(name, updates, weights, malicious, seed=3)
    second, _ = _call(name, changed, weights, malicious, seed=3)
    assert not np.array_equal(first, second)


def _local_data(k: int = 60, f: int = 64, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(k, f)).astype(np.float32)
    y = np.tile(np.arange(classes), k // classes + 1)[:k].astype(np.int64)
    return X, y


def _poison(name: str, X: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, ...]:
    entry, params = ATTACKS.resolve(name)
    return entry.obj(
        X,
        y,
        np.random.default_rng(seed),
        shared_rng=np.random.default_rng([seed, 1]),
        num_classes=10,
        **params,
    )


@pytest.mark.parametrize("name", DATA_ATTACKS)
def test_data_attack_shapes_dtypes_and_label_range(name: str) -> None:
    X, y = _local_data()
    X_out, y_out = _poison(name, X, y)
    assert X_out.shape == X.shape and X_out.dtype == X.dtype
    assert y_out.shape == y.shape and y_out.dtype == np.int64
    assert y_out.min() >= 0 and y_out.max() < 10
    assert not np.array_equal(y_out, y)  # every data attack relabels something
