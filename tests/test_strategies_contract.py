"""Contract checks run over every registry entry (aggregators, pre-aggregators): inputs untouched,
shapes and dtypes, permutation invariance, identical updates, robustness, seed determinism."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from velocity.registry import Entry
from velocity.strategies import AGGREGATORS, PRE_AGGREGATORS, SERVER_OPTIMIZERS
from velocity.testing import check_aggregator, check_pre_aggregator

ALL_AGGREGATORS = list(AGGREGATORS)
ALL_PRE = list(PRE_AGGREGATORS)
# Rules that must resist f far-off outliers in one shot, with the parameters that say so.
ROBUST_PARAMS: dict[str, dict[str, Any]] = {
    "median": {},
    "trimmed_mean": {"k": 2},
    "krum": {"f": 2},
    "multi_krum": {"f": 2},
    "bulyan": {"f": 2},
    "geometric_median": {},
    "arkrum": {},
    "dnc": {"f": 2},
}
# Aggregates of a subset of the honest updates stay within their bounding box.
WITHIN_BOX = set(ROBUST_PARAMS) - {"geometric_median"}


def call(entry: Entry[Any], updates: np.ndarray, weights: np.ndarray, **params: Any) -> Any:
    """Call a registered stage the way a Strategy does (fresh rng and state)."""
    if entry.extra.get("seeded"):
        params["rng"] = np.random.default_rng(123)
    if entry.extra.get("stateful"):
        params["state"] = {}
    return entry.obj(updates, weights, **{**entry.defaults(), **params})


def sample(n: int = 11, d: int = 37, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    updates = rng.normal(0.3, 1.0, size=(n, d)).astype(np.float32)
    weights = rng.integers(1, 50, size=n).astype(np.float64)
    return updates, weights


def ids(entry: Entry[Any]) -> str:
    return entry.name


def test_every_family_is_populated_and_names_are_unique_across_families() -> None:
    names = [e.name for r in (AGGREGATORS, PRE_AGGREGATORS, SERVER_OPTIMIZERS) for e in r]
    assert len(names) == len(set(names))
    assert {"mean", "median", "trimmed_mean", "krum", "multi_krum", "bulyan"} <= set(names)
    assert {"geometric_median", "arkrum", "centered_clipping", "dnc"} <= set(names)
    assert {"nnm", "clip", "bucketing", "sgd", "momentum", "adam", "yogi", "adagrad"} <= set(names)


@pytest.mark.parametrize("entry", [*ALL_AGGREGATORS, *ALL_PRE, *SERVER_OPTIMIZERS], ids=ids)
def test_entry_is_documented_and_default_constructible(entry: Entry[Any]) -> None:
    assert entry.summary and entry.paper and entry.cost.startswith("O(")
    for registry in (AGGREGATORS, PRE_AGGREGATORS, SERVER_OPTIMIZERS):
        if entry.name in registry:
            assert registry.canonical(entry.name)["type"] == entry.name


@pytest.mark.parametrize("entry", ALL_AGGREGATORS, ids=ids)
def test_every_aggregator_passes_the_public_contract(entry: Entry[Any]) -> None:
    check_aggregator(entry)


@pytest.mark.parametrize("entry", ALL_PRE, ids=ids)
def test_every_pre_aggregator_passes_the_public_contract(entry: Entry[Any]) -> None:
    check_pre_aggregator(entry)


def test_symmetry_is_declared_where_the_papers_say_order_matters() -> None:
    # Bulyan's last Krum selections tie and the lowest index wins; bucketing shuffles by design.
    assert {e.name for e in ALL_AGGREGATORS if not e.extra["symmetric"]} == {"bulyan"}
    assert {e.name for e in ALL_PRE if not e.extra["symmetric"]} == {"bucketing"}


@pytest.mark.parametrize("entry", ALL_AGGREGATORS, ids=ids)
def test_identical_updates_aggregate_to_that_update(entry: Entry[Any]) -> None:
    row = np.random.default_rng(3).normal(size=29).astype(np.float32)
    updates = np.tile(row, (9, 1))
    weights = np.arange(1.0, 10.0)
    params = {"tau": 1e6} if entry.name == "centered_clipping" else {}
    np.testing.assert_allclose(call(entry, updates, weights, **params), row, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("entry", [e for e in ALL_PRE if e.name != "clip"], ids=ids)
def test_identical_updates_survive_pre_aggregation(entry: Entry[Any]) -> None:
    row = np.random.default_rng(4).normal(size=13).astype(np.float32)
    out, _ = call(entry, np.tile(row, (7, 1)), np.ones(7))
    np.testing.assert_allclose(out, np.tile(row, (out.shape[0], 1)), rtol=1e-6)


def honest_and_outliers(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    honest = rng.normal(0.5, 0.1, size=(11, 20)).astype(np.float32)
    outliers = rng.normal(1e4, 1.0, size=(2, 20)).astype(np.float32)
    updates = np.concatenate([honest[:5], outliers[:1], honest[5:], outliers[1:]])
    return updates, np.ones(len(updates)), honest


@pytest.mark.parametrize("name", sorted(ROBUST_PARAMS))
def test_robust_rules_resist_far_outliers(name: str) -> None:
    updates, weights, honest = honest_and_outliers()
    out = call(AGGREGATORS.get(name), updates, weights, **ROBUST_PARAMS[name])
    center = honest.mean(axis=0)
    radius = np.linalg.norm(honest - center, axis=1).max()
    assert np.linalg.norm(out - center) <= radius * (1 + 1e-5)
    if name in WITHIN_BOX:
        assert np.all(out >= honest.min(axis=0) - 1e-6)
        assert np.all(out <= honest.max(axis=0) + 1e-6)


def honest_and_non_finite(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # A diverged client (+inf everywhere) and one with NaN in every third coordinate.
    rng = np.random.default_rng(1)
    honest = rng.normal(0.5, 0.1, size=(11, d)).astype(np.float32)
    diverged = np.full((1, d), np.inf, dtype=np.float32)
    partly_nan = honest[:1].copy()
    partly_nan[0, ::3] = np.nan
    updates = np.concatenate([honest[:5], diverged, honest[5:], partly_nan])
    return updates, np.ones(len(updates)), honest


# 20 columns take the direct float64 distances, 30,000 the Gram matrix (n^2 d > 4M).
@pytest.mark.parametrize("d", [20, 30_000])
@pytest.mark.parametrize("name", sorted(ROBUST_PARAMS))
def test_robust_rules_ignore_non_finite_updates(name: str, d: int) -> None:
    # A non-finite update is infinitely far from the others, never NaN-compared: Krum would
    # otherwise pick the NaN score (argmin returns NaN first) and the spectral and Weiszfeld
    # iterations would turn NaN as a whole.
    updates, weights, honest = honest_and_non_finite(d)
    with np.errstate(invalid="ignore", over="ignore"):  # as in runs (simulation.py)
        out = call(AGGREGATORS.get(name), updates, weights, **ROBUST_PARAMS[name])
    assert np.isfinite(out).all()
    center = honest.mean(axis=0)
    assert np.linalg.norm(out - center) <= np.linalg.norm(honest - center, axis=1).max()
    if name in WITHIN_BOX:
        assert np.all((out >= honest.min(axis=0) - 1e-6) & (out <= honest.max(axis=0) + 1e-6))


@pytest.mark.parametrize("d", [20, 30_000])
def test_centered_clipping_and_nnm_ignore_non_finite_updates(d: int) -> None:
    from velocity.strategies import aggregate

    updates, _, honest = honest_and_non_finite(d)
    with np.errstate(invalid="ignore", over="ignore"):
        assert np.isfinite(aggregate("centered_clipping", updates)).all()
        mixed, _ = call(PRE_AGGREGATORS.get("nnm"), updates, np.ones(len(updates)), f=2)
        out = aggregate("nnm:f=2 > krum:f=2", updates)
    # Honest rows mix only honest neighbours; only the non-finite clients' own rows stay so.
    assert np.isfinite(mixed).all(axis=1).sum() == len(honest)
    assert np.all((out >= honest.min(axis=0) - 1e-6) & (out <= honest.max(axis=0) + 1e-6))


def test_the_mean_is_not_robust_so_the_robustness_check_can_fail() -> None:
    updates, weights, honest = honest_and_outliers()
    out = call(AGGREGATORS.get("mean"), updates, weights)
    radius = np.linalg.norm(honest - honest.mean(axis=0), axis=1).max()
    assert np.linalg.norm(out - honest.mean(axis=0)) > radius


@pytest.mark.parametrize(
    "entry", [e for e in [*ALL_AGGREGATORS, *ALL_PRE] if e.extra.get("seeded")], ids=ids
)
def test_seeded_stages_depend_on_their_seed(entry: Entry[Any]) -> None:
    updates, weights = sample(n=12, d=300)
    params = {"sub_dim": 50} if entry.name == "dnc" else {}

    def run(seed: int) -> Any:
        return entry.obj(
            updates, weights, rng=np.random.default_rng(seed), **{**entry.defaults(), **params}
        )

    first = run(7)
    other = run(8)
    if isinstance(first, tuple):
        assert not np.array_equal(first[0], other[0])
    else:
        np.testing.assert_array_equal(first, run(7))
