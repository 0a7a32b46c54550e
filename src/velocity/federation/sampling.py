"""Client sampling: which clients take part in each round, drawn from the run's seed tree.

Two schemes, registered by name (``client_sampling`` in a run spec):

- ``fixed`` (default): exactly ``clients_per_round`` distinct clients, uniformly without
  replacement; with ``clients_per_round == num_clients`` every client, every round (no draw).
- ``poisson``: each client independently with probability ``q = clients_per_round /
  num_clients``, so a round has ``clients_per_round`` clients on average (possibly none). The
  standard DP analyses (amplification by Poisson subsampling) assume this scheme.

A sampler is a pure function ``(num_clients, clients_per_round, rng) -> sorted ids`` (int64).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from velocity.registry import Registry
from velocity.seeds import child_rng

__all__ = [
    "CLIENT_SAMPLINGS",
    "ClientSampler",
    "client_sampler",
    "poisson_sample",
    "sample_available",
    "sample_clients",
    "sampling_rate",
    "uniform_fixed_size_sample",
]

ClientSampler = Callable[[int, int, np.random.Generator], np.ndarray]
"""``(num_clients, clients_per_round, rng) -> sorted int64 ids of the round's clients``."""

CLIENT_SAMPLINGS: Registry[ClientSampler] = Registry("client sampling")


def client_sampler(
    name: str, *, summary: str, paper: str = "", fixed_size: bool
) -> Callable[[ClientSampler], ClientSampler]:
    """Register a client-sampling scheme; ``fixed_size``: every round has exactly
    ``clients_per_round`` clients (privacy accounting differs between the two kinds)."""
    extra: dict[str, Any] = {"fixed_size": fixed_size}
    return CLIENT_SAMPLINGS.register(name, summary=summary, paper=paper, **extra)


def sampling_rate(num_clients: int, clients_per_round: int) -> float:
    """The per-round sampling rate ``q = clients_per_round / num_clients``."""
    return clients_per_round / num_clients


@client_sampler(
    "fixed",
    summary="Exactly clients_per_round distinct clients, uniformly without replacement.",
    fixed_size=True,
)
def uniform_fixed_size_sample(
    num_clients: int, clients_per_round: int, rng: np.random.Generator
) -> np.ndarray:
    """``clients_per_round`` distinct ids, uniformly at random, sorted."""
    return np.sort(rng.choice(num_clients, clients_per_round, replace=False))


@client_sampler(
    "poisson",
    summary="Each client independently with probability q = clients_per_round / num_clients.",
    paper="Abadi et al., CCS 2016; McMahan et al., ICLR 2018",
    fixed_size=False,
)
def poisson_sample(
    num_clients: int, clients_per_round: int, rng: np.random.Generator
) -> np.ndarray:
    """Ids of the clients whose uniform draw falls below ``q`` (one draw per client), sorted."""
    q = sampling_rate(num_clients, clients_per_round)
    return np.flatnonzero(rng.random(num_clients) < q).astype(np.int64)


def sample_clients(
    scheme: str, num_clients: int, clients_per_round: int, seed: int, round_index: int
) -> np.ndarray:
    """The sorted ids of the clients taking part in ``round_index`` (1-based) under ``scheme``.

    Every client, with no draw, when ``clients_per_round == num_clients`` (both schemes agree:
    q = 1); otherwise one draw from ``child_rng(seed, "sample", round_index)``.
    """
    sampler = CLIENT_SAMPLINGS.get(scheme).obj
    if clients_per_round == num_clients:
        return np.arange(num_clients)
    return sampler(num_clients, clients_per_round, child_rng(seed, "sample", round_index))


def sample_available(
    scheme: str,
    available: np.ndarray,
    clients_per_round: int,
    seed: int,
    round_index: int,
) -> np.ndarray:
    """:func:`sample_clients` among the reachable clients (``available``: ``(num_clients,)``
    bool). With every client reachable it is :func:`sample_clients` exactly. Otherwise
    ``fixed`` draws ``min(clients_per_round, reachable)`` of them uniformly and ``poisson``
    keeps each reachable client with probability ``q`` (the same per-client draws as without
    availability), both from ``child_rng(seed, "sample", round_index)``."""
    available = np.asarray(available, dtype=bool)
    num_clients = len(available)
    if available.all():
        return sample_clients(scheme, num_clients, clients_per_round, seed, round_index)
    rng = child_rng(seed, "sample", round_index)
    reachable = np.flatnonzero(available).astype(np.int64)
    if CLIENT_SAMPLINGS.get(scheme).extra["fixed_size"]:
        count = min(clients_per_round, len(reachable))
        return np.sort(rng.choice(reachable, count, replace=False)).astype(np.int64)
    q = sampling_rate(num_clients, clients_per_round)
    return np.flatnonzero((rng.random(num_clients) < q) & available).astype(np.int64)
