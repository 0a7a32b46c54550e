"""Server optimizers: turn the round's aggregate update into the next global model.

An update is (client model - global model), so the aggregate points downhill and plain FedAvg is
``params + lr * aggregate`` with ``lr = 1``. Optimizers keep their state in a dict owned by the
run's strategy (reset per run). Adaptive ones follow Reddi et al., ICLR 2021, Algorithm 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from velocity.registry import Param, Registry

__all__ = [
    "SERVER_OPTIMIZERS",
    "ServerOptimizer",
    "adagrad",
    "adam",
    "momentum",
    "server_optimizer",
    "sgd",
    "yogi",
]

ServerOptimizer = Callable[..., np.ndarray]
"""``(params (d,) float32, aggregate (d,) float32, state: dict, **params) -> new params (d,)
float32``; ``state`` is the run's own dict for this optimizer (momentum, moments, ...)."""

SERVER_OPTIMIZERS: Registry[ServerOptimizer] = Registry("server optimizer")


def server_optimizer(
    name: str,
    *,
    params: tuple[Param, ...] = (),
    summary: str,
    paper: str = "",
    cost: str = "",
    aliases: tuple[str, ...] = (),
) -> Callable[[ServerOptimizer], ServerOptimizer]:
    """Register a server optimizer (see :data:`ServerOptimizer`)."""
    return SERVER_OPTIMIZERS.register(
        name, params=params, summary=summary, paper=paper, cost=cost, aliases=aliases
    )


_LR = Param("lr", float, 1.0, "server learning rate", low=0.0, low_open=True)
_ADAPTIVE_LR = Param("lr", float, 0.01, "server learning rate eta", low=0.0, low_open=True)
_BETA1 = Param("beta1", float, 0.9, "first-moment decay", low=0.0, high=1.0, high_open=True)
_BETA2 = Param("beta2", float, 0.99, "second-moment decay", low=0.0, high=1.0, high_open=True)
_TAU = Param("tau", float, 1e-3, "adaptivity tau (denominator offset)", low=0.0, low_open=True)
_REDDI = "Reddi et al., 'Adaptive Federated Optimization', ICLR 2021"


@server_optimizer(
    "sgd",
    params=(_LR,),
    summary="Plain server step: params + lr * aggregate (FedAvg with lr=1).",
    paper="McMahan et al., AISTATS 2017",
    cost="O(d)",
)
def sgd(
    params: np.ndarray, aggregate: np.ndarray, state: dict[str, Any], *, lr: float = 1.0
) -> np.ndarray:
    """One plain server step."""
    return (params + np.float32(lr) * aggregate).astype(np.float32)


@server_optimizer(
    "momentum",
    params=(_LR, Param("beta", float, 0.9, "momentum", low=0.0, high=1.0, high_open=True)),
    summary="Server momentum (FedAvgM): v = beta v + aggregate; params + lr v.",
    paper="Hsu et al., arXiv:1909.06335 (2019)",
    cost="O(d)",
)
def momentum(
    params: np.ndarray,
    aggregate: np.ndarray,
    state: dict[str, Any],
    *,
    lr: float = 1.0,
    beta: float = 0.9,
) -> np.ndarray:
    """Heavy-ball server momentum."""
    velocity = state.get("velocity")
    velocity = aggregate.astype(np.float64) if velocity is None else beta * velocity + aggregate
    state["velocity"] = velocity
    return (params + lr * velocity).astype(np.float32)


def _moments(
    state: dict[str, Any], aggregate: np.ndarray, beta1: float, tau: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    delta = aggregate.astype(np.float64)
    first = state.get("m")
    first = (1.0 - beta1) * delta if first is None else beta1 * first + (1.0 - beta1) * delta
    second = state.get("v")
    # Reddi et al. start from v_{-1} >= tau^2; we take tau^2.
    second = np.full_like(delta, tau * tau) if second is None else second
    state["m"] = first
    return delta, first, second


def _apply(
    params: np.ndarray, first: np.ndarray, second: np.ndarray, lr: float, tau: float
) -> np.ndarray:
    return (params + lr * first / (np.sqrt(second) + tau)).astype(np.float32)


@server_optimizer(
    "adam",
    params=(_ADAPTIVE_LR, _BETA1, _BETA2, _TAU),
    summary="FedAdam: v = beta2 v + (1-beta2) d^2; params + lr m / (sqrt(v) + tau).",
    paper=_REDDI,
    cost="O(d)",
)
def adam(
    params: np.ndarray,
    aggregate: np.ndarray,
    state: dict[str, Any],
    *,
    lr: float = 0.01,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
) -> np.ndarray:
    """Adam server step (no bias correction, as in the paper)."""
    delta, first, second = _moments(state, aggregate, beta1, tau)
    second = beta2 * second + (1.0 - beta2) * delta * delta
    state["v"] = second
    return _apply(params, first, second, lr, tau)


@server_optimizer(
    "yogi",
    params=(_ADAPTIVE_LR, _BETA1, _BETA2, _TAU),
    summary="FedYogi: v = v - (1-beta2) d^2 sign(v - d^2); params + lr m / (sqrt(v) + tau).",
    paper=_REDDI,
    cost="O(d)",
)
def yogi(
    params: np.ndarray,
    aggregate: np.ndarray,
    state: dict[str, Any],
    *,
    lr: float = 0.01,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
) -> np.ndarray:
    """Yogi server step."""
    delta, first, second = _moments(state, aggregate, beta1, tau)
    squared = delta * delta
    second = second - (1.0 - beta2) * squared * np.sign(second - squared)
    state["v"] = second
    return _apply(params, first, second, lr, tau)


@server_optimizer(
    "adagrad",
    params=(_ADAPTIVE_LR, _BETA1, _TAU),
    summary="FedAdagrad: v = v + d^2; params + lr m / (sqrt(v) + tau).",
    paper=_REDDI,
    cost="O(d)",
)
def adagrad(
    params: np.ndarray,
    aggregate: np.ndarray,
    state: dict[str, Any],
    *,
    lr: float = 0.01,
    beta1: float = 0.9,
    tau: float = 1e-3,
) -> np.ndarray:
    """Adagrad server step."""
    delta, first, second = _moments(state, aggregate, beta1, tau)
    second = second + delta * delta
    state["v"] = second
    return _apply(params, first, second, lr, tau)
