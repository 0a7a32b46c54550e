"""Aggregators: pure functions ``(updates (n, d) float32, weights (n,)) -> (d,) float32``.

They never modify their inputs. Each is registered in ``AGGREGATORS`` with its parameters, paper
and per-round cost; ``velocity strategies`` lists them and docs/strategies.md gives the semantics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from velocity.errors import RunError, SpecError
from velocity.registry import Param, Registry
from velocity.strategies._kernels import (
    SortedBlock,
    column_sums,
    columnwise,
    combine,
    gram,
    pairwise_sq_distances,
    weighted_mean,
)

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "aggregator",
    "arkrum",
    "bulyan",
    "centered_clipping",
    "dnc",
    "geometric_median",
    "krum",
    "krum_scores",
    "mean",
    "median",
    "multi_krum",
    "trimmed_mean",
]

Aggregator = Callable[..., np.ndarray]
"""``(updates (n, d) float32, weights (n,) float64, **params) -> (d,) float32``; never modifies
its inputs. A ``seeded`` rule also gets ``rng`` (a Generator from the run's seed tree), a
``stateful`` one ``state`` (a dict kept across the run's rounds)."""

AGGREGATORS: Registry[Aggregator] = Registry("aggregator")


def aggregator(
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
    normalize: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
) -> Callable[[Aggregator], Aggregator]:
    """Register an aggregation rule (see :data:`Aggregator`) under ``name``.

    ``params`` declare its keyword parameters (validated where a spec meets the registry);
    ``symmetric`` says its output ignores the order of the clients (the contract checks test
    it); ``normalize`` rewrites validated parameters into one canonical form. The built-in
    rules register through this same decorator.
    """
    return AGGREGATORS.register(
        name,
        params=params,
        summary=summary,
        paper=paper,
        cost=cost,
        aliases=aliases,
        symmetric=symmetric,
        seeded=seeded,
        stateful=stateful,
        normalize=normalize,
    )


_F = Param("f", int, 1, "number of Byzantine clients tolerated", low=0)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise RunError(message)


@aggregator(
    "mean",
    summary="Sample-weighted mean (FedAvg).",
    paper="McMahan et al., AISTATS 2017",
    cost="O(n d)",
    aliases=("avg", "average"),
)
def mean(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sample-weighted mean of the rows of ``updates``."""
    return weighted_mean(updates, weights)


@aggregator(
    "median",
    summary="Coordinate-wise median (even n: mean of the two middle values), unweighted.",
    paper="Yin et al., ICML 2018",
    cost="O(n log^2 n d) (sorting network) / O(n log n d)",
)
def median(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Coordinate-wise median."""
    n = updates.shape[0]
    lo, hi = (n - 1) // 2, n // 2

    def reduce(block: SortedBlock, out: np.ndarray) -> None:
        if lo == hi:
            out[...] = block.row(lo)
        else:
            # The midpoint in float64 is exact, so the result is the correctly rounded median.
            out[...] = np.add(block.row(lo), block.row(hi), dtype=np.float64) * 0.5

    return columnwise(updates, reduce, wanted=(lo, hi))


def _normalize_trimmed_mean(params: dict[str, Any]) -> dict[str, Any]:
    k, beta = params.get("k"), params.get("beta")
    if k is not None and beta is not None:
        raise SpecError(
            f"aggregator 'trimmed_mean': give either 'k' or 'beta', not both (got k={k}, "
            f"beta={beta})"
        )
    if k is None and beta is None:
        return {**params, "beta": 0.1}
    return params


@aggregator(
    "trimmed_mean",
    params=(
        Param("k", int, None, "values dropped at each end per coordinate", low=0, nullable=True),
        Param(
            "beta",
            float,
            None,
            "fraction dropped at each end: k = floor(beta * n) (default 0.1 when k is not given)",
            low=0.0,
            high=0.5,
            high_open=True,
            nullable=True,
        ),
    ),
    summary="Coordinate-wise trimmed mean: drop the k smallest and k largest, average the rest.",
    paper="Yin et al., ICML 2018",
    cost="O(n log^2 n d) (sorting network) / O(n log n d)",
    normalize=_normalize_trimmed_mean,
)
def trimmed_mean(
    updates: np.ndarray, weights: np.ndarray, *, k: int | None = None, beta: float | None = None
) -> np.ndarray:
    """Coordinate-wise trimmed mean (unweighted)."""
    n = updates.shape[0]
    # The epsilon keeps decimal fractions exact: 0.29 * 100 is 28.999999999999996 in binary.
    trim = k if k is not None else int(np.floor((0.1 if beta is None else beta) * n + 1e-9))
    _require(2 * trim < n, f"trimmed_mean: needs 2k < n, got k={trim}, n={n}")
    keep = n - 2 * trim

    def reduce(block: SortedBlock, out: np.ndarray) -> None:
        out[...] = block.sum_rows(trim, n - trim) / keep

    return columnwise(updates, reduce, wanted=range(trim, n - trim))


def krum_scores(dist: np.ndarray, f: int) -> np.ndarray:
    """Krum score of each point of a squared-distance matrix: the sum of its distances to its
    ``n - f - 2`` nearest other points, in ascending order (RunError when that is fewer than 1).
    Used by Krum, Multi-Krum, ArKrum and by Fang's attack on Krum, so all agree on ties."""
    n = dist.shape[0]
    neighbours = n - f - 2
    _require(neighbours >= 1, f"Krum scores need n - f - 2 >= 1 neighbours, got n={n}, f={f}")
    others = dist + np.diag(np.full(n, np.inf))
    scores: np.ndarray = np.sort(others, axis=1)[:, :neighbours].sum(axis=1)
    return scores


def _krum_distances(updates: np.ndarray, f: int, rule: str) -> np.ndarray:
    n = updates.shape[0]
    _require(n >= 2 * f + 3, f"{rule}: needs n >= 2f+3 clients per round, got n={n}, f={f}")
    return pairwise_sq_distances(updates)


@aggregator(
    "krum",
    params=(_F,),
    summary="The update with the lowest Krum score (sum of squared distances to its n-f-2 "
    "nearest); ties: lowest index.",
    paper="Blanchard et al., NeurIPS 2017",
    cost="O(n^2 d)",
)
def krum(updates: np.ndarray, weights: np.ndarray, *, f: int = 1) -> np.ndarray:
    """Krum: the single most central update."""
    scores = krum_scores(_krum_distances(updates, f, "krum"), f)
    out: np.ndarray = updates[int(np.argmin(scores))].copy()
    return out


@aggregator(
    "multi_krum",
    params=(
        _F,
        Param("m", int, None, "updates averaged (default n - f)", low=1, nullable=True),
    ),
    summary="Unweighted mean of the m updates with the lowest Krum scores.",
    paper="Blanchard et al., NeurIPS 2017",
    cost="O(n^2 d)",
)
def multi_krum(
    updates: np.ndarray, weights: np.ndarray, *, f: int = 1, m: int | None = None
) -> np.ndarray:
    """Multi-Krum."""
    n = updates.shape[0]
    count = n - f if m is None else m
    _require(count <= n, f"multi_krum: needs m <= n, got m={count}, n={n}")
    scores = krum_scores(_krum_distances(updates, f, "multi_krum"), f)
    chosen = np.sort(np.argsort(scores, kind="stable")[:count])
    left_out = np.setdiff1d(np.arange(n), chosen, assume_unique=True)
    if left_out.size <= count and all(np.isfinite(updates[i]).all() for i in left_out):
        # A zero weight on each left-out row reads the matrix once in place (no gathered copy
        # of the chosen rows); only non-finite rows (0 * inf = nan) must be skipped instead.
        coeffs = np.zeros(n)
        coeffs[chosen] = 1.0 / count
        return combine(updates, coeffs)
    return combine(updates, np.full(count, 1.0 / count), rows=chosen)


def bulyan_select(dist: np.ndarray, f: int) -> np.ndarray:
    """Indices of the ``n - 2f`` updates Bulyan selects by repeated Krum (in selection order)."""
    n = dist.shape[0]
    # Each row's distances to the other points (column j of row i is point j + (j >= i)), sorted
    # once; removing a point then deletes its row and its entry in every other row, which keeps
    # each row sorted and all rows of equal length, so a step costs O(r^2) on the r remaining
    # points with no cumulative sums. (Dropping the self-distance by sorting it last as +inf
    # would fail when other distances are +inf too: non-finite updates.)
    index = np.arange(n)
    columns = index[None, : n - 1] + (index[None, : n - 1] >= index[:, None])
    others = np.take_along_axis(dist, columns, axis=1)
    ranking = np.argsort(others, axis=1, kind="stable")
    order = np.take_along_axis(columns, ranking, axis=1)
    sorted_dist = np.take_along_axis(others, ranking, axis=1)
    remaining = list(range(n))
    chosen = []
    for _ in range(n - 2 * f):
        r = len(remaining)
        scores = sorted_dist[:, : max(r - f - 2, 0)].sum(axis=1)
        # Each step is plain Krum on the remaining set, ties to the lowest index as Krum's
        # contract says (``remaining`` stays in ascending order, so argmin's first is lowest).
        position = int(np.argmin(scores))
        winner = remaining.pop(position)
        chosen.append(winner)
        if r == 1:
            break
        # One boolean mask drops the winner's row and its entry in every other row.
        kept = order != winner
        kept[position] = False
        order = order[kept].reshape(r - 1, r - 2)
        sorted_dist = sorted_dist[kept].reshape(r - 1, r - 2)
    return np.asarray(chosen, dtype=np.intp)


@aggregator(
    "bulyan",
    params=(_F,),
    summary="Select n-2f updates by repeated Krum, then per coordinate average the n-4f values "
    "closest to the median.",
    paper="El Mhamdi et al., ICML 2018",
    cost="O(n^2 d)",
    # Its last Krum selections have |R| - f - 2 <= 0 neighbours: every score ties and the
    # lowest-index rule decides, so the output depends on client order by definition.
    symmetric=False,
)
def bulyan(updates: np.ndarray, weights: np.ndarray, *, f: int = 1) -> np.ndarray:
    """Bulyan over Krum."""
    n = updates.shape[0]
    _require(n >= 4 * f + 3, f"bulyan: needs n >= 4f+3 clients per round, got n={n}, f={f}")
    chosen = np.sort(bulyan_select(pairwise_sq_distances(updates), f))
    theta = n - 2 * f
    beta = theta - 2 * f

    edge = theta - beta
    lo, hi = (theta - 1) // 2, theta // 2

    def reduce(block: SortedBlock, out: np.ndarray) -> None:
        # The beta values closest to the median form a window [s, s + beta) of the sorted values.
        # Sliding it one step right pays off exactly while the value entering is closer to the
        # median than the one leaving (x_s + x_{s+beta} < 2 median), a condition that holds for a
        # prefix of s (both terms grow with s); ties keep the lower window. Only the window's own
        # values are summed: a total minus the excluded values would lose the window to
        # cancellation when a far-off (Byzantine) value is excluded.
        twice_median = np.add(block.row(lo), block.row(hi), dtype=np.float64)
        if edge <= beta:
            # Every window holds the positions edge..beta-1; of each end pair (x_s, x_{s+beta}),
            # s < edge, it holds x_{s+beta} when it slid past s, else x_s (a loop over the pairs
            # measured faster than the same on (edge, width) arrays).
            total = block.sum_rows(edge, beta)
            for s in range(edge):
                low, high = block.row(s), block.row(s + beta)
                slid = np.add(low, high, dtype=np.float64) < twice_median
                total += np.where(slid, high, low)
        else:
            pairs = np.add(block.span(0, edge), block.span(beta, theta), dtype=np.float64)
            start = column_sums((pairs < twice_median).astype(np.float32)).astype(np.intp)
            total = block.window_sum(start, beta)
        out[...] = total / beta

    return columnwise(updates, reduce, rows=chosen)


def _weiszfeld_distances(g: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    # |x_i - z|^2 for z = sum_j c_j x_j (sum c = 1), from the Gram matrix alone.
    gc = g @ coeffs
    sq = np.diag(g) - 2.0 * gc + coeffs @ gc
    out: np.ndarray = np.sqrt(np.maximum(sq, 0.0))
    return out


@aggregator(
    "geometric_median",
    params=(
        Param(
            "eps", float, 1e-6, "smoothing nu: distances are floored at eps", low=0.0, low_open=True
        ),
        Param("max_iter", int, 100, "Weiszfeld iterations at most", low=1),
        Param("tol", float, 1e-6, "stop when the relative objective change is below tol", low=0.0),
    ),
    summary="Sample-weighted geometric median by smoothed Weiszfeld (RFA), from the weighted mean.",
    paper="Pillutla et al., IEEE TSP 2022",
    cost="O(n^2 d + iters n^2)",
    aliases=("rfa", "geomed"),
)
def geometric_median(
    updates: np.ndarray,
    weights: np.ndarray,
    *,
    eps: float = 1e-6,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> np.ndarray:
    """Smoothed Weiszfeld iterations, run on the coefficients of the convex combination.

    Every iterate is a convex combination of the updates, so distances come from the Gram matrix
    and only the final combination touches the ``(n, d)`` matrix again.
    """
    alpha = np.asarray(weights, dtype=np.float64)
    alpha = alpha / alpha.sum()
    g = gram(updates)
    rows = _finite_rows(g, updates.shape[0])
    if rows is not None:
        # Non-finite updates are infinitely far from every iterate: their Weiszfeld weight is 0.
        g = g[np.ix_(rows, rows)]
        alpha = alpha[rows]
        alpha = alpha / alpha.sum() if alpha.sum() > 0 else np.full(rows.size, 1.0 / rows.size)
    coeffs = alpha
    dist = _weiszfeld_distances(g, coeffs)
    objective = float(alpha @ dist)
    for _ in range(max_iter):
        beta = alpha / np.maximum(dist, eps)
        coeffs = beta / beta.sum()
        dist = _weiszfeld_distances(g, coeffs)
        previous, objective = objective, float(alpha @ dist)
        if abs(previous - objective) <= tol * objective:
            break
    return combine(updates, coeffs, rows=rows)


def _finite_rows(g: np.ndarray, count: int) -> np.ndarray | None:
    """Indices of the first ``count`` rows whose squared norm (Gram diagonal) is finite, or None
    when all are (or none is: then there is nothing finite to fall back to)."""
    finite = np.isfinite(np.diag(g)[:count])
    if finite.all() or not finite.any():
        return None
    return np.flatnonzero(finite)


def _arkrum_estimate_f(dist: np.ndarray) -> int:
    n = dist.shape[0]
    others = np.sort(dist + np.diag(np.full(n, np.inf)), axis=1)[:, : n - 1]
    mid = others[:, (n - 1) // 2]
    threshold = 2.0 * mid - others[:, 0]
    outliers = np.count_nonzero(others > threshold[:, None], axis=1)
    return int(min(np.floor(np.median(outliers)), (n - 3) // 2))


@aggregator(
    "arkrum",
    summary="Parameter-free Krum: estimates f each round by median-based filtering, then averages "
    "the n-f updates closest to the Krum winner.",
    paper="Yang & Imam, arXiv:2505.17226 (2025)",
    cost="O(n^2 d)",
)
def arkrum(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ArKrum (see docs/strategies.md for the exact reading of the paper implemented here)."""
    n = updates.shape[0]
    _require(n >= 3, f"arkrum: needs n >= 3 clients per round, got n={n}")
    dist = pairwise_sq_distances(updates)
    f = _arkrum_estimate_f(dist)
    winner = int(np.argmin(krum_scores(dist, f)))
    closest = np.sort(np.argsort(dist[winner], kind="stable")[: n - f])
    return combine(updates, np.full(n - f, 1.0 / (n - f)), rows=closest)


@aggregator(
    "centered_clipping",
    params=(
        Param("tau", float, 10.0, "clipping radius around the centre", low=0.0, low_open=True),
        Param("iters", int, 1, "clipping iterations per round", low=1),
    ),
    summary="Iterative clipping centred on the previous round's aggregate (state per run).",
    paper="Karimireddy et al., ICML 2021",
    cost="O(n^2 d)",
    stateful=True,
    aliases=("cc",),
)
def centered_clipping(
    updates: np.ndarray,
    weights: np.ndarray,
    *,
    tau: float = 10.0,
    iters: int = 1,
    state: dict[str, Any] | None = None,
) -> np.ndarray:
    """``v <- v + mean_i (x_i - v) min(1, tau / |x_i - v|)``, ``iters`` times, from the last ``v``.

    The iterate stays an affine combination of the previous centre and the updates, so it is
    tracked as coefficients over their Gram matrix and formed once at the end.
    """
    n, d = updates.shape
    state = {} if state is None else state
    center = state.get("center")
    if center is None or center.shape != (d,):
        center = np.zeros(d, dtype=np.float32)
    g = gram(updates, extra_row=center)
    rows = _finite_rows(g, n)
    if rows is not None:
        # A non-finite update has no direction to clip along: it contributes nothing (scale 0).
        kept = np.append(rows, n)
        g = g[np.ix_(kept, kept)]
    k = g.shape[0] - 1
    coeffs = np.zeros(k + 1)
    coeffs[k] = 1.0
    for _ in range(iters):
        dist = _weiszfeld_distances(g, coeffs)[:k]
        # Only updates farther than tau are scaled; dividing only there avoids 1/0 overflow.
        scale = np.divide(tau, dist, out=np.ones_like(dist), where=dist > tau)
        coeffs *= 1.0 - scale.sum() / n
        coeffs[:k] += scale / n
    result = combine(updates, coeffs[:k], rows=rows)
    if coeffs[k] != 0.0:
        result = (result + np.float32(coeffs[k]) * center).astype(np.float32)
    state["center"] = result.copy()
    return result


@aggregator(
    "dnc",
    params=(
        _F,
        Param("sub_dim", int, 10000, "coordinates sampled per iteration", low=1),
        Param("iters", int, 5, "random subsamplings", low=1),
        Param("filter_frac", float, 1.0, "c: each iteration removes c*f updates", low=0.0),
    ),
    summary="Divide-and-Conquer: remove the updates most aligned with the top singular direction "
    "of random coordinate subsets; mean of the survivors.",
    paper="Shejwalkar & Houmansadr, NDSS 2021",
    cost="O(n d + iters (n^2 b + n^3))",
    seeded=True,
)
def dnc(
    updates: np.ndarray,
    weights: np.ndarray,
    *,
    f: int = 1,
    sub_dim: int = 10000,
    iters: int = 5,
    filter_frac: float = 1.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """DnC: spectral outlier scores on random coordinate subsets, intersection of the kept sets."""
    n, d = updates.shape
    removed = int(np.floor(filter_frac * f))
    _require(removed < n, f"dnc: needs c*f < n, got c*f={removed}, n={n}")
    rng = np.random.default_rng(0) if rng is None else rng
    # Non-finite updates cannot be scored (they would turn the centring mean into NaN): they are
    # removed up front and the spectral filter runs on the others.
    finite = np.isfinite(updates).all(axis=1)
    candidates = np.flatnonzero(finite) if finite.any() else np.arange(n)
    m = candidates.size
    good = np.ones(m, dtype=bool)
    width = min(sub_dim, d)
    for _ in range(iters):
        columns = np.sort(rng.choice(d, size=width, replace=False))
        block = updates[:, columns] if m == n else updates[np.ix_(candidates, columns)]
        sub = block.astype(np.float64)
        sub -= sub.mean(axis=0)
        eigenvalues, eigenvectors = np.linalg.eigh(sub @ sub.T)
        # (x_i - mu) . v for the top right singular vector v equals sigma * u_i.
        scores = eigenvalues[-1] * eigenvectors[:, -1] ** 2
        kept = np.zeros(m, dtype=bool)
        kept[np.argsort(scores, kind="stable")[: max(m - removed, 0)]] = True
        good &= kept
    survivors = candidates[good]
    _require(
        survivors.size > 0,
        f"dnc: no update survived {iters} iterations removing {removed} each (n={n})",
    )
    return combine(updates, np.full(survivors.size, 1.0 / survivors.size), rows=survivors)
