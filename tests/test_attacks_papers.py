"""Per-attack checks against small cases computed by hand from each paper's definition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from velocity.attacks import ATTACKS, canonical_attack
from velocity.attacks.data_poisoning import backdoor_success, trigger_features
from velocity.attacks.model_poisoning import alie_default_z, fang_krum_lambda_bound
from velocity.errors import SpecError
from velocity.strategies import aggregate
from velocity.strategies.aggregators import krum_scores

RNG = np.random.default_rng(0)


def _attack(
    name: str,
    updates: list | np.ndarray,
    malicious: list[bool],
    weights: list[float] | None = None,
    **params: object,
) -> tuple[np.ndarray, dict]:
    entry, resolved = ATTACKS.resolve({"type": name, **params})
    u = np.asarray(updates, dtype=np.float32)
    w = np.ones(len(u)) if weights is None else np.asarray(weights, dtype=np.float64)
    return entry.obj(u, w, np.asarray(malicious), np.random.default_rng(0), **resolved)


def test_sign_flip_negates_and_scales_the_own_update() -> None:
    out, _ = _attack("sign_flip", [[1, -2], [3, 4]], [True, False], scale=10)
    np.testing.assert_array_equal(out, [[-10, 20]])


def test_gaussian_draws_n0_sigma_from_the_given_rng() -> None:
    out, _ = _attack("gaussian", np.zeros((2, 4000)), [True, True], sigma=3.0)
    expected = np.random.default_rng(0).normal(0.0, 3.0, (2, 4000)).astype(np.float32)
    np.testing.assert_array_equal(out, expected)
    assert abs(out.std() - 3.0) < 0.1 and abs(out.mean()) < 0.1


def test_ipm_sends_minus_epsilon_times_the_mean_of_the_honest_updates() -> None:
    # Xie et al.: -epsilon x the mean of the correct workers' updates. Honest rows (1, 2) and
    # (3, 4) have mean (2, 3); the attacker's own genuine row (5, 6) is not part of it.
    out, _ = _attack("ipm", [[1, 2], [3, 4], [5, 6]], [False, False, True], epsilon=1.0)
    np.testing.assert_allclose(out, [[-2.0, -3.0]])
    out, _ = _attack("ipm", [[1, 2], [3, 4], [5, 6]], [True, False, True], epsilon=0.5)
    np.testing.assert_allclose(out, [[-1.5, -2.0], [-1.5, -2.0]])
    # No honest row sampled: the attackers can only invert the mean of their own rows.
    out, _ = _attack("ipm", [[1, 2], [3, 4]], [True, True], epsilon=2.0)
    np.testing.assert_allclose(out, [[-4.0, -6.0], [-4.0, -6.0]])


def test_alie_default_z_follows_baruch_et_al() -> None:
    # Paper's example: n = 50, f = 24 -> s = 26 - 24 = 2, z = Phi^-1(48/50) = 1.7507.
    assert alie_default_z(50, 24) == pytest.approx(1.750686, abs=1e-5)
    # n = 20, f = 4 -> s = 11 - 4 = 7, z = Phi^-1(13/20) = 0.38532.
    assert alie_default_z(20, 4) == pytest.approx(0.385320, abs=1e-5)


def test_alie_sends_mean_minus_z_std() -> None:
    out, info = _attack("alie", [[0, 1], [2, 1], [4, 1]], [False, True, True], z=1.0)
    std = math.sqrt(8 / 3)  # population std of 0, 2, 4
    np.testing.assert_allclose(out, [[2 - std, 1], [2 - std, 1]], rtol=1e-6)
    assert info == {"z": 1.0}
    _, info = _attack("alie", np.zeros((20, 3)), [True] * 4 + [False] * 16)
    assert info["z"] == pytest.approx(alie_default_z(20, 4))


def test_krum_scores_sum_the_nearest_squared_distances() -> None:
    points = np.array([[0.0], [1.0], [3.0], [10.0]])
    sq = (points - points.T) ** 2
    # n = 4, f = 1 -> one nearest neighbour each.
    np.testing.assert_allclose(krum_scores(sq, 1), [1, 1, 4, 49])


def test_fang_krum_lambda_bound_matches_the_paper_formula() -> None:
    # Benign rows (0,0)..(4,0); m = 7 clients, c = 2 -> m - c - 2 = 3 nearest, m - 2c - 1 = 2.
    benign = np.array([[i, 0.0] for i in range(5)], dtype=np.float32)
    # min over i of the 3 nearest distances: rows 1..3 give 1 + 1 + 2 = 4; max norm is 4.
    expected = 4 / (2 * math.sqrt(2)) + 4 / math.sqrt(2)
    assert fang_krum_lambda_bound(benign, 2, 7) == pytest.approx(expected)


def test_fang_krum_gets_its_update_selected_by_krum() -> None:
    # Noisy honest updates (spread larger than their mean), the regime of SGD in the paper.
    rng = np.random.default_rng(3)
    updates = rng.normal(0.05, 1.0, (12, 20)).astype(np.float32)
    malicious = np.zeros(12, dtype=bool)
    malicious[[2, 5, 9]] = True
    out, info = _attack("fang_krum", updates, list(malicious))
    s = np.where(updates.mean(0) > 0, 1.0, -1.0)
    np.testing.assert_allclose(out, np.repeat(-info["lambda"] * s[None], 3, 0), rtol=1e-6)
    bound = fang_krum_lambda_bound(updates[~malicious], 3, 12)
    halvings = math.log2(bound / info["lambda"])
    assert halvings == pytest.approx(round(halvings), abs=1e-6)  # lambda = bound / 2^k
    assert info["selected"] == 1
    poisoned = updates.copy()
    poisoned[malicious] = out
    # The real Krum aggregator picks the attacker's vector, directed against the mean.
    np.testing.assert_allclose(aggregate("krum:f=3", poisoned), out[0], rtol=1e-6)


def test_fang_krum_reports_failure_with_the_smallest_lambda_tried() -> None:
    # Tight honest updates around a large mean: even lambda -> 0 (the zero update) is farther
    # from them than they are from each other, so Krum never selects the attacker.
    rng = np.random.default_rng(3)
    updates = rng.normal(0.5, 0.3, (12, 20)).astype(np.float32)
    malicious = [i in (2, 5, 9) for i in range(12)]
    _, info = _attack("fang_krum", updates, malicious, threshold=1e-3)
    assert info["selected"] == 0
    assert 1e-3 <= info["lambda"] < 2e-3


def test_fang_trimmed_mean_samples_the_paper_intervals() -> None:
    # Column means: +2 (push below min), -2 (push above max), -3, +3.33 -> intervals with b = 2:
    # min 1 > 0: [0.5, 1]; max -1 <= 0: [-1, -0.5]; max 2 > 0: [2, 4]; min -1 <= 0: [-2, -1].
    honest = np.array([[1, -1, 2, -1], [2, -2, -5, 5], [3, -3, -6, 6]], dtype=np.float32)
    updates = np.concatenate([honest, np.repeat(honest[:1], 500, 0)])
    updates[3:] = honest[1]  # the attackers' genuine rows equal a benign one
    malicious = np.r_[np.zeros(3, bool), np.ones(500, bool)]
    out, _ = _attack("fang_trimmed_mean", updates, list(malicious), b=2.0)
    means = updates.mean(0)
    assert np.sign(means).tolist() == [1, -1, -1, 1]
    low = np.array([0.5, -1.0, 2.0, -2.0])
    high = np.array([1.0, -0.5, 4.0, -1.0])
    assert np.all(out >= low - 1e-6) and np.all(out <= high + 1e-6)
    # Uniform sampling covers the interval.
    np.testing.assert_allclose(out.min(0), low, atol=0.02)
    np.testing.assert_allclose(out.max(0), high, atol=0.02)


def test_fang_trimmed_mean_pushes_the_trimmed_mean_against_the_honest_direction() -> None:
    rng = np.random.default_rng(4)
    updates = rng.normal(1.0, 0.5, (10, 50)).astype(np.float32)
    malicious = np.zeros(10, dtype=bool)
    malicious[:3] = True
    out, _ = _attack("fang_trimmed_mean", updates, list(malicious))
    poisoned = updates.copy()
    poisoned[malicious] = out
    clean = aggregate("trimmed_mean:k=3", updates)
    attacked = aggregate("trimmed_mean:k=3", poisoned)
    # Every coordinate moved opposite to the sign of the honest mean.
    direction = np.sign(updates.mean(0))
    moved = (attacked - clean) * direction
    assert np.all(moved <= 0) and moved.mean() < -0.1


def test_minmax_and_minsum_solve_their_constraints_by_hand() -> None:
    # Rows (0,0), (2,0), (0,2); mean (2/3, 2/3); unit-vector deviation (1,1)/sqrt 2.
    # m = t (1,1) with t = 2/3 - gamma / sqrt 2.
    # MinMax: (t-2)^2 + t^2 <= 8 -> t >= 1 - sqrt 3.
    # MinSum: 6t^2 - 8t + 8 <= 12 -> t >= (4 - sqrt 40) / 6.
    updates = [[0, 0], [2, 0], [0, 2]]
    mask = [False, True, False]
    for name, t in (("minmax", 1 - math.sqrt(3)), ("minsum", (4 - math.sqrt(40)) / 6)):
        out, info = _attack(name, updates, mask)
        gamma = (2 / 3 - t) * math.sqrt(2)
        assert info["gamma"] == pytest.approx(gamma, abs=1e-4), name
        np.testing.assert_allclose(out, [[t, t]], atol=1e-4)


def test_minmax_one_dimensional_case() -> None:
    # Rows 0, 1, 2: mean 1, deviation +1; m = 1 - gamma; farthest distance 1 + gamma <= 2.
    out, info = _attack("minmax", [[0], [1], [2]], [True, False, False])
    assert info["gamma"] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(out, [[0.0]], atol=1e-4)


@pytest.mark.parametrize("deviation", ["std", "sign"])
def test_minmax_other_deviations(deviation: str) -> None:
    # std of (0, 1, 2) is sqrt(2/3); sign is 1: same boundary 1 + gamma |p| = 2.
    _, info = _attack("minmax", [[0], [1], [2]], [True, False, False], deviation=deviation)
    p = math.sqrt(2 / 3) if deviation == "std" else 1.0
    assert info["gamma"] * p == pytest.approx(1.0, abs=1e-4)


def test_mimic_copies_the_honest_client_farthest_along_the_top_direction() -> None:
    updates = [[0, 0], [1, 0], [-1, 0], [5, 0.1], [100, 100]]
    out, info = _attack("mimic", updates, [False, False, False, False, True])
    assert info == {"target": 3}
    np.testing.assert_array_equal(out, np.array([[5, 0.1]], dtype=np.float32))


def test_sybil_appends_copies_of_the_first_malicious_update() -> None:
    out, _ = _attack("sybil", [[1, 1], [2, 2], [3, 3]], [False, True, True], count=2)
    np.testing.assert_array_equal(out, [[2, 2], [3, 3], [2, 2], [2, 2]])


def test_scaling_defaults_to_the_model_replacement_factor() -> None:
    updates = [[1, 2], [3, 4], [5, 6], [7, 8]]
    out, info = _attack("scaling", updates, [False, True, False, True], [10, 20, 30, 40])
    assert info["factor"] == pytest.approx(100 / 60)
    np.testing.assert_allclose(out, np.array([[3, 4], [7, 8]]) * 100 / 60, rtol=1e-6)
    out, info = _attack("scaling", updates, [True, False, False, False], factor=3)
    np.testing.assert_allclose(out, [[3, 6]])


def _poison(name: str, X: np.ndarray, y: np.ndarray, **params: object) -> tuple[np.ndarray, ...]:
    entry, resolved = ATTACKS.resolve({"type": name, **params})
    return entry.obj(
        X,
        y,
        np.random.default_rng(0),
        shared_rng=np.random.default_rng(1),
        num_classes=10,
        **resolved,
    )


def test_label_flip_reverse_and_derangement() -> None:
    X = np.zeros((3, 2), dtype=np.float32)
    _, y = _poison("label_flip", X, np.array([0, 3, 9]))
    np.testing.assert_array_equal(y, [9, 6, 0])
    labels = np.repeat(np.arange(10), 3)
    _, y = _poison("label_flip", np.zeros((30, 2), np.float32), labels, mapping="derangement")
    table = y.reshape(10, 3)
    assert np.all(table == table[:, :1])  # one fixed mapping per class
    assert sorted(table[:, 0]) == list(range(10))  # a permutation
    assert np.all(table[:, 0] != np.arange(10))  # without fixed points


def test_targeted_label_flip_flips_the_ratio_of_source_samples() -> None:
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.array([5] * 10 + [1] * 10)
    X_out, y_out = _poison("targeted_label_flip", X, y, source=5, target=3, ratio=0.5)
    np.testing.assert_array_equal(X_out, X)
    assert (y_out[:10] == 3).sum() == 5 and (y_out[:10] == 5).sum() == 5
    np.testing.assert_array_equal(y_out[10:], 1)
    with pytest.raises(SpecError, match=r"'source' must be a class in 0\.\.9"):
        _poison("targeted_label_flip", X, y, source=12)


def test_backdoor_stamps_the_trigger_into_a_fraction_and_relabels() -> None:
    X = np.zeros((10, 64), dtype=np.float32)
    y = np.arange(10)
    X_out, y_out = _poison("backdoor", X, y, fraction=0.2, target=0, value=3.0)
    stamped = np.flatnonzero(np.any(X_out != 0, axis=1))
    assert len(stamped) == 2
    np.testing.assert_array_equal(X_out[stamped][:, 60:], 3.0)
    np.testing.assert_array_equal(X_out[stamped][:, :60], 0.0)
    np.testing.assert_array_equal(y_out[stamped], 0)
    untouched = np.setdiff1d(np.arange(10), stamped)
    np.testing.assert_array_equal(y_out[untouched], y[untouched])
    # A client with few samples still poisons one (fraction > 0 means every attacker acts).
    X_out, _ = _poison("backdoor", X[:2], y[:2], fraction=0.2)
    assert np.any(X_out != 0, axis=1).sum() == 1
    X_out, y_out = _poison("backdoor", X[:0], y[:0], fraction=0.2)
    assert X_out.shape == (0, 64) and y_out.shape == (0,)


def test_backdoor_trigger_forms() -> None:
    assert canonical_attack("backdoor:trigger=7+3+3")["trigger"] == "3+7"
    np.testing.assert_array_equal(trigger_features("head", 3, 64), [0, 1, 2])
    np.testing.assert_array_equal(trigger_features("tail", 2, 64), [62, 63])
    with pytest.raises(SpecError, match="trigger"):
        trigger_features("70", 1, 64)
    with pytest.raises(SpecError, match="trigger"):
        canonical_attack("backdoor:trigger=corner")


def test_attack_success_rate_counts_triggered_non_target_samples() -> None:
    X = np.zeros((6, 8), dtype=np.float32)
    y = np.array([0, 0, 1, 2, 3, 4])
    params = {"target": 0, "trigger": "tail", "size": 2, "value": 3.0, "fraction": 0.2}

    def follows_trigger(inputs: np.ndarray) -> np.ndarray:
        return np.where(inputs[:, -1] == 3.0, 0, 1)

    assert backdoor_success(follows_trigger, X, y, **params) == {"attack_success_rate": 1.0}

    def half(inputs: np.ndarray) -> np.ndarray:
        return np.array([0, 1, 0, 1])  # the 4 non-target samples

    assert backdoor_success(half, X, y, **params) == {"attack_success_rate": 0.5}
