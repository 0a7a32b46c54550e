"""Numeric kernels of the aggregation rules: accurate weighted sums, pairwise distances and
column-wise order statistics of an ``(n, d)`` float32 update matrix, in cache-sized blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

__all__ = [
    "SortedBlock",
    "column_sums",
    "columnwise",
    "combine",
    "gram",
    "pairwise_sq_distances",
    "squared_distances",
    "weighted_mean",
]

# Clients per float32 BLAS accumulation group in `combine`: the rounding error of a group grows
# with its length, so long sums are cut into groups whose partial sums are added in float64.
_GROUP = 16
# Columns per block for the combine/gram kernels (large enough for BLAS, small enough for cache).
_COMBINE_BLOCK = 1 << 16
# Up to this many rows a sorting network of vectorised min/max beats sorting each column.
_NETWORK_MAX_ROWS = 40
# Columns per transposed block when a subset of the rows is gathered (see `columnwise`).
_GATHER_BLOCK = 4096


def combine(updates: np.ndarray, coeffs: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``sum_i coeffs[i] * updates[rows[i]]`` as float32 ``(d,)``.

    float32 products are accumulated by BLAS in groups of at most 16 clients (FMA, one rounding per
    client) and the group sums added in float64, so the error stays a few ulps whatever ``n``.
    ``rows`` selects (and orders) the rows to combine without copying the whole matrix.
    """
    coeffs32 = np.asarray(coeffs, dtype=np.float64).astype(np.float32)
    count = coeffs32.shape[0]
    d = updates.shape[1]
    if rows is None and count <= _GROUP:
        out: np.ndarray = np.dot(coeffs32, updates)
        return out
    groups = [slice(g, min(g + _GROUP, count)) for g in range(0, count, _GROUP)]
    if rows is None:
        # Whole-width BLAS calls; the partial sums take 1/16 of the input's memory.
        partial_rows = np.empty((len(groups), d), dtype=np.float32)
        for q, group in enumerate(groups):
            np.dot(coeffs32[group], updates[group], out=partial_rows[q])
        summed: np.ndarray = partial_rows.sum(axis=0, dtype=np.float64).astype(np.float32)
        return summed
    block = min(_COMBINE_BLOCK, d) or 1
    out = np.empty(d, dtype=np.float32)
    partial = np.empty((len(groups), block), dtype=np.float32)
    for start in range(0, d, block):
        width = min(block, d - start)
        source = updates[:, start : start + width]
        if rows is not None:
            # Fancy indexing of a block is far faster than np.take(..., out=) here.
            source = source[rows]
        for q, group in enumerate(groups):
            np.dot(coeffs32[group], source[group], out=partial[q, :width])
        if len(groups) == 1:
            out[start : start + width] = partial[0, :width]
        else:
            out[start : start + width] = partial[:, :width].sum(axis=0, dtype=np.float64)
    return out


