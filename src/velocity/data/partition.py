"""Partitioners: split the training samples across clients (IID, Dirichlet, shards, natural).

A partitioner is a pure function ``(labels, num_clients, rng, groups, **params) -> list of index
arrays``; every training sample goes to exactly one client and no client is empty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from velocity.errors import SpecError
from velocity.registry import Param, Registry

__all__ = ["PARTITIONERS", "dirichlet", "iid", "natural", "partition", "shard"]

Partitioner = Callable[..., list[np.ndarray]]
PARTITIONERS: Registry[Partitioner] = Registry("partition")


def _check_enough(n: int, num_clients: int, name: str) -> None:
    if n < num_clients:
        raise SpecError(
            f"partition '{name}': {n} training samples cannot fill {num_clients} clients"
        )


@PARTITIONERS.register("iid", summary="Uniformly shuffled, equal-size clients", cost="O(n)")
def iid(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, groups: Any = None
) -> list[np.ndarray]:
    """Shuffle and cut into ``num_clients`` nearly equal parts."""
    _check_enough(len(labels), num_clients, "iid")
    return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), num_clients)]


@PARTITIONERS.register(
    "dirichlet",
    params=(
        Param(
            "alpha", float, 0.5, "concentration; smaller = more label skew", low=0, low_open=True
        ),
        Param(
            "over",
            str,
            "classes",
            "'classes': each class's samples dealt to clients by Dir(alpha) shares (NIID-Bench); "
            "'clients': each client's class proportions ~ Dir(alpha p), equal client sizes (Hsu)",
            choices=("classes", "clients"),
            omit_default=True,
        ),
    ),
    summary="Label skew from Dirichlet(alpha) draws: per class over clients, or per client",
    paper="over=classes: Li et al., NIID-Bench, ICDE 2022; over=clients: Hsu et al., 2019",
    cost="O(n + C K)",
)
def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    groups: Any = None,
    *,
    alpha: float,
    over: str = "classes",
) -> list[np.ndarray]:
    """``over="classes"``: per class c, shares p_c ~ Dir(alpha 1_K) decide how class c's
    samples are dealt to the K clients (Li et al., "Federated Learning on Non-IID Data Silos",
    ICDE 2022); client sizes vary. ``over="clients"``: per client k, class proportions
    q_k ~ Dir(alpha p) with p the classes' overall shares, and every client gets the same
    number of samples (Hsu, Qi & Brown, "Measuring the Effects of Non-Identical Data
    Distribution for Federated Visual Classification", 2019)."""
    _check_enough(len(labels), num_clients, "dirichlet")
    if over == "clients":
        return _dirichlet_over_clients(labels, num_clients, rng, alpha)
    owner = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):  # one draw per class, vectorized over its samples
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = np.floor(np.cumsum(shares)[:-1] * len(members) + 0.5).astype(np.int64)
        owner[members] = np.repeat(np.arange(num_clients), np.diff(np.r_[0, cuts, len(members)]))
    return _fill_empty(owner, num_clients, rng)


def _dirichlet_over_clients(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, alpha: float
) -> list[np.ndarray]:
    """Hsu et al.'s clients: equal sizes, class proportions q_k ~ Dir(alpha p), drawn client
    by client from the samples still unassigned. Once a class runs out, a client's draws go
    to the classes left in proportion to q_k (to what is left, where q_k puts no weight
    there): every sample is used once."""
    classes, counts = np.unique(labels, return_counts=True)
    prior = counts / counts.sum()
    sizes = np.full(num_clients, len(labels) // num_clients, dtype=np.int64)
    sizes[: len(labels) % num_clients] += 1
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    left = counts.astype(np.int64).copy()
    taken = np.zeros(len(classes), dtype=np.int64)
    parts = []
    for k in range(num_clients):
        q = rng.dirichlet(alpha * prior)
        got = np.zeros(len(classes), dtype=np.int64)
        need = int(sizes[k])
        while need > 0:
            weights = np.where(left > 0, q, 0.0)
            if not weights.sum() > 0:  # all its weight on used-up classes (or underflow)
                weights = left.astype(np.float64)
            draw = np.minimum(rng.multinomial(need, weights / weights.sum()), left)
            got += draw
            left -= draw
            need -= int(draw.sum())
        parts.append(
            np.sort(
                np.concatenate(
                    [pools[c][taken[c] : taken[c] + got[c]] for c in range(len(classes))]
                )
            )
        )
        taken += got
    return parts


def _fill_empty(owner: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Give every empty client one sample from the currently largest client (deterministic)."""
    counts = np.bincount(owner, minlength=num_clients)
    for k in np.flatnonzero(counts == 0):
        donor = int(np.argmax(counts))
        pick = rng.choice(np.flatnonzero(owner == donor))
        owner[pick] = k
        counts[donor] -= 1
        counts[k] += 1
    order = np.argsort(owner, kind="stable")
    return np.split(order, np.cumsum(counts)[:-1])


@PARTITIONERS.register(
    "shard",
    params=(Param("per_client", int, 2, "shards (label-sorted blocks) per client", low=1),),
    summary="Pathological non-IID: label-sorted shards, per_client shards each",
    paper="McMahan et al., Communication-Efficient Learning of Deep Networks, AISTATS 2017",
    cost="O(n log n)",
)
def shard(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    groups: Any = None,
    *,
    per_client: int,
) -> list[np.ndarray]:
    """Sort by label, cut into num_clients * per_client shards, deal per_client to each client."""
    num_shards = num_clients * per_client
    if len(labels) < num_shards:
        raise SpecError(
            f"partition 'shard': {len(labels)} training samples cannot make {num_shards} shards "
            f"({num_clients} clients x per_client={per_client})"
        )
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    shards = np.array_split(order, num_shards)
    dealt = rng.permutation(num_shards).reshape(num_clients, per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])) for row in dealt]


@PARTITIONERS.register(
    "natural",
    summary="The dataset's own clients (e.g. synthetic's per-client distributions)",
    cost="O(n)",
)
def natural(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, groups: Any = None
) -> list[np.ndarray]:
    """One client per natural group of the dataset."""
    if groups is None:
        raise SpecError(
            "partition 'natural' needs a dataset with its own clients (e.g. 'synthetic')"
        )
    found = int(groups.max()) + 1
    if found != num_clients:
        raise SpecError(
            f"partition 'natural': dataset has {found} clients, num_clients={num_clients}"
        )
    # One stable sort instead of a scan per client: each client's indices come out ascending.
    counts = np.bincount(groups, minlength=num_clients)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise SpecError(f"partition 'natural': client {int(empty[0])} has no training samples")
    order = np.argsort(groups, kind="stable")
    return np.split(order, np.cumsum(counts)[:-1])


def partition(
    spec: str | Mapping[str, Any],
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Resolve ``spec`` (e.g. ``"dirichlet:alpha=0.3"``) and partition the training labels."""
    entry, params = PARTITIONERS.resolve(spec)
    return entry.obj(labels, num_clients, rng, groups, **params)
