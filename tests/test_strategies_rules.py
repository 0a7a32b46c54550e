"""Per-rule checks against small cases computed by hand from each paper's definition."""

from __future__ import annotations

import numpy as np
import pytest

from velocity.errors import RunError
from velocity.strategies import aggregate, build_strategy
from velocity.strategies.aggregators import _arkrum_estimate_f, bulyan_select, krum_scores
from velocity.strategies.pre_aggregators import bucketing, clip, nnm


def column(*values: float) -> np.ndarray:
    """Points on a line as an (n, 1) update matrix."""
    return np.asarray(values, dtype=np.float32)[:, None]


def test_mean_is_sample_weighted() -> None:
    updates = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    np.testing.assert_array_equal(aggregate("mean", updates, [1.0, 3.0]), [2.5, 3.5])
    np.testing.assert_array_equal(aggregate("mean", updates), [2.0, 3.0])


def test_mean_of_many_clients_is_accurate_to_a_few_ulps() -> None:
    rng = np.random.default_rng(0)
    updates = (1000.0 + rng.normal(size=(300, 64))).astype(np.float32)
    weights = rng.integers(1, 100, size=300).astype(np.float64)
    exact = (weights / weights.sum()) @ updates.astype(np.float64)
    got = aggregate("mean", updates, weights)
    ulp = np.spacing(np.float32(1000.0))
    assert np.max(np.abs(got - exact)) <= 4 * ulp


def test_median_odd_and_even() -> None:
    np.testing.assert_array_equal(aggregate("median", column(5, 1, 9)), [5.0])
    np.testing.assert_array_equal(aggregate("median", column(5, 1, 9, 2)), [3.5])


def test_trimmed_mean_drops_k_at_each_end() -> None:
    updates = column(1, 2, 3, 100)
    np.testing.assert_array_equal(aggregate("trimmed_mean:k=1", updates), [2.5])
    # beta = 0.25 on n = 4 gives k = floor(1.0) = 1.
    np.testing.assert_array_equal(aggregate("trimmed_mean:beta=0.25", updates), [2.5])
    np.testing.assert_array_equal(aggregate("trimmed_mean:k=0", updates), [26.5])


def test_trimmed_mean_needs_two_k_below_n() -> None:
    with pytest.raises(RunError, match=r"trimmed_mean: needs 2k < n, got k=2, n=4"):
        aggregate("trimmed_mean:k=2", column(1, 2, 3, 4))


def test_krum_hand_computed() -> None:
    # n = 5, f = 1: each score sums the 2 nearest squared distances.
    # scores: 0 -> 1+4 = 5, 1 -> 1+1 = 2, 2 -> 1+1 = 2, 3 -> 1+4 = 5, 100 -> 97^2+98^2.
    updates = column(0, 1, 2, 3, 100)
    dist = (updates - updates.T) ** 2
    np.testing.assert_array_equal(krum_scores(dist.astype(np.float64), 1)[:4], [5, 2, 2, 5])
    # Tie between clients 1 and 2: the lowest index wins.
    np.testing.assert_array_equal(aggregate("krum:f=1", updates), [1.0])


def test_multi_krum_hand_computed() -> None:
    updates = column(0, 1, 2, 3, 100)
    np.testing.assert_array_equal(aggregate("multi_krum:f=1,m=2", updates), [1.5])
    # default m = n - f = 4: clients 1, 2, 0, 3.
    np.testing.assert_array_equal(aggregate("multi_krum:f=1", updates), [1.5])


def test_krum_family_precondition_names_the_rule_and_values() -> None:
    updates = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(RunError, match=r"krum: needs n >= 2f\+3 clients per round, got n=5, f=2"):
        aggregate("krum:f=2", updates)
    with pytest.raises(RunError, match=r"multi_krum: needs n >= 2f\+3"):
        aggregate("multi_krum:f=2", updates)
    with pytest.raises(RunError, match=r"bulyan: needs n >= 4f\+3 clients per round, got n=5"):
        aggregate("bulyan:f=1", updates)


