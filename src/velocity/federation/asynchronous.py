"""Asynchronous federated learning on simulated time: FedBuff and FedAsync protocols, staleness
weights and the deterministic event queue the round loop drives them with.

- ``fedbuff`` (Nguyen et al., AISTATS 2022): ``concurrency`` clients train at once; each arrived
  update joins a buffer; when ``buffer`` (K) updates are in, the server applies the strategy to
  the buffered deltas, each scaled by its staleness weight ``s(tau)``.
- ``fedasync`` (Xie et al., 2019): every arrival is a server step mixing the client's model in:
  ``x <- x + mixing * s(tau) * (x_client - x)``.

Staleness ``tau`` = server steps between a client's dispatch and its arrival. Weights (Xie et al.):
``constant`` 1; ``polynomial`` ``(1 + tau)^-a`` (FedBuff's default is a = 0.5); ``hinge`` 1 for
``tau <= b`` else ``1 / (a (tau - b) + 1)``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from velocity.registry import Param, Registry

__all__ = [
    "ASYNC_PROTOCOLS",
    "STALENESS_FUNCTIONS",
    "EventQueue",
    "staleness_weights",
]

STALENESS_FUNCTIONS = ("constant", "polynomial", "hinge")

_COMMON = (
    Param(
        "concurrency",
        int,
        None,
        "clients training at once (default clients_per_round)",
        low=1,
        nullable=True,
        omit_default=True,
    ),
    Param("staleness", str, "polynomial", "staleness weight function", choices=STALENESS_FUNCTIONS),
    Param("exponent", float, 0.5, "a of the polynomial / hinge weight", low=0),
    Param("hinge", int, 4, "b of the hinge weight: staleness tolerated at full weight", low=0),
)

ASYNC_PROTOCOLS: Registry[str] = Registry("asynchronous protocol")
ASYNC_PROTOCOLS.register(
    "fedbuff",
    params=(Param("buffer", int, 10, "K: updates per server step", low=1), *_COMMON),
    summary="Buffered asynchronous aggregation: a server step every K staleness-weighted updates",
    paper="Nguyen et al., Federated Learning with Buffered Asynchronous Aggregation, AISTATS 2022",
)("fedbuff")
ASYNC_PROTOCOLS.register(
    "fedasync",
    params=(
        Param(
            "mixing", float, 0.6, "alpha: weight of an arrived model", low=0, low_open=True, high=1
        ),
        *_COMMON,
    ),
    summary="Every arrival is a server step mixing the client's model in with weight alpha s(tau)",
    paper="Xie et al., Asynchronous Federated Optimization, 2019",
)("fedasync")


def staleness_weights(tau: np.ndarray, function: str, a: float, b: int) -> np.ndarray:
    """``s(tau)`` for an array of staleness values (server steps), float64."""
    t = np.asarray(tau, dtype=np.float64)
    if function == "constant":
        return np.ones_like(t)
    if function == "polynomial":
        out: np.ndarray = (1.0 + t) ** -a
        return out
    if function == "hinge":
        return 1.0 / (a * np.maximum(t - b, 0.0) + 1.0)
    raise ValueError(f"unknown staleness function {function!r}")


@dataclass(order=True)
class _Event:
    time: float
    client: int
    seq: int
    payload: Any = field(compare=False)


class EventQueue:
    """Arrivals ordered by (simulated time, client id, dispatch number): deterministic, whatever
    order they were pushed in."""

    def __init__(self) -> None:
        self._heap: list[_Event] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, time: float, client: int, payload: Any) -> None:
        heapq.heappush(self._heap, _Event(float(time), int(client), self._seq, payload))
        self._seq += 1

    def pop_simultaneous(self) -> Iterator[tuple[float, int, Any]]:
        """Every event at the earliest time, in client-id order."""
        if not self._heap:
            return
        first = self._heap[0].time
        while self._heap and self._heap[0].time == first:
            event = heapq.heappop(self._heap)
            yield event.time, event.client, event.payload
