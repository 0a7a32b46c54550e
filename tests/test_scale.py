"""Equal footing with peers and memory at scale: the ``init`` option of the NumPy models, the
datasets' ``scale`` option, and the block-wise data preparation (generation, scaling, split)."""

from __future__ import annotations

import numpy as np
import pytest

from velocity.data import load_dataset, partition, synthetic_li2020
from velocity.data.datasets import scaled_float32, scaling, split_rows
from velocity.errors import SpecError
from velocity.models import build_model, chunk_size_for
from velocity.seeds import child_rng
from velocity.simulation import run_simulation
from velocity.spec import RunSpec


def _final_accuracy(model: str, dataset: str = "digits") -> float:
    spec = RunSpec(
        name="peer",
        dataset=dataset,
        partition="iid",
        num_clients=1000,
        rounds=5,
        local_epochs=1,
        batch_size=16,
        lr=0.1,
        model=model,
        strategy="fedavg",
        seed=0,
    )
    result = run_simulation(spec)
    assert result.status == "complete"
    return float(result.final_metrics()["test_accuracy"])


@pytest.mark.slow
def test_zeros_init_is_logregs_default_and_wins_at_1000_clients_x_5_rounds() -> None:
    # With one or two local steps per client the random start dominates: zeros (scikit-learn's
    # and FedProx's start) ends near 0.88, Glorot near 0.28 (docs/benchmarks.md).
    zeros, glorot = _final_accuracy("logreg"), _final_accuracy("logreg:init=glorot_uniform")
    assert zeros == _final_accuracy("logreg:init=zeros")
    assert zeros > 0.8 and glorot < 0.5 and zeros - glorot > 0.3


def test_init_schemes() -> None:
    rng = child_rng(0, "init")
    logreg = build_model("logreg", 64, 10)
    assert not np.any(logreg.init(rng))
    glorot = build_model("logreg:init=glorot_uniform", 64, 10).init(child_rng(0, "init"))
    bound = np.sqrt(6 / (64 + 10))
    assert np.abs(glorot).max() <= bound and np.abs(glorot[: 64 * 10]).min() >= 0
    assert np.count_nonzero(glorot) == 640  # weights drawn, biases zero
    he = build_model("mlp:hidden=32", 64, 10).init(child_rng(0, "init"))
    assert np.abs(he[: 64 * 32]).max() > np.sqrt(6 / (64 + 32))  # He: sqrt(6 / fan_in)
    assert np.abs(he[: 64 * 32]).max() <= np.sqrt(6 / 64)
    mlp_glorot = build_model("mlp:hidden=32,init=glorot_uniform", 64, 10)
    assert np.abs(mlp_glorot.init(child_rng(0, "init"))[: 64 * 32]).max() <= np.sqrt(6 / 96)
    with pytest.raises(SpecError, match="init"):
        build_model("mlp:init=zeros", 64, 10)  # ReLU units from 0 never move: not offered
    with pytest.raises(SpecError, match="init"):
        build_model("logreg:init=ones", 64, 10)


def test_init_keeps_old_spec_identity() -> None:
    a = RunSpec(name="a", model="mlp:hidden=64")
    b = RunSpec(name="a", model="mlp:hidden=64,init=he_uniform")
    assert a.fingerprint == b.fingerprint and "init" not in a.model
    assert RunSpec(name="a", model="logreg:init=glorot_uniform").model["init"] == "glorot_uniform"


def test_scale_unit_is_the_peers_digits_preprocessing() -> None:
    unit = load_dataset("digits:scale=unit", seed=0)
    raw = load_dataset("digits:scale=raw", seed=0)
    std = load_dataset("digits", seed=0)
    np.testing.assert_array_equal(unit.X_train, raw.X_train / np.float32(16))
    assert raw.X_train.max() == 16 and unit.X_train.max() == 1
    assert abs(float(std.X_train.mean())) < 1e-5
    np.testing.assert_array_equal(unit.y_test, std.y_test)  # same split


def test_blockwise_scaling_and_split_equal_the_whole_array_arithmetic() -> None:
    import velocity.data.datasets as datasets

    rng = np.random.default_rng(3)
    X = rng.normal(2.0, 3.0, (1000, 7))
    train = np.sort(rng.choice(1000, 800, replace=False))
    test = np.setdiff1d(np.arange(1000), train)
    old = datasets._BLOCK_ROWS
    try:
        datasets._BLOCK_ROWS = 64  # many blocks
        shift, divisor = scaling(X, train, "standardize")
        X32 = scaled_float32(X, shift, divisor)
        X_train, X_test = split_rows(X32, train, test)
    finally:
        datasets._BLOCK_ROWS = old
    np.testing.assert_allclose(shift, X[train].mean(0), rtol=1e-12)
    np.testing.assert_allclose(divisor, X[train].std(0), rtol=1e-12)
    expected = ((X - shift) / divisor).astype(np.float32)
    np.testing.assert_array_equal(X_train, expected[train])
    np.testing.assert_array_equal(X_test, expected[test])
    assert X_train.flags.c_contiguous and X_train.shape == (800, 7)


def test_synthetic_does_not_depend_on_block_size() -> None:
    import velocity.data.datasets as datasets

    a = synthetic_li2020(1.0, 1.0, 30, np.random.default_rng(5), max_per_client=300)
    old = datasets._BLOCK_ROWS
    try:
        datasets._BLOCK_ROWS = 100
        b = synthetic_li2020(1.0, 1.0, 30, np.random.default_rng(5), max_per_client=300)
    finally:
        datasets._BLOCK_ROWS = old
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.X.dtype == np.float32 and np.array_equal(np.unique(a.groups), np.arange(30))


def test_natural_partition_keeps_each_group_in_order() -> None:
    groups = np.random.default_rng(0).integers(0, 50, 5000)
    parts = partition("natural", np.zeros(5000, dtype=np.int64), 50, child_rng(0, "p"), groups)
    for k, part in enumerate(parts):
        np.testing.assert_array_equal(part, np.flatnonzero(groups == k))


def test_chunk_size_follows_the_memory_budget() -> None:
    small = chunk_size_for(num_params=650, width=16, units=74, max_steps=2, budget=1 << 20)
    large = chunk_size_for(num_params=650, width=16, units=74, max_steps=2, budget=64 << 20)
    assert 1 <= small < large
    assert chunk_size_for(num_params=10**9, width=16, units=74, max_steps=2, budget=1) == 1