def test_bulyan_hand_computed() -> None:
    # n = 7, f = 1: theta = 5 selected by repeated Krum (ties -> lowest index), beta = 3.
    # Step 1 (4 neighbours): 2 and 3 tie at 10 -> 2. Step 2 (3): 3 scores 9 -> 3. Step 3 (2):
    # 1 and 4 tie at 10 -> 1. Step 4 (1): 4 and 5 tie at 1 -> 4. Step 5 (0): all 0 -> 0.
    updates = column(0, 1, 2, 3, 4, 5, 100)
    dist = ((updates - updates.T) ** 2).astype(np.float64)
    np.testing.assert_array_equal(bulyan_select(dist, 1), [2, 3, 1, 4, 0])
    # Selected values 0..4, median 2, the 3 closest are 1, 2, 3.
    np.testing.assert_array_equal(aggregate("bulyan:f=1", updates), [2.0])


def test_bulyan_window_prefers_the_closer_side() -> None:
    # f = 1, n = 7, all selected values: 0, 1, 5, 6, 6.5 ... check the window logic directly on a
    # case where the closest beta values are not centred: theta = 5 values 0, 4, 5, 5.5, 9.
    updates = column(0, 4, 5, 5.5, 9, 50, 60)
    out = aggregate("bulyan:f=1", updates)
    dist = ((updates - updates.T) ** 2).astype(np.float64)
    chosen = np.sort(updates[bulyan_select(dist, 1), 0])
    med = np.median(chosen)
    closest = chosen[np.argsort(np.abs(chosen - med), kind="stable")[:3]]
    np.testing.assert_allclose(out, [closest.mean()], rtol=1e-6)


def test_geometric_median_of_three_collinear_points_is_the_middle_one() -> None:
    updates = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    out = aggregate("geometric_median:max_iter=2000,tol=0,eps=1e-9", updates)
    np.testing.assert_allclose(out, [1.0, 0.0], atol=1e-3)


def test_geometric_median_is_sample_weighted() -> None:
    updates = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    out = aggregate("geometric_median:max_iter=2000,tol=0,eps=1e-9", updates, [1.0, 1.0, 5.0])
    np.testing.assert_allclose(out, [10.0, 0.0], atol=1e-3)


def test_geometric_median_lowers_the_weiszfeld_objective_below_the_mean() -> None:
    rng = np.random.default_rng(0)
    updates = rng.standard_cauchy(size=(15, 8)).astype(np.float32)

    def objective(z: np.ndarray) -> float:
        return float(np.linalg.norm(updates.astype(np.float64) - z, axis=1).sum())

    gm = aggregate("geometric_median", updates)
    assert objective(gm) < objective(updates.mean(axis=0))
    # Optimality: the sum of unit vectors towards the points is (nearly) zero.
    diff = updates.astype(np.float64) - gm
    pull = (diff / np.linalg.norm(diff, axis=1, keepdims=True)).sum(axis=0)
    assert np.linalg.norm(pull) < 1e-2


def test_arkrum_estimates_f_and_averages_the_honest_updates() -> None:
    rng = np.random.default_rng(1)
    honest = rng.normal(0.0, 0.1, size=(9, 30))
    outliers = rng.normal(50.0, 0.1, size=(3, 30))
    updates = np.concatenate([honest, outliers]).astype(np.float32)
    dist = ((updates[:, None].astype(np.float64) - updates[None]) ** 2).sum(-1)
    assert _arkrum_estimate_f(dist) == 3
    np.testing.assert_allclose(aggregate("arkrum", updates), honest.mean(axis=0), atol=1e-5)


def test_arkrum_without_outliers_estimates_zero() -> None:
    updates = np.random.default_rng(2).normal(size=(9, 40)).astype(np.float32)
    dist = ((updates[:, None].astype(np.float64) - updates[None]) ** 2).sum(-1)
    assert _arkrum_estimate_f(dist) == 0


