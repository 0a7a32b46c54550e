"""Pre-aggregators: pure functions ``(updates (n, d), weights (n,)) -> (updates', weights')`` run
before the aggregator (nearest-neighbour mixing, clipping, bucketing). They never modify inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from velocity.errors import RunError
from velocity.registry import Param, Registry
from velocity.strategies._kernels import pairwise_sq_distances

__all__ = ["PRE_AGGREGATORS", "PreAggregator", "bucketing", "clip", "nnm", "pre_aggregator"]

PreAggregator = Callable[..., tuple[np.ndarray, np.ndarray]]
"""``(updates (n, d) float32, weights (n,), **params) -> (updates' (m, d) float32, weights'
(m,))`` with the total weight kept; never modifies its inputs."""

PRE_AGGREGATORS: Registry[PreAggregator] = Registry("pre-aggregator")


def pre_aggregator(
    name: str,
    *,
    params: tuple[Param, ...] = (),
    summary: str,
    paper: str = "",
    cost: str = "",
    aliases: tuple[str, ...] = (),
    symmetric: bool = True,
    seeded: bool = False,
    stateful: bool = False,
) -> Callable[[PreAggregator], PreAggregator]:
    """Register a pre-aggregation stage (see :data:`PreAggregator`); ``symmetric``: reordering
    the clients reorders its output rows the same way (the contract checks test it)."""
    extra: dict[str, Any] = {"symmetric": symmetric, "seeded": seeded, "stateful": stateful}
    return PRE_AGGREGATORS.register(
        name, params=params, summary=summary, paper=paper, cost=cost, aliases=aliases, **extra
    )


def _mix(updates: np.ndarray, mixing: np.ndarray) -> np.ndarray:
    # Each output row is a convex combination of the input rows: one float32 GEMM. A non-finite
    # row must reach only the outputs that mix it in (in the GEMM, 0 * inf = NaN would reach all),
    # so a non-finite output (checked on the output, which bucketing makes smaller than the input)
    # sends the mix down the careful path.
    out: np.ndarray = mixing.astype(np.float32) @ updates
    if np.isfinite(out).all():
        return out
    finite = np.isfinite(updates).all(axis=1)
    out = mixing[:, finite].astype(np.float32) @ updates[finite]
    for row in np.flatnonzero(~finite):
        users = np.flatnonzero(mixing[:, row])
        out[users] += mixing[users, row].astype(np.float32)[:, None] * updates[row]
    return out


@pre_aggregator(
    "nnm",
    params=(Param("f", int, 1, "number of Byzantine clients tolerated", low=0),),
    summary="Nearest-neighbour mixing: replace each update by the mean of its n-f nearest "
    "updates (itself included).",
    paper="Allouah et al., AISTATS 2023",
    cost="O(n^2 d)",
)
def nnm(updates: np.ndarray, weights: np.ndarray, *, f: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour mixing (unweighted, as in the paper); weights pass through."""
    n = updates.shape[0]
    if n < 2 * f + 1:
        raise RunError(f"nnm: needs n >= 2f+1 clients per round, got n={n}, f={f}")
    dist = pairwise_sq_distances(updates)
    # Sort each row by (distance, self first, index) so ties resolve the same way every time.
    dist[np.diag_indices(n)] = -1.0
    neighbours = np.argsort(dist, axis=1, kind="stable")[:, : n - f]
    mixing = np.zeros((n, n))
    np.put_along_axis(mixing, neighbours, 1.0 / (n - f), axis=1)
    return _mix(updates, mixing), np.asarray(weights, dtype=np.float64).copy()


@pre_aggregator(
    "clip",
    params=(
        Param("max_norm", float, 1.0, "largest L2 norm an update keeps", low=0.0, low_open=True),
    ),
    summary="Static norm clipping: scale each update down to at most max_norm.",
    paper="e.g. Sun et al., 'Can you really backdoor FL?', 2019",
    cost="O(n d)",
)
def clip(
    updates: np.ndarray, weights: np.ndarray, *, max_norm: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``x * min(1, max_norm / |x|)`` per row; rows already within the norm are unchanged."""
    norms = np.sqrt(np.einsum("ij,ij->i", updates, updates).astype(np.float64))
    scale = np.minimum(1.0, max_norm / np.maximum(norms, np.finfo(np.float64).tiny))
    out = updates * scale.astype(np.float32)[:, None]
    return out.astype(np.float32, copy=False), np.asarray(weights, dtype=np.float64).copy()


@pre_aggregator(
    "bucketing",
    params=(Param("s", int, 2, "bucket size", low=1),),
    summary="Shuffle the updates (seeded) and replace them by the means of buckets of s.",
    symmetric=False,
    paper="Karimireddy et al., ICLR 2022",
    cost="O(n d)",
    seeded=True,
)
def bucketing(
    updates: np.ndarray,
    weights: np.ndarray,
    *,
    s: int = 2,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """ceil(n/s) buckets of consecutive shuffled updates; each bucket's sample-weighted mean,
    weighted by the bucket's total sample count."""
    n = updates.shape[0]
    rng = np.random.default_rng(0) if rng is None else rng
    order = rng.permutation(n)
    w = np.asarray(weights, dtype=np.float64)
    buckets = -(-n // s)
    bucket_of = np.arange(n) // s
    weighted = np.zeros((buckets, n))
    weighted[bucket_of, order] = w[order]
    members = np.zeros((buckets, n))
    members[bucket_of, order] = 1.0
    # A bucket whose clients all have zero weight falls back to their plain mean.
    empty = weighted.sum(axis=1) <= 0
    mixing = np.where(empty[:, None], members, weighted)
    mixing /= mixing.sum(axis=1, keepdims=True)
    new_weights = np.bincount(bucket_of, weights=w[order], minlength=buckets)
    return _mix(updates, mixing), new_weights