def weighted_mean(
    updates: np.ndarray, weights: np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """Weighted mean of the rows (or of ``rows``) of ``updates``; see :func:`combine`."""
    w = np.asarray(weights, dtype=np.float64)
    return combine(updates, w / w.sum(), rows)


def _gram_block(rows: int) -> int:
    # ~2 MiB of float32 per block: big enough for an efficient SYRK, small enough for L2/L3.
    return int(max(1024, min(1 << 16, (1 << 19) // max(rows, 1))))


# Rows whose coordinate-wise (lower) median centres each Gram block (evenly spaced over the rows):
# the centre stays among the honest values while fewer than half of these rows are far off.
_CENTER_ROWS = 11
# Up to this many n*n*d multiply-adds, pairwise distances are computed directly in float64.
_DIRECT_DISTANCES = 1 << 22


def _center_rows(n: int) -> np.ndarray | None:
    if n <= _CENTER_ROWS:
        return None
    return np.unique(np.linspace(0, n - 1, _CENTER_ROWS).round().astype(np.intp))


def gram(updates: np.ndarray, extra_row: np.ndarray | None = None) -> np.ndarray:
    """Gram matrix (float64, ``(m, m)``) of the rows, for distances and affine combinations.

    Distances come out as ``|x|^2 + |y|^2 - 2 x.y``, whose float32 rounding error scales with the
    squared norms, not with the distance. So the plain Gram matrix is kept only when the rows'
    typical squared norm is at most ``_RAW_GRAM_RATIO`` times their typical squared distance
    (then translating the rows could shrink that error by a small factor at most); otherwise,
    as for updates sharing a large common component, the Gram matrix of the translated rows is
    computed (see :func:`_centred_gram`). Both "typical" values are medians over the rows, so a
    minority of far-off or identical (Byzantine) rows cannot tip the choice. Translating changes
    neither distances nor affine combinations. ``extra_row`` (``(d,)``) is appended as row n.
    """
    g = _raw_gram(updates, extra_row)
    if _raw_gram_is_accurate(g):
        return g
    return _centred_gram(updates, extra_row)


# Largest ratio of typical squared norm to typical squared distance for which the plain Gram
# matrix is kept (its distance error is then within ~8x of the best translation's).
_RAW_GRAM_RATIO = 4.0


def _raw_gram_is_accurate(g: np.ndarray) -> bool:
    m = g.shape[0]
    if m < 2:
        return True
    # Each row's distances sorted, its zero self-distance first and dropped. Undefined
    # distances and norms (non-finite rows) count as +inf, so a minority of them leaves the
    # medians to the finite rows.
    others = np.sort(squared_distances(g), axis=1)[:, 1:]
    typical_distance = float(np.median(np.median(others, axis=1)))
    norms = np.diag(g)
    typical_norm = float(np.median(np.where(np.isnan(norms), np.inf, norms)))
    return typical_norm <= _RAW_GRAM_RATIO * typical_distance


def _raw_gram(updates: np.ndarray, extra_row: np.ndarray | None) -> np.ndarray:
    # Per column block: one float32 SYRK straight on the block's view (no copy), and for the
    # extra row a matrix-vector product; block products summed in float64.
    n, d = updates.shape
    m = n + (extra_row is not None)
    block = _gram_block(m)
    out = np.zeros((m, m), dtype=np.float64)
    for start in range(0, d, block):
        source = updates[:, start : start + block]
        out[:n, :n] += source @ source.T
        if extra_row is not None:
            extra = extra_row[start : start + block]
            cross = source @ extra
            out[:n, n] += cross
            out[n, :n] += cross
            out[n, n] += float(np.dot(extra, extra))
    return out


def _centred_gram(updates: np.ndarray, extra_row: np.ndarray | None) -> np.ndarray:
    """Gram matrix of the rows translated per column block by a robust centre.

    The centre is the coordinate-wise lower median of up to 11 evenly spaced rows: it removes
    the common component that makes ``|x|^2 + |y|^2 - 2 x.y`` inaccurate, and a median (not a
    mean) keeps far-off Byzantine rows from dragging it away from the honest ones.
    """
    n, d = updates.shape
    m = n + (extra_row is not None)
    block = _gram_block(m)
    out = np.zeros((m, m), dtype=np.float64)
    buffer = np.empty((m, min(block, d) or 1), dtype=np.float32)
    sample = _center_rows(n)
    lower = ((n if sample is None else len(sample)) - 1) // 2

    def lower_median(sorted_block: SortedBlock, out_block: np.ndarray) -> None:
        out_block[...] = sorted_block.row(lower)

    for start in range(0, d, block):
        width = min(block, d - start)
        source = updates[:, start : start + width]
        part = buffer[:, :width]
        center = columnwise(source, lower_median, wanted=(lower,), rows=sample)
        np.subtract(source, center, out=part[:n])
        if extra_row is not None:
            np.subtract(extra_row[start : start + width], center, out=part[n])
        out += part @ part.T
    return out


def squared_distances(g: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances from a Gram matrix (float64, zero diagonal, >= 0;
    +inf where undefined, see :func:`pairwise_sq_distances`)."""
    diag = np.diag(g)
    dist = diag[:, None] + diag[None, :] - 2.0 * g
    np.maximum(dist, 0.0, out=dist)
    return _undefined_is_infinite(dist)


def _undefined_is_infinite(dist: np.ndarray) -> np.ndarray:
    dist[np.isnan(dist)] = np.inf
    np.fill_diagonal(dist, 0.0)
    return dist


def pairwise_sq_distances(updates: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances (float64 ``(n, n)``, zero diagonal).

    Small problems are computed directly from float64 differences (exact ties stay exact); large
    ones through :func:`gram`. A distance involving a non-finite update (inf or NaN anywhere, or
    one whose float32 squared norm overflows) is +inf, never NaN: such an update is infinitely
    far from every finite one, so distance-based rules rank it last instead of comparing NaN.
    """
    n, d = updates.shape
    if n * n * d <= _DIRECT_DISTANCES:
        rows = updates.astype(np.float64)
        diff = rows[:, None, :] - rows[None, :, :]
        return _undefined_is_infinite(np.einsum("ijk,ijk->ij", diff, diff))
    return squared_distances(gram(updates))


# --- column-wise order statistics -------------------------------------------------------------


@lru_cache(maxsize=256)
def _sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort for ``n`` wires (padded to a power of two, pads dropped).

    Dropping comparators that touch a padding wire is exact: padding acts as +inf on the top
    wires, which a comparator would never move.
    """
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple((a, b) for a, b in pairs if b < n)


@lru_cache(maxsize=256)
def _selection_network(n: int, wanted: tuple[int, ...]) -> tuple[tuple[int, int, bool, bool], ...]:
    """The sorting network pruned to what the ``wanted`` output positions depend on.

    Walking backwards, a comparator is kept when one of its outputs is needed; a comparator whose
    max (or min) output is never read only computes the other half.
    """
    needed = set(wanted)
    kept: list[tuple[int, int, bool, bool]] = []
    for low, high in reversed(_sorting_network(n)):
        need_min, need_max = low in needed, high in needed
        if need_min or need_max:
            kept.append((low, high, need_min, need_max))
            needed.update((low, high))
    return tuple(reversed(kept))


def column_sums(values: np.ndarray) -> np.ndarray:
    """Sum over axis 0 of a ``(k, width)`` array (float64 ``(width,)``).

    When each column is contiguous (views of a transposed block), one float32 BLAS
    matrix-vector product: a numpy reduction along such short columns pays its per-row overhead
    once per column. Otherwise a float64 sum down the rows.
    """
    if values.shape[0] > 1 and values.strides[0] == values.itemsize:
        ones = np.ones(values.shape[0], dtype=values.dtype)
        return np.asarray(values.T @ ones, dtype=np.float64)
    total: np.ndarray = values.sum(axis=0, dtype=np.float64)
    return total


class SortedBlock:
    """One column block of the matrix with each column sorted along the client axis.

    ``row(k)`` is the k-th smallest value of every column of the block (``(width,)``);
    ``span(lo, hi)`` the order statistics ``lo..hi-1`` as a ``(hi - lo, width)`` array;
    ``sum_rows`` and ``window_sum`` add order statistics per column. Only the positions asked for
    by the caller (``wanted``) are guaranteed. Sums over the transposed layout (each column's
    values contiguous) go through :func:`column_sums`.
    """

    def __init__(self, views: Sequence[np.ndarray], slots: list[int] | None, transposed: bool):
        self._views = views
        self._slots = slots
        self._transposed = transposed

    def row(self, k: int) -> np.ndarray:
        if self._transposed:
            return self._views[0][:, k]
        assert self._slots is not None
        return self._views[self._slots[k]]

    def span(self, lo: int, hi: int) -> np.ndarray:
        if self._transposed:
            return self._views[0][:, lo:hi].T
        if hi <= lo:
            return np.empty((0, self.row(0).shape[0]), dtype=self.row(0).dtype)
        return np.stack([self.row(k) for k in range(lo, hi)])

    def sum_rows(self, lo: int, hi: int) -> np.ndarray:
        """Per column, the sum of the order statistics ``lo..hi-1`` (float64 ``(width,)``)."""
        if self._transposed:
            return column_sums(self.span(lo, hi))
        total = np.zeros(self.row(0).shape[0])
        for k in range(lo, hi):
            total += self.row(k)
        return total

    def window_sum(self, start: np.ndarray, length: int) -> np.ndarray:
        """Per column ``j``, the sum of the order statistics ``start[j] .. start[j]+length-1``."""
        offsets = np.arange(length)
        if self._transposed:
            part = np.take_along_axis(self._views[0], start[:, None] + offsets, axis=1)
            return column_sums(part.T)
        stacked = self.span(0, int(start.max()) + length)
        window = np.take_along_axis(stacked, start[None, :] + offsets[:, None], axis=0)
        total: np.ndarray = window.sum(axis=0, dtype=np.float64)
        return total


def _block_width(rows: int) -> int:
    return int(max(2048, min(1 << 15, (1 << 20) // max(rows, 1))))


def _runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """``rows`` as maximal runs of consecutive indices: ``(first, stop, position in rows)``."""
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate(([0], breaks)).astype(np.intp)
    stops = np.concatenate((breaks, [len(rows)])).astype(np.intp)
    return [
        (int(rows[a]), int(rows[a]) + int(b - a), int(a))
        for a, b in zip(starts, stops, strict=True)
    ]


def columnwise(
    updates: np.ndarray,
    reduce: Callable[[SortedBlock, np.ndarray], None],
    wanted: Sequence[int] | None = None,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Apply ``reduce(sorted_block, out_block)`` over cache-sized column blocks; returns ``(d,)``.

    For few rows the block is sorted by a (pruned) sorting network of vectorised min/max over
    whole rows, for many rows by sorting the transposed block along its contiguous axis. ``rows``
    restricts the computation to those rows of ``updates``.
    """
    n_all, d = updates.shape
    count = n_all if rows is None else len(rows)
    positions = tuple(range(count)) if wanted is None else tuple(sorted(set(wanted)))
    out = np.empty(d, dtype=np.float32)
    width = _block_width(count)
    if count <= _NETWORK_MAX_ROWS:
        network = _selection_network(count, positions)
        buffer = np.empty((count + 1, min(width, d) or 1), dtype=np.float32)
        for start in range(0, d, width):
            w = min(width, d - start)
            source = updates[:, start : start + w]
            buffer[:count, :w] = source if rows is None else source[rows]
            views = [buffer[i, :w] for i in range(count + 1)]
            slots = list(range(count))
            spare = count
            for low, high, need_min, need_max in network:
                a, b = views[slots[low]], views[slots[high]]
                if need_min and need_max:
                    np.minimum(a, b, out=views[spare])
                    np.maximum(a, b, out=b)
                    slots[low], spare = spare, slots[low]
                elif need_min:
                    np.minimum(a, b, out=a)
                else:
                    np.maximum(a, b, out=b)
            reduce(SortedBlock(views, slots, transposed=False), out[start : start + w])
            # min/max spread a NaN to every wanted output of its column; those columns are redone
            # by a sort, which orders NaN above +inf like the transposed path below.
            spoiled = np.flatnonzero(np.isnan(out[start : start + w]))
            if spoiled.size:
                picked = source[:, spoiled] if rows is None else source[rows][:, spoiled]
                redone = np.empty(spoiled.size, dtype=np.float32)
                reduce(SortedBlock([np.sort(picked.T, axis=1)], None, True), redone)
                out[start + spoiled] = redone
    else:
        # The chosen rows go straight into the transposed block, one transposing copy per run
        # of consecutive rows (a fancy-indexed copy of the rows would add a pass over them).
        runs = _runs(np.arange(n_all) if rows is None else np.asarray(rows))
        if len(runs) > 1:
            # Narrower blocks stay in L2 while many strided runs are written.
            width = min(width, _GATHER_BLOCK)
        transposed = np.empty((min(width, d) or 1, count), dtype=np.float32)
        for start in range(0, d, width):
            w = min(width, d - start)
            block = transposed[:w]
            for first, stop, at in runs:
                block[:, at : at + stop - first] = updates[first:stop, start : start + w].T
            block.sort(axis=1)
            reduce(SortedBlock([block], None, transposed=True), out[start : start + w])
    return out