def test_centered_clipping_hand_computed_over_two_rounds() -> None:
    updates = np.array([[3.0, 0.0], [0.0, 0.5]], dtype=np.float32)
    strategy = build_strategy("centered_clipping:tau=1,iters=1")
    weights = np.ones(2)
    # Round 1 centred on 0: (3,0) is clipped to (1,0); v = ((1,0) + (0,0.5)) / 2.
    first = strategy.aggregate(updates, weights, 1)
    np.testing.assert_allclose(first, [0.5, 0.25], rtol=1e-6)
    # Round 2 centred on the previous aggregate.
    v = np.array([0.5, 0.25])
    diff = updates.astype(np.float64) - v
    scale = np.minimum(1.0, 1.0 / np.linalg.norm(diff, axis=1))
    expected = v + (diff * scale[:, None]).mean(axis=0)
    np.testing.assert_allclose(strategy.aggregate(updates, weights, 2), expected, rtol=1e-6)
    fresh = build_strategy("centered_clipping:tau=1")
    np.testing.assert_allclose(fresh.aggregate(updates, weights, 1), first)


def test_centered_clipping_converges_to_the_honest_mean_over_rounds() -> None:
    rng = np.random.default_rng(3)
    honest = rng.normal(1.0, 0.05, size=(10, 16)).astype(np.float32)
    updates = np.concatenate([honest, np.full((2, 16), 1e5, dtype=np.float32)])
    strategy = build_strategy("centered_clipping:tau=0.5,iters=3")
    for r in range(1, 40):
        out = strategy.aggregate(updates, np.ones(12), r)
    # At the fixed point the 10 unclipped honest pulls balance the 2 outliers' pulls of norm tau,
    # so the centre sits within 2 * tau / 10 of the honest mean.
    assert np.linalg.norm(out - honest.mean(axis=0)) < 2 * 0.5 / 10 + 1e-3


def test_dnc_removes_the_outliers_along_the_top_singular_direction() -> None:
    rng = np.random.default_rng(4)
    honest = rng.normal(0.0, 1.0, size=(10, 200))
    direction = rng.normal(size=200)
    outliers = honest[:2] + 20.0 * direction
    updates = np.concatenate([honest, outliers]).astype(np.float32)
    out = aggregate("dnc:f=2,sub_dim=100,iters=3", updates, seed=5)
    np.testing.assert_allclose(out, honest.mean(axis=0), atol=1e-5)


def test_dnc_fails_clearly_when_nothing_can_survive() -> None:
    with pytest.raises(RunError, match=r"dnc: needs c\*f < n"):
        aggregate("dnc:f=3", np.zeros((3, 4), dtype=np.float32))


def test_nnm_hand_computed() -> None:
    # f = 1: each point becomes the mean of its 3 nearest (itself included).
    mixed, weights = nnm(column(0, 1, 2, 10), np.array([1.0, 2, 3, 4]), f=1)
    np.testing.assert_allclose(mixed[:, 0], [1.0, 1.0, 1.0, 13.0 / 3.0], rtol=1e-6)
    np.testing.assert_array_equal(weights, [1, 2, 3, 4])
    with pytest.raises(RunError, match=r"nnm: needs n >= 2f\+1"):
        nnm(column(0, 1, 2), np.ones(3), f=2)


def test_clip_scales_only_long_updates() -> None:
    out, _ = clip(np.array([[3.0, 4.0], [0.3, 0.4]], dtype=np.float32), np.ones(2), max_norm=1.0)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)


def test_bucketing_then_mean_equals_the_weighted_mean() -> None:
    rng = np.random.default_rng(6)
    updates = rng.normal(size=(7, 5)).astype(np.float32)
    weights = rng.integers(1, 9, size=7).astype(np.float64)
    buckets, bucket_weights = bucketing(updates, weights, s=2, rng=np.random.default_rng(0))
    assert buckets.shape == (4, 5)
    np.testing.assert_allclose(bucket_weights.sum(), weights.sum())
    via_buckets = (bucket_weights / bucket_weights.sum()) @ buckets
    np.testing.assert_allclose(via_buckets, aggregate("mean", updates, weights), rtol=1e-5)
    # Every bucket mean is the weighted mean of s consecutive clients of one permutation.
    order = np.random.default_rng(0).permutation(7)
    first = order[:2]
    expected = (weights[first] / weights[first].sum()) @ updates[first]
    np.testing.assert_allclose(buckets[0], expected, rtol=1e-6)


def test_pre_aggregators_chain_before_the_aggregator() -> None:
    updates = column(0, 1, 2, 10)
    # nnm (f=1) gives 1, 1, 1, 13/3; the median of those is 1.
    np.testing.assert_allclose(aggregate("nnm:f=1 > median", updates), [1.0])
