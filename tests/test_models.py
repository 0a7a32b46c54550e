"""NumPy models: gradients against finite differences; vectorized training equals a client loop."""

from __future__ import annotations

import numpy as np
import pytest

from velocity.models import (
    MLP,
    MODELS,
    LocalConfig,
    build_model,
    plan_round,
    train_clients,
    train_clients_naive,
)
from velocity.seeds import child_rng


def _plan(clients, cfg: LocalConfig, round_index: int = 1):  # type: ignore[no-untyped-def]
    ids = range(len(clients))
    return plan_round(
        clients, ids, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=0, round_index=round_index
    )


@pytest.mark.parametrize("hidden", [(), (7,), (6, 5)])
def test_gradient_matches_finite_differences(hidden: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    model = MLP(num_features=4, num_classes=3, hidden=hidden)
    params = rng.normal(scale=0.5, size=(2, model.num_params))  # float64 for a precise check
    X = rng.normal(size=(2, 5, 4))
    y = rng.integers(0, 3, size=(2, 5))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=np.float64)
    _, grad = model.loss_and_grad(params, X, y, mask)

    def mean_loss(p: np.ndarray) -> np.ndarray:
        losses, _ = model.loss_and_grad(p, X, y, mask)
        return losses / mask.sum(axis=1)

    eps = 1e-6
    numeric = np.zeros_like(params)
    for j in range(model.num_params):
        step = np.zeros_like(params)
        step[:, j] = eps
        numeric[:, j] = (mean_loss(params + step) - mean_loss(params - step)) / (2 * eps)
    assert np.allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_masked_samples_do_not_change_loss_or_gradient() -> None:
    rng = np.random.default_rng(1)
    model = MLP(3, 2, (4,))
    params = rng.normal(size=(1, model.num_params)).astype(np.float32)
    X = rng.normal(size=(1, 4, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=(1, 4))
    full_loss, full_grad = model.loss_and_grad(
        params, X[:, :2], y[:, :2], np.ones((1, 2), np.float32)
    )
    mask = np.array([[1, 1, 0, 0]], dtype=np.float32)
    loss, grad = model.loss_and_grad(params, X, y, mask)
    assert np.allclose(loss, full_loss) and np.allclose(grad, full_grad, atol=1e-6)


def _setup(n_clients: int = 6):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    sizes = [5, 50, 17, 33, 1, 64][:n_clients]  # unequal sizes: padded schedules
    starts = np.cumsum([0, *sizes])
    clients = [np.arange(starts[i], starts[i + 1]) for i in range(n_clients)]
    model = build_model("mlp:hidden=16", 8, 3)
    params = model.init(child_rng(0, "init"))
    return model, params, X, y, clients


@pytest.mark.parametrize(
    "cfg",
    [
        LocalConfig(epochs=1, batch_size=8, lr=0.1),
        LocalConfig(epochs=3, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-3, mu=0.1),
    ],
)
def test_vectorized_training_equals_per_client_loop(cfg: LocalConfig) -> None:
    model, params, X, y, clients = _setup()
    plan = _plan(clients, cfg)
    fast = train_clients(model, params, X, y, plan, cfg, chunk_size=4)
    slow = train_clients_naive(model, params, X, y, plan, cfg)
    assert np.allclose(fast.params, slow.params, rtol=1e-5, atol=1e-6)
    assert np.allclose(fast.train_loss, slow.train_loss, rtol=1e-5)
    assert np.array_equal(fast.num_samples, [len(c) for c in clients])
    # chunking never changes a client's bits (each client's matmuls are its own)
    other = train_clients(model, params, X, y, plan, cfg, chunk_size=256)
    assert np.array_equal(fast.params, other.params)


def test_proximal_term_pulls_towards_global_model() -> None:
    model, params, X, y, clients = _setup()
    plan = _plan(clients, LocalConfig(epochs=5))
    free = train_clients(model, params, X, y, plan, LocalConfig(epochs=5, lr=0.2))
    prox = train_clients(model, params, X, y, plan, LocalConfig(epochs=5, lr=0.2, mu=1.0))
    drift = lambda r: np.linalg.norm(r.params - params, axis=1)  # noqa: E731
    assert np.all(drift(prox) < drift(free))


def test_weight_decay_shrinks_parameters() -> None:
    model, params, X, y, clients = _setup()
    zero_lr_wd = LocalConfig(epochs=1, batch_size=1000, lr=0.1, weight_decay=0.5)
    plan = _plan(clients, zero_lr_wd)
    out = train_clients(model, params, X, y, plan, zero_lr_wd)
    plain = train_clients(model, params, X, y, plan, LocalConfig(batch_size=1000, lr=0.1))
    assert np.all(np.linalg.norm(out.params, axis=1) < np.linalg.norm(plain.params, axis=1))


def test_init_is_seeded_and_float32() -> None:
    model = build_model("mlp:hidden=32-16", 10, 4)
    a, b = model.init(child_rng(1, "init")), model.init(child_rng(1, "init"))
    assert a.dtype == np.float32 and a.shape == (model.num_params,) and np.array_equal(a, b)
    assert model.num_params == 10 * 32 + 32 + 32 * 16 + 16 + 16 * 4 + 4


@pytest.mark.parametrize(
    "name", [n for n in MODELS.names() if MODELS.get(n).extra.get("backend") != "torch"]
)
def test_model_registry_contract(name: str) -> None:
    """Every model: default-constructible, seeded float32 init, finite loss, gradient shape."""
    model = build_model(name, 5, 3)
    params = model.init(child_rng(0, "init"))
    assert params.shape == (model.num_params,) and params.dtype == np.float32
    X = np.random.default_rng(0).normal(size=(2, 4, 5)).astype(np.float32)
    y = np.array([[0, 1, 2, 0], [2, 2, 1, 0]])
    stacked = np.repeat(params[None], 2, axis=0)
    before = stacked.copy()
    losses, grad = model.loss_and_grad(stacked, X, y, np.ones((2, 4), np.float32))
    assert np.array_equal(stacked, before)  # inputs are not modified
    assert grad.shape == stacked.shape and np.all(np.isfinite(losses))
    loss, acc = model.evaluate(params, X[0], y[0])
    assert np.isfinite(loss) and 0.0 <= acc <= 1.0


def test_a_plan_visits_each_clients_samples_once_per_epoch_in_batches() -> None:
    clients = [np.arange(0, 5), np.arange(5, 55), np.arange(55, 72), np.array([72])]
    plan = plan_round(clients, [3, 0, 9, 4], epochs=3, batch_size=8, seed=1, round_index=2)
    sched = plan.schedule()
    assert sched.shape == (4, 3 * 7, 8)
    for row, idx in enumerate(clients):
        per_epoch = -(-len(idx) // 8)
        assert plan.steps[row] == 3 * per_epoch
        for epoch in range(3):
            batches = sched[row, epoch * per_epoch : (epoch + 1) * per_epoch]
            seen = batches[batches >= 0]
            assert sorted(seen) == list(idx)  # every sample once per epoch
        assert np.all(sched[row, plan.steps[row] :] == -1)
    # shuffles differ between epochs and rounds, and are not the identity
    first = sched[1, :7][sched[1, :7] >= 0]
    assert not np.array_equal(first, clients[1])
    assert not np.array_equal(first, sched[1, 7:14][sched[1, 7:14] >= 0])
    again = plan_round(clients, [3, 0, 9, 4], epochs=3, batch_size=8, seed=1, round_index=3)
    assert not np.array_equal(again.schedule(), sched)


def test_a_clients_batches_depend_only_on_seed_round_and_its_own_id() -> None:
    clients = [np.arange(0, 30), np.arange(30, 41), np.arange(41, 60)]
    plan = plan_round(clients, [5, 2, 7], epochs=2, batch_size=4, seed=9, round_index=1)
    # the same client in another round's company, at another row: the same batches
    alone = plan_round([clients[1]], [2], epochs=2, batch_size=4, seed=9, round_index=1)
    assert np.array_equal(alone.schedule()[0], plan.schedule([1])[0][: alone.steps[0]])
    assert np.array_equal(plan.schedule([2, 0]), plan.schedule()[[2, 0]][:, :, :])
    other_seed = plan_round(clients, [5, 2, 7], epochs=2, batch_size=4, seed=10, round_index=1)
    assert not np.array_equal(other_seed.schedule(), plan.schedule())


def test_partial_work_cuts_steps_and_counts_the_samples_seen() -> None:
    clients = [np.arange(0, 10), np.arange(10, 13)]
    plan = plan_round(clients, [0, 1], epochs=2, batch_size=4, seed=0, round_index=1)
    assert list(plan.full_steps) == [6, 2] and list(plan.samples_seen) == [20, 6]
    cut = plan.with_steps(np.array([4, 0]))
    assert list(cut.samples_seen) == [14, 0]  # 3 steps of epoch 1 (4+4+2) and one of epoch 2
    sched = cut.schedule()
    assert sched.shape == (2, 4, 4) and np.all(sched[1] == -1)
    assert np.array_equal(sched[0], plan.schedule([0])[0][:4])
    with pytest.raises(ValueError, match="between 0"):
        plan.with_steps(np.array([7, 0]))
    model = build_model("logreg", 8, 3)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(13, 8)).astype(np.float32)
    y = rng.integers(0, 3, 13)
    params = model.init(child_rng(0, "init"))
    cfg = LocalConfig(epochs=2, batch_size=4, lr=0.1)
    out = train_clients(model, params, X, y, cut, cfg)
    assert np.array_equal(out.params[1], params)  # no step: the global model comes back
    assert np.isnan(out.train_loss[1]) and np.isfinite(out.train_loss[0])
    naive = train_clients_naive(model, params, X, y, cut, cfg)
    assert np.allclose(naive.params, out.params, atol=1e-6)
