"""Local training of a round's clients with NumPy, vectorized across clients.

The clients' batches come from the round's :class:`~velocity.models.schedule.RoundPlan`.
Clients are stacked in order of step count, so at step s the clients still training are a
prefix of the stack: every step is one batched update of that prefix, the same arithmetic as
each client training alone (see ``train_clients_naive``, used as reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from velocity.models.schedule import RoundPlan

if TYPE_CHECKING:
    from velocity.models.mlp import MLP

__all__ = [
    "TRAIN_MEMORY_BUDGET",
    "LocalConfig",
    "LocalResult",
    "chunk_size_for",
    "train_clients",
    "train_clients_naive",
]

TRAIN_MEMORY_BUDGET = 64 << 20
"""Bytes one chunk of clients may hold while it trains (parameters, momentum, gradients, batch
schedule, gathered batches, activations): the chunk size follows from it."""


def chunk_size_for(
    *, num_params: int, width: int, units: int, max_steps: int, budget: int = TRAIN_MEMORY_BUDGET
) -> int:
    """Clients trained together so that a chunk stays within ``budget`` bytes (at least one).

    Per client: parameters, momentum, gradient and the SGD step's temporary (4 x d float32);
    its batch schedule and the temporaries that build it (about 4 x steps x width int64); a
    step's gathered batch and activations with their gradients (3 x width x units float32,
    ``units`` = input features + hidden widths + classes).
    """
    per_client = 16 * num_params + 32 * max_steps * width + 12 * width * units
    return max(1, budget // max(per_client, 1))


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
    """Trained parameters ``(n, d)``, mean local training loss ``(n,)`` (over the samples each
    client visited) and sample counts (each client's data size, its aggregation weight);
    ``momentum`` ``(n, d)``: each client's SGD momentum buffer after its last step, when the
    caller passed ``initial_momentum`` (persistent client momentum), else None."""

    params: np.ndarray
    train_loss: np.ndarray
    num_samples: np.ndarray
    momentum: np.ndarray | None = None


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
    plan: RoundPlan,
    cfg: LocalConfig,
    chunk_size: int | None = None,
    initial_momentum: np.ndarray | None = None,
    memory_budget: int = TRAIN_MEMORY_BUDGET,
) -> LocalResult:
    """Train every client of ``plan`` from ``global_params``; returns their final parameters.

    ``X``/``y`` are the (possibly poisoned) training arrays the plan's indices point into.
    Clients are processed in chunks of ``chunk_size`` (by default as many as fit in
    ``memory_budget`` bytes, :func:`chunk_size_for`) to bound memory. ``initial_momentum``
    ``(n, d)`` starts client i's SGD momentum buffer from row i instead of zero (momentum carried
    across rounds); the buffers after training come back in ``LocalResult.momentum``. Without it
    every buffer starts at zero. ``cfg.epochs`` and ``cfg.batch_size`` are the plan's business.
    """
    n = plan.num_clients
    steps = plan.steps
    order = np.argsort(-steps, kind="stable")  # most steps first: the active set is a prefix
    if chunk_size is None:
        units = model.num_features + sum(model.hidden) + model.num_classes
        chunk_size = chunk_size_for(
            num_params=model.num_params,
            width=plan.width,
            units=units,
            max_steps=int(steps.max(initial=0)),
            budget=memory_budget,
        )
    params_out = np.empty((n, model.num_params), dtype=np.float32)
    momentum_out = None if initial_momentum is None else np.empty_like(params_out)
    loss_sum_out = np.zeros(n, dtype=np.float64)
    for start in range(0, n, chunk_size):
        chunk = order[start : start + chunk_size]
        c = len(chunk)
        sched = plan.schedule(chunk)
        active_until = steps[chunk]
        params = np.repeat(global_params[None, :], c, axis=0)
        anchor = global_params[None, :]  # the round's global model (never a view of params)
        if initial_momentum is None:
            velocity = np.zeros_like(params)
        else:
            velocity = np.asarray(initial_momentum, dtype=np.float32)[chunk].copy()
        loss_sum = np.zeros(c, dtype=np.float64)
        for s in range(sched.shape[1]):
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
        loss_sum_out[chunk] = loss_sum
    return LocalResult(
        params=params_out,
        train_loss=_mean_loss(loss_sum_out, plan),
        num_samples=plan.sizes,
        momentum=momentum_out,
    )


def _mean_loss(loss_sum: np.ndarray, plan: RoundPlan) -> np.ndarray:
    """Mean loss per visited sample (NaN for a client that took no step)."""
    seen = plan.samples_seen.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen > 0, loss_sum / np.maximum(seen, 1), np.nan)


def train_clients_naive(
    model: MLP,
    global_params: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    plan: RoundPlan,
    cfg: LocalConfig,
    initial_momentum: np.ndarray | None = None,
) -> LocalResult:
    """Reference implementation: a Python loop over clients, one client at a time.

    Same plan and arithmetic as :func:`train_clients`; used by tests and the round benchmark.
    """
    params_out, losses, momenta = [], [], []
    for i in range(plan.num_clients):
        schedule = plan.schedule([i])[0]
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
        losses.append(total)
    return LocalResult(
        params=np.stack(params_out),
        train_loss=_mean_loss(np.array(losses), plan),
        num_samples=plan.sizes,
        momentum=None if initial_momentum is None else np.stack(momenta),
    )
