"""NumPy models: gradients against finite differences; vectorized training equals a client loop."""

from __future__ import annotations

import numpy as np
import pytest

from velocity.models import (
    MLP,
    MODELS,
    LocalConfig,
    build_model,
    train_clients,
    train_clients_naive,
)
from velocity.seeds import child_rng


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
    rngs = lambda: [child_rng(0, "shuffle", 1, k) for k in range(len(clients))]  # noqa: E731
    fast = train_clients(model, params, X, y, clients, rngs(), cfg, chunk_size=4)
    slow = train_clients_naive(model, params, X, y, clients, rngs(), cfg)
    assert np.allclose(fast.params, slow.params, rtol=1e-5, atol=1e-6)
    assert np.allclose(fast.train_loss, slow.train_loss, rtol=1e-5)
    assert np.array_equal(fast.num_samples, [len(c) for c in clients])
    # chunking never changes a client's bits (each client's matmuls are its own)
    other = train_clients(model, params, X, y, clients, rngs(), cfg, chunk_size=256)
    assert np.array_equal(fast.params, other.params)


def test_proximal_term_pulls_towards_global_model() -> None:
    model, params, X, y, clients = _setup()
    rngs = lambda: [child_rng(0, "shuffle", 1, k) for k in range(len(clients))]  # noqa: E731
    free = train_clients(model, params, X, y, clients, rngs(), LocalConfig(epochs=5, lr=0.2))
    prox = train_clients(
        model, params, X, y, clients, rngs(), LocalConfig(epochs=5, lr=0.2, mu=1.0)
    )
    drift = lambda r: np.linalg.norm(r.params - params, axis=1)  # noqa: E731
    assert np.all(drift(prox) < drift(free))


def test_weight_decay_shrinks_parameters() -> None:
    model, params, X, y, clients = _setup()
    zero_lr_wd = LocalConfig(epochs=1, batch_size=1000, lr=0.1, weight_decay=0.5)
    out = train_clients(
        model, params, X, y, clients, [child_rng(0, k) for k in range(6)], zero_lr_wd
    )
    plain = train_clients(
        model,
        params,
        X,
        y,
        clients,
        [child_rng(0, k) for k in range(6)],
        LocalConfig(batch_size=1000, lr=0.1),
    )
    assert np.all(np.linalg.norm(out.params, axis=1) < np.linalg.norm(plain.params, axis=1))


def test_init_is_seeded_and_float32() -> None:
    model = build_model("mlp:hidden=32-16", 10, 4)
    a, b = model.init(child_rng(1, "init")), model.init(child_rng(1, "init"))
    assert a.dtype == np.float32 and a.shape == (model.num_params,) and np.array_equal(a, b)
    assert model.num_params == 10 * 32 + 32 + 32 * 16 + 16 + 16 * 4 + 4


@pytest.mark.parametrize("name", MODELS.names())
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
