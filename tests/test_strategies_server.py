"""Server optimizers (Reddi et al. 2021, Hsu et al. 2019) against hand-written reference steps."""

from __future__ import annotations

import numpy as np
import pytest

from velocity.strategies import SERVER_OPTIMIZERS, build_strategy

DELTAS = [np.array([0.5, -1.0, 0.0]), np.array([0.25, 1.0, -2.0]), np.array([-0.5, 0.5, 1.0])]


def run(name: str, **params: float) -> np.ndarray:
    entry, resolved = SERVER_OPTIMIZERS.resolve({"type": name, **params})
    state: dict = {}
    x = np.zeros(3, dtype=np.float32)
    for delta in DELTAS:
        x = entry.obj(x, delta.astype(np.float32), state, **resolved)
    return x


def test_sgd_adds_the_scaled_aggregate() -> None:
    np.testing.assert_allclose(run("sgd", lr=0.5), 0.5 * sum(DELTAS), rtol=1e-6)


def test_momentum_matches_heavy_ball() -> None:
    v, x = np.zeros(3), np.zeros(3)
    for delta in DELTAS:
        v = 0.9 * v + delta
        x = x + 0.5 * v
    np.testing.assert_allclose(run("momentum", lr=0.5, beta=0.9), x, rtol=1e-6)


@pytest.mark.parametrize("name", ["adam", "yogi", "adagrad"])
def test_adaptive_optimizers_match_reddi_algorithm_2(name: str) -> None:
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    m, v, x = np.zeros(3), np.full(3, tau * tau), np.zeros(3)
    for delta in DELTAS:
        m = b1 * m + (1 - b1) * delta
        if name == "adam":
            v = b2 * v + (1 - b2) * delta**2
        elif name == "yogi":
            v = v - (1 - b2) * delta**2 * np.sign(v - delta**2)
        else:
            v = v + delta**2
        x = x + lr * m / (np.sqrt(v) + tau)
    params = {"lr": lr, "beta1": b1, "tau": tau}
    if name != "adagrad":
        params["beta2"] = b2
    np.testing.assert_allclose(run(name, **params), x, rtol=1e-5)


def test_aggregate_is_a_descent_direction_step() -> None:
    # updates are client - global, so a positive aggregate moves the parameters up.
    strategy = build_strategy("fedadam:lr=0.1")
    params = np.zeros(4, dtype=np.float32)
    updates = np.ones((3, 4), dtype=np.float32)
    new = strategy.step(params, updates, np.ones(3), 1)
    assert new.dtype == np.float32 and np.all(new > 0)


def test_strategy_state_persists_across_rounds_and_a_new_strategy_starts_fresh() -> None:
    strategy = build_strategy("fedavgm:lr=1,beta=0.5")
    params = np.zeros(2, dtype=np.float32)
    updates = np.ones((2, 2), dtype=np.float32)
    first = strategy.step(params, updates, np.ones(2), 1)
    second = strategy.step(first, updates, np.ones(2), 2)
    np.testing.assert_allclose(first, [1, 1])
    np.testing.assert_allclose(second, [2.5, 2.5])  # v = 0.5 * 1 + 1
    fresh = build_strategy("fedavgm:lr=1,beta=0.5")
    np.testing.assert_allclose(fresh.step(params, updates, np.ones(2), 1), [1, 1])


def test_fedavg_step_is_params_plus_weighted_mean() -> None:
    strategy = build_strategy("fedavg")
    params = np.array([1.0, 2.0], dtype=np.float32)
    updates = np.array([[1.0, 0.0], [3.0, 4.0]], dtype=np.float32)
    new = strategy.step(params, updates, np.array([1.0, 3.0]), 1)
    np.testing.assert_allclose(new, [3.5, 5.0])
