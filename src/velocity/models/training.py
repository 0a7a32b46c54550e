"""Local training of a round's clients, vectorized across clients.

Each client's step schedule (its shuffled sample indices cut into batches, per epoch) comes from
its own seed child. Clients are stacked in order of schedule length, so at step s the clients
still training are a prefix of the stack: every step is one batched update of that prefix, the
same arithmetic as each client training alone (see ``train_clients_naive``, used as reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from velocity.models.mlp import MLP

__all__ = ["LocalConfig", "LocalResult", "batch_schedule", "train_clients", "train_clients_naive"]


@dataclass(frozen=True)
class LocalConfig:
    """Client-side optimizer: mini-batch SGD with momentum, weight decay and FedProx's mu."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    mu: float = 0.0


@dataclass(frozen=True)
class LocalResult:
    """Trained parameters ``(n, d)``, mean local training loss ``(n,)`` and sample counts;
    ``momentum`` ``(n, d)``: each client's SGD momentum buffer after its last step, when the
    caller passed ``initial_momentum`` (persistent client momentum), else None."""

    params: np.ndarray
    train_loss: np.ndarray
    num_samples: np.ndarray
    momentum: np.ndarray | None = None


def batch_schedule(
    indices: np.ndarray, epochs: int, batch_size: int, rng: np.random.Generator
) -> np.ndarray:
    """``(steps, batch_size)`` sample indices, -1 padding the last batch of each epoch."""
    n = len(indices)
    per_epoch = -(-n // batch_size)
    out = np.full((epochs, per_epoch * batch_size), -1, dtype=np.int64)
    for epoch in range(epochs):
        out[epoch, :n] = indices[rng.permutation(n)]
    return out.reshape(epochs * per_epoch, batch_size)


def _sgd_step(
    params: np.ndarray,
    velocity: np.ndarray,
    grad: np.ndarray,
    anchor: np.ndarray,
    cfg: LocalConfig,
) -> None:
    """In-place SGD step on a client stack: g += wd*p + mu*(p - global); v = m*v + g; p -= lr*v."""
    if cfg.weight_decay:
        grad += np.float32(cfg.weight_decay) * params
    if cfg.mu:
        grad += np.float32(cfg.mu) * (params - anchor)
    if cfg.momentum:
        velocity *= np.float32(cfg.momentum)
        velocity += grad
        grad = velocity
    params -= np.float32(cfg.lr) * grad


def train_clients(
    model: MLP,
    global_params: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    client_indices: Sequence[np.ndarray],
    rngs: Sequence[np.random.Generator],
    cfg: LocalConfig,
    chunk_size: int = 256,
    initial_momentum: np.ndarray | None = None,
) -> LocalResult:
    """Train every client from ``global_params`` on its samples; returns their final parameters.

    ``X``/``y`` are the (possibly poisoned) training arrays the indices point into; ``rngs[i]``
    shuffles client i. Clients are processed in chunks of ``chunk_size`` to bound memory.
    ``initial_momentum`` ``(n, d)`` starts client i's SGD momentum buffer from row i instead of
    zero (momentum carried across rounds); the buffers after training come back in
    ``LocalResult.momentum``. Without it every buffer starts at zero, as in each round before.
    """
    n = len(client_indices)
    # Batches never hold more than the largest client's samples: cutting that padding is the
    # same for every chunk, so a client's arithmetic does not depend on how clients are chunked
    # (and a batch size far above any client's data allocates nothing for it).
    width = min(cfg.batch_size, max(len(idx) for idx in client_indices))
    schedules = [
        batch_schedule(idx, cfg.epochs, width, rng)
        for idx, rng in zip(client_indices, rngs, strict=True)
    ]
    steps = np.array([len(s) for s in schedules])
    order = np.argsort(-steps, kind="stable")  # longest schedules first: active set is a prefix
    params_out = np.empty((n, model.num_params), dtype=np.float32)
    momentum_out = None if initial_momentum is None else np.empty_like(params_out)
    loss_out = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk_size):
        chunk = order[start : start + chunk_size]
        c = len(chunk)
        max_steps = int(steps[chunk[0]])
        sched = np.full((c, max_steps, width), -1, dtype=np.int64)
        for row, k in enumerate(chunk):
            sched[row, : steps[k]] = schedules[k]
        active_until = steps[chunk]
        params = np.repeat(global_params[None, :], c, axis=0)
        anchor = global_params[None, :]  # the round's global model (never a view of params)
        if initial_momentum is None:
            velocity = np.zeros_like(params)
        else:
            velocity = np.asarray(initial_momentum, dtype=np.float32)[chunk].copy()
        loss_sum = np.zeros(c, dtype=np.float64)
        for s in range(max_steps):
            a = int(np.count_nonzero(active_until > s))
            idx = sched[:a, s]
            mask = (idx >= 0).astype(np.float32)
            safe = np.where(idx >= 0, idx, 0)
            losses, grad = model.loss_and_grad(params[:a], X[safe], y[safe], mask)
            loss_sum[:a] += losses
            _sgd_step(params[:a], velocity[:a], grad, anchor, cfg)
        params_out[chunk] = params
        if momentum_out is not None:
            momentum_out[chunk] = velocity
        counts = np.array([cfg.epochs * len(client_indices[k]) for k in chunk], dtype=np.float64)
        loss_out[chunk] = loss_sum / counts
    return LocalResult(
        params=params_out,
        train_loss=loss_out,
        num_samples=np.array([len(i) for i in client_indices], dtype=np.int64),
        momentum=momentum_out,
    )


def train_clients_naive(
    model: MLP,
    global_params: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    client_indices: Sequence[np.ndarray],
    rngs: Sequence[np.random.Generator],
    cfg: LocalConfig,
    initial_momentum: np.ndarray | None = None,
) -> LocalResult:
    """Reference implementation: a Python loop over clients, one client at a time.

    Same schedules and arithmetic as :func:`train_clients`; used by tests and the round benchmark.
    """
    params_out, losses, momenta = [], [], []
    for i, (idx, rng) in enumerate(zip(client_indices, rngs, strict=True)):
        schedule = batch_schedule(idx, cfg.epochs, min(cfg.batch_size, len(idx)), rng)
        params = global_params[None, :].copy()
        anchor = global_params[None, :]
        if initial_momentum is None:
            velocity = np.zeros_like(params)
        else:
            velocity = np.asarray(initial_momentum, dtype=np.float32)[i : i + 1].copy()
        total = 0.0
        for batch in schedule:
            valid = batch[batch >= 0]
            mask = np.ones((1, len(valid)), dtype=np.float32)
            loss, grad = model.loss_and_grad(params, X[valid][None], y[valid][None], mask)
            total += float(loss[0])
            _sgd_step(params, velocity, grad, anchor, cfg)
        params_out.append(params[0])
        momenta.append(velocity[0])
        losses.append(total / (cfg.epochs * len(idx)))
    return LocalResult(
        params=np.stack(params_out),
        train_loss=np.array(losses),
        num_samples=np.array([len(i) for i in client_indices], dtype=np.int64),
        momentum=None if initial_momentum is None else np.stack(momenta),
    )
