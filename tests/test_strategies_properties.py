"""Property tests (hypothesis): kernels against brute-force references from the definitions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from velocity.strategies import AGGREGATORS, aggregate
from velocity.strategies._kernels import _sorting_network, gram, pairwise_sq_distances

VALUES = st.floats(-1e3, 1e3, allow_nan=False, width=32)


def matrices(min_rows: int = 1, max_rows: int = 60, max_cols: int = 7) -> Any:
    shape = st.tuples(st.integers(min_rows, max_rows), st.integers(1, max_cols))
    return shape.flatmap(lambda s: arrays(np.float32, s, elements=VALUES))


@pytest.mark.parametrize("n", range(1, 17))
def test_sorting_network_sorts_every_zero_one_input(n: int) -> None:
    # 0-1 principle: a comparator network sorts everything iff it sorts all 0/1 inputs.
    wires = ((np.arange(2**n)[None, :] >> np.arange(n)[:, None]) & 1).astype(np.int8)
    for low, high in _sorting_network(n):
        wires[low], wires[high] = (
            np.minimum(wires[low], wires[high]),
            np.maximum(wires[low], wires[high]),
        )
    assert np.all(np.diff(wires, axis=0) >= 0)


@settings(max_examples=60, deadline=None)
@given(matrices())
def test_median_matches_numpy(updates: np.ndarray) -> None:
    expected = np.median(updates.astype(np.float64), axis=0).astype(np.float32)
    np.testing.assert_array_equal(aggregate("median", updates), expected)


@settings(max_examples=60, deadline=None)
@given(matrices(), st.data())
def test_trimmed_mean_matches_its_definition(updates: np.ndarray, data: Any) -> None:
    n = updates.shape[0]
    k = data.draw(st.integers(0, (n - 1) // 2))
    kept = np.sort(updates.astype(np.float64), axis=0)[k : n - k]
    # Above 40 clients the kept values are summed in float32 by BLAS: a few ulps of their mean
    # magnitude (16 covers the bound for <= 100 values in SIMD lanes), then the float32 result.
    tolerance = 1e-4 + 16 * np.finfo(np.float32).eps * np.abs(kept).mean(axis=0)
    got = aggregate(f"trimmed_mean:k={k}", updates)
    assert np.all(np.abs(got - kept.mean(axis=0)) <= tolerance)


SPECIAL = st.sampled_from([float("nan"), float("inf"), float("-inf")])


@settings(max_examples=60, deadline=None)
@given(
    st.tuples(st.integers(1, 60), st.integers(1, 5)).flatmap(
        lambda s: arrays(np.float32, s, elements=st.one_of(VALUES, VALUES, SPECIAL))
    ),
    st.data(),
)
def test_order_statistics_order_nan_above_inf(updates: np.ndarray, data: Any) -> None:
    # Both paths (sorting network up to 40 rows, transposed sort above) must order values like
    # np.sort: NaN above +inf. min/max networks would spread a NaN to the whole column instead.
    n = updates.shape[0]
    ordered = np.sort(updates.astype(np.float64), axis=0)
    lo, hi = (n - 1) // 2, n // 2
    with np.errstate(invalid="ignore"):
        expected_median = ((ordered[lo] + ordered[hi]) * 0.5).astype(np.float32)
        np.testing.assert_array_equal(aggregate("median", updates), expected_median)
        k = data.draw(st.integers(0, (n - 1) // 2))
        kept = ordered[k : n - k]
        expected = kept.mean(axis=0)
        got = aggregate(f"trimmed_mean:k={k}", updates).astype(np.float64)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(got[~finite], expected[~finite])
    tolerance = 1e-4 + 16 * np.finfo(np.float32).eps * np.abs(kept[:, finite]).mean(axis=0)
    assert np.all(np.abs(got[finite] - expected[finite]) <= tolerance)


@settings(max_examples=60, deadline=None)
@given(matrices(), st.data())
def test_mean_matches_float64_reference(updates: np.ndarray, data: Any) -> None:
    n = updates.shape[0]
    weights = np.asarray(data.draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n)), float)
    expected = (weights / weights.sum()) @ updates.astype(np.float64)
    np.testing.assert_allclose(aggregate("mean", updates, weights), expected, atol=1e-3, rtol=1e-6)


def naive_krum_scores(updates: np.ndarray, f: int) -> np.ndarray:
    x = updates.astype(np.float64)
    n = len(x)
    scores = []
    for i in range(n):
        others = sorted(float(((x[i] - x[j]) ** 2).sum()) for j in range(n) if j != i)
        scores.append(sum(others[: n - f - 2]))
    return np.asarray(scores)


@settings(max_examples=40, deadline=None)
@given(matrices(min_rows=5, max_rows=14), st.data())
def test_krum_and_multi_krum_match_brute_force(updates: np.ndarray, data: Any) -> None:
    n = updates.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 2))
    scores = naive_krum_scores(updates, f)
    winners = np.flatnonzero(np.isclose(scores, scores.min(), rtol=1e-9, atol=1e-6))
    out = aggregate(f"krum:f={f}", updates)
    assert any(np.array_equal(out, updates[w]) for w in winners)
    if len(winners) == 1 and np.unique(scores).size == n:
        m = data.draw(st.integers(1, n))
        chosen = np.argsort(scores)[:m]
        expected = updates[chosen].astype(np.float64).mean(axis=0)
        got = aggregate(f"multi_krum:f={f},m={m}", updates)
        np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(matrices(min_rows=2, max_rows=12), st.floats(-1e3, 1e3, allow_nan=False))
def test_translation_equivariance(updates: np.ndarray, shift: float) -> None:
    # Every aggregator except centred clipping (anchored at its state) commutes with translation.
    shift32 = np.float32(shift)
    n = updates.shape[0]
    for entry in AGGREGATORS:
        if entry.name == "centered_clipping":
            continue
        params: dict[str, Any] = {}
        if "f" in entry.defaults():
            params["f"] = 0
        if (entry.name == "bulyan" and n < 3) or (entry.name in ("krum", "multi_krum") and n < 3):
            continue
        if entry.name == "arkrum" and n < 3:
            continue
        spec = {"type": entry.name, **params}
        a = aggregate(spec, updates) + shift32
        b = aggregate(spec, updates + shift32)
        scale = 1e-4 * (1 + np.abs(updates).max() + abs(shift))
        np.testing.assert_allclose(a, b, atol=scale * 10)


def test_gram_distances_stay_accurate_with_far_outliers() -> None:
    # Enough columns for the Gram path; outliers 1e5 away must not blur honest distances.
    rng = np.random.default_rng(0)
    honest = rng.normal(0.0, 0.01, size=(10, 50_000))
    outliers = np.full((2, 50_000), 1e5)
    updates = np.concatenate([honest, outliers]).astype(np.float32)
    x = updates.astype(np.float64)
    exact = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    approx = pairwise_sq_distances(updates)
    np.testing.assert_allclose(approx[:10, :10], exact[:10, :10], rtol=1e-4)
    g = gram(updates)
    diag = np.diag(g)
    from_gram = diag[:, None] + diag[None, :] - 2 * g
    np.testing.assert_allclose(from_gram[:10, :10], exact[:10, :10], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("n", "f"), [(7, 1), (12, 2), (45, 10), (62, 14), (60, 5), (100, 1), (100, 24)]
)
def test_bulyan_coordinate_stage_matches_its_definition(n: int, f: int) -> None:
    # theta = n - 2f selected rows: <= 40 takes the small-n path; 50 and 98 the sorted-block
    # path (beta > 2f); (100, 24) the sorted path where no position is in every window (2f > beta).
    from velocity.strategies.aggregators import bulyan_select

    rng = np.random.default_rng(n + f)
    updates = rng.standard_cauchy(size=(n, 300)).astype(np.float32)
    chosen = bulyan_select(pairwise_sq_distances(updates), f)
    values = np.sort(updates[chosen].astype(np.float64), axis=0)
    beta = len(chosen) - 2 * f
    median = np.median(values, axis=0)
    expected = [
        values[np.argsort(np.abs(values[:, j] - median[j]), kind="stable")[:beta], j].mean()
        for j in range(values.shape[1])
    ]
    np.testing.assert_allclose(aggregate(f"bulyan:f={f}", updates), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("n", "f"), [(12, 2), (16, 3), (100, 1), (100, 24)])
def test_bulyan_window_keeps_its_precision_when_far_off_values_are_excluded(n: int, f: int) -> None:
    # Colluding attackers (identical rows) win Krum's selection; their +-1e30 coordinates lie
    # outside every window, so summing "all minus excluded" would cancel the window to zero.
    rng = np.random.default_rng(n)
    honest = 1.0 + rng.random((n - f, 40), dtype=np.float32)
    byzantine = np.tile(np.where(np.arange(40) % 2 == 0, 1e30, -1e30), (f, 1))
    updates = np.concatenate([byzantine, honest]).astype(np.float32)
    from velocity.strategies.aggregators import bulyan_select

    chosen = bulyan_select(pairwise_sq_distances(updates), f)
    values = updates[chosen].astype(np.float64)
    beta = len(chosen) - 2 * f
    median = np.median(values, axis=0)
    expected = [
        values[np.argsort(np.abs(values[:, j] - median[j]), kind="stable")[:beta], j].mean()
        for j in range(values.shape[1])
    ]
    got = aggregate(f"bulyan:f={f}", updates)
    assert np.all((got >= 1.0) & (got <= 2.0))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(matrices(min_rows=41, max_rows=70), st.data())
def test_columnwise_on_a_subset_of_rows_sorts_exactly_those_rows(
    updates: np.ndarray, data: Any
) -> None:
    # Many rows take the transposed path, which copies the chosen rows in runs of consecutive
    # indices; any subset in any order must give the same sorted columns.
    from velocity.strategies._kernels import SortedBlock, columnwise

    n = updates.shape[0]
    rows = np.asarray(data.draw(st.permutations(range(n))))[: data.draw(st.integers(41, n))]
    if data.draw(st.booleans()):
        rows = np.sort(rows)
    expected = np.sort(updates[rows], axis=0)
    for k in (0, len(rows) // 2, len(rows) - 1):

        def pick(block: SortedBlock, out: np.ndarray, k: int = k) -> None:
            out[...] = block.row(k)

        np.testing.assert_array_equal(columnwise(updates, pick, rows=rows), expected[k])


@pytest.mark.parametrize("outliers", [(0, 9), (0, 4, 9), (1, 3, 5, 7)])
def test_gram_centre_survives_outliers_at_any_rows(outliers: tuple[int, ...]) -> None:
    # With n <= 11 the centre is the median of every row, so any minority of far-off rows, even
    # at the first, middle and last positions, leaves the honest distances accurate.
    rng = np.random.default_rng(1)
    updates = (5.0 + rng.normal(0.0, 0.01, size=(10, 50_000))).astype(np.float32)
    updates[list(outliers)] = 1e5
    honest = np.setdiff1d(np.arange(10), outliers)
    x = updates[honest].astype(np.float64)
    exact = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    approx = pairwise_sq_distances(updates)[np.ix_(honest, honest)]
    np.testing.assert_allclose(approx, exact, rtol=1e-3)


def test_gram_translates_only_updates_sharing_a_large_common_component(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from velocity.strategies import _kernels

    calls: list[int] = []
    centred = _kernels._centred_gram

    def spy(updates: np.ndarray, extra_row: np.ndarray | None) -> np.ndarray:
        calls.append(updates.shape[0])
        return centred(updates, extra_row)

    monkeypatch.setattr(_kernels, "_centred_gram", spy)
    rng = np.random.default_rng(2)
    spread = rng.normal(0.0, 1.0, size=(12, 50_000)).astype(np.float32)
    gram(spread)
    assert calls == []
    gram(spread + np.float32(3.0))
    assert calls == [12]


def test_gram_choice_is_not_tipped_by_a_far_off_minority() -> None:
    # 4 of 10 rows far off inflate every mean distance; the honest rows share a large common
    # component, so only translating keeps their distances. Medians over rows see the honest.
    rng = np.random.default_rng(3)
    updates = (5.0 + rng.normal(0.0, 0.01, size=(10, 50_000))).astype(np.float32)
    updates[[1, 4, 6, 8]] += np.float32(1e3)
    honest = np.array([0, 2, 3, 5, 7, 9])
    x = updates[honest].astype(np.float64)
    exact = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    approx = pairwise_sq_distances(updates)[np.ix_(honest, honest)]
    np.testing.assert_allclose(approx, exact, rtol=1e-3)
