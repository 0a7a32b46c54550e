"""Differential privacy: clipping bounds, the noise's standard deviation, epsilon against
dp-accounting's own calculation, determinism, budgets, reports and bad parameters."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting import pld, rdp

from velocity.cli import main
from velocity.errors import InputError, SpecError
from velocity.federation import CLIENT_SAMPLINGS, sample_clients
from velocity.leaderboards import build_leaderboard
from velocity.privacy import (
    accounting_problem,
    central_epsilons,
    clip_to_norm,
    default_delta,
    local_epsilons,
    require_dp_accounting,
    update_norms,
    value_noise_multiplier,
)
from velocity.records import is_timing
from velocity.report import _frontier_points, build_comparison, plot_names, render_plot
from velocity.seeds import child_rng
from velocity.simulation import plan_privacy, run_simulation
from velocity.spec import RunSpec, spec_from_mapping
from velocity.store import RunRecord
from velocity.strategies import aggregate, build_strategy, canonical_strategy
from velocity.sweepdir import read_sweep

SMALL = {"model": "logreg", "num_clients": 20, "clients_per_round": 5, "rounds": 4}


def _matrix(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1e-3, 1e6, n)[:, None]
    return (rng.standard_normal((n, d)) * scales).astype(np.float32)


# ----------------------------------------------------------------------------- clipping


@pytest.mark.parametrize("clip_norm", [1e-3, 0.5, 1.0, 7.3])
def test_clipping_bounds_every_row_and_keeps_short_ones(clip_norm: float) -> None:
    updates = _matrix(40, 513)
    updates[3, 7] = np.inf
    updates[5, 0] = np.nan
    original = updates.copy()
    clipped, norms = clip_to_norm(updates, clip_norm)
    assert np.array_equal(updates, original, equal_nan=True)  # the input is not modified
    out_norms = update_norms(clipped)
    assert np.all(out_norms <= clip_norm)  # float64 norms of the float32 rows: never above
    short = norms <= clip_norm
    assert np.array_equal(clipped[short], updates[short])
    assert not clipped[3].any() and not clipped[5].any()  # diverged clients count as zero
    long = ~short & np.isfinite(norms)
    cosine = np.einsum("ij,ij->i", clipped[long], updates[long]) / (out_norms[long] * norms[long])
    assert np.allclose(cosine, 1.0, atol=1e-5)  # only shortened, never turned


def test_dp_fedavg_bounds_each_clients_influence_on_the_aggregate() -> None:
    # Replacing one client's update, however large, moves the noise-free DP-FedAvg aggregate by
    # at most 2 clip_norm / expected clients: the sensitivity the accounting assumes.
    clip_norm, n = 0.5, 8
    base = _matrix(n, 300, seed=1)
    rng = np.random.default_rng(2)
    for _ in range(20):
        other = base.copy()
        row = int(rng.integers(n))
        other[row] = rng.standard_normal(300).astype(np.float32) * float(rng.choice([1e-3, 1e9]))
        spec = f"dp:noise_multiplier=0,clip_norm={clip_norm}"
        moved = np.linalg.norm(
            aggregate(spec, base).astype(np.float64) - aggregate(spec, other).astype(np.float64)
        )
        assert moved <= 2 * clip_norm / n * (1 + 1e-6)


def test_dp_weights_every_client_once_whatever_its_sample_count() -> None:
    updates = np.full((4, 3), 0.1, dtype=np.float32)
    updates[0] = 0.3
    equal = aggregate("dp:noise_multiplier=0", updates)
    skewed = aggregate("dp:noise_multiplier=0", updates, np.array([1000.0, 1, 1, 1]))
    assert np.array_equal(equal, skewed)
    assert np.allclose(equal, updates.mean(axis=0))


# ----------------------------------------------------------------------------- noise


def test_central_noise_has_the_stated_std_on_the_mean() -> None:
    # Zero updates: the aggregate is the noise alone, N(0, (z C / m)^2) per coordinate, with m
    # the expected number of clients (here larger than the round's 3: Poisson's denominator).
    z, clip_norm, expected, d = 1.5, 0.5, 10, 400_000
    strategy = build_strategy(
        f"dp:noise_multiplier={z},clip_norm={clip_norm}", seed=11, expected_clients=expected
    )
    noise = strategy.aggregate(np.zeros((3, d), np.float32), np.ones(3), round_index=4)
    noise = noise.astype(np.float64)
    stated = z * clip_norm / expected
    # The sample std of d normals is within 1% of the true one (here ~6 standard errors).
    assert abs(noise.std() / stated - 1) < 0.01
    assert abs(noise.mean()) < 5 * stated / math.sqrt(d)
    # Drawn from the seed tree: the same round gives the same noise, another round other noise.
    again = build_strategy(
        f"dp:noise_multiplier={z},clip_norm={clip_norm}", seed=11, expected_clients=expected
    ).aggregate(np.zeros((3, d), np.float32), np.ones(3), round_index=4)
    assert np.array_equal(again, noise.astype(np.float32))
    other = strategy.aggregate(np.zeros((3, d), np.float32), np.ones(3), round_index=5)
    assert not np.array_equal(other, again)


def test_local_dp_noise_is_per_client_with_the_stated_std() -> None:
    z, clip_norm, d = 0.8, 2.0, 100_000
    strategy = build_strategy(f"ldp:noise_multiplier={z},clip_norm={clip_norm} > median", seed=3)
    ids = np.array([2, 9, 14])
    noised = strategy.privatize(np.zeros((3, d), np.float32), ids, round_index=1)
    for row in noised.astype(np.float64):
        assert abs(row.std() / (z * clip_norm) - 1) < 0.01
    # A client's noise depends on (seed, round, client) only, not on who else took part.
    alone = strategy.privatize(np.zeros((1, d), np.float32), np.array([9]), round_index=1)
    assert np.array_equal(alone[0], noised[1])


def test_adaptive_clipping_tracks_the_target_quantile() -> None:
    # Update norms uniform on [1, 10]: the median is 5.5. Noise-free (z=0), the geometric
    # update settles the norm near it from a far-off start.
    strategy = build_strategy("dp:noise_multiplier=0,clip_norm=0.1,target_quantile=0.5", seed=0)
    rng = np.random.default_rng(0)
    for r in range(1, 301):
        norms = rng.uniform(1, 10, 50)
        directions = rng.standard_normal((50, 4))
        updates = directions / np.linalg.norm(directions, axis=1, keepdims=True) * norms[:, None]
        strategy.aggregate(updates.astype(np.float32), np.ones(50), round_index=r)
    assert strategy.round_record["clip_norm"] == pytest.approx(5.5, rel=0.2)


def test_adaptive_noise_split_keeps_the_total_noise_multiplier() -> None:
    # Andrew et al., Thm 1: value noise z_v and count noise s combine to z = (z_v^-2 + (2s)^-2)^-1/2
    z_v = value_noise_multiplier(1.0, 2.0)
    assert (z_v**-2 + (2 * 2.0) ** -2) ** -0.5 == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(ValueError, match="noise_multiplier < 2"):
        value_noise_multiplier(1.0, 0.5)


# ----------------------------------------------------------------------------- accounting


def _delta(n: int) -> float:
    return 1 / n**1.1


def test_default_delta_is_below_one_over_the_clients() -> None:
    assert default_delta(100) == pytest.approx(100**-1.1) and default_delta(100) < 1 / 100


@pytest.mark.parametrize("sampling", ["fixed", "poisson"])
def test_recorded_epsilon_equals_dp_accountings_rdp(sampling: str) -> None:
    spec = RunSpec(
        strategy="dp:noise_multiplier=1.3,clip_norm=1.0 > mean",
        client_sampling=sampling,
        num_clients=100,
        clients_per_round=10,
        rounds=3,
        model="logreg",
    )
    result = run_simulation(spec)
    assert result.status == "complete"
    if sampling == "fixed":
        event = dpa.SampledWithoutReplacementDpEvent(100, 10, dpa.GaussianDpEvent(1.3 / 2))
        relation = dpa.NeighboringRelation.REPLACE_ONE
    else:
        event = dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.3))
        relation = dpa.NeighboringRelation.ADD_OR_REMOVE_ONE
    for record in result.rounds:
        accountant = rdp.RdpAccountant(neighboring_relation=relation)
        accountant.compose(event, record["round"])
        assert record["epsilon"] == accountant.get_epsilon(_delta(100))  # exactly
        assert record["delta"] == _delta(100)


def test_pld_epsilon_equals_a_pld_accountant_composing_each_round() -> None:
    epsilons = central_epsilons("pld", "poisson", 50, 5, 1.1, 1e-5, 2)
    accountant = pld.PLDAccountant()
    for epsilon in epsilons:
        accountant.compose(dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.1)))
        assert epsilon == accountant.get_epsilon(1e-5)
    assert "sampling without replacement" in (accounting_problem("pld", "fixed", 50, 5) or "")
    assert accounting_problem("pld", "fixed", 50, 50) is None  # no sampling: a plain Gaussian


def test_local_dp_epsilon_composes_the_most_sampled_clients_rounds() -> None:
    spec = RunSpec(strategy="ldp:noise_multiplier=2.0 > median", **SMALL)
    plan = plan_privacy(spec)
    assert plan is not None
    counts = np.zeros(20, dtype=int)
    for r in range(1, 5):
        counts[sample_clients("fixed", 20, 5, 0, r)] += 1
        accountant = rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
        accountant.compose(dpa.GaussianDpEvent(1.0), int(counts.max()))
        assert plan.epsilons[r - 1] == accountant.get_epsilon(_delta(20))
    assert local_epsilons("rdp", 0.0, 1e-5, 2) == (0.0, math.inf, math.inf)


def test_no_noise_is_no_privacy() -> None:
    assert central_epsilons("rdp", "fixed", 10, 5, 0.0, 1e-5, 3) == (math.inf,) * 3


def test_a_missing_dp_accounting_is_one_line_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "dp_accounting", None)
    with pytest.raises(InputError, match=r"pip install 'velocity-fl\[privacy\]'"):
        require_dp_accounting()


# ----------------------------------------------------------------------------- runs


def _metrics(rounds: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not is_timing(k)} for r in rounds]


@pytest.mark.parametrize(
    "strategy",
    [
        "dp:noise_multiplier=1.0,clip_norm=0.5 > mean > momentum",
        "dp:noise_multiplier=0.3,target_quantile=0.5",
        "ldp:noise_multiplier=0.2,clip_norm=1.0 > trimmed_mean:k=1",
    ],
)
def test_private_runs_are_deterministic_given_the_seed(strategy: str) -> None:
    spec = RunSpec(strategy=strategy, **{**SMALL, "clients_per_round": 10})
    first, second = run_simulation(spec), run_simulation(spec)
    assert first.status == "complete"
    assert _metrics(first.rounds) == _metrics(second.rounds)
    assert np.array_equal(first.final_params, second.final_params)
    other = run_simulation(RunSpec(strategy=strategy, seed=1, **{**SMALL, "clients_per_round": 10}))
    assert not np.array_equal(first.final_params, other.final_params)
    assert {"epsilon", "delta", "clip_norm", "clipped_fraction"} <= set(first.rounds[-1])


def test_attacks_compose_with_dp() -> None:
    spec = RunSpec(
        strategy="dp:noise_multiplier=0.5,clip_norm=1.0",
        attack="sign_flip:scale=100",
        byzantine=2,
        **SMALL,
    )
    result = run_simulation(spec)
    assert result.status == "complete" and "epsilon" in result.rounds[-1]


def test_target_epsilon_stops_before_the_budget_is_exceeded() -> None:
    spec = RunSpec(strategy="dp:noise_multiplier=1.0", **{**SMALL, "rounds": 10})
    full = plan_privacy(spec)
    assert full is not None
    target = (full.epsilons[5] + full.epsilons[6]) / 2  # allows exactly 6 rounds
    stopped = run_simulation(
        RunSpec(
            strategy="dp:noise_multiplier=1.0", target_epsilon=target, **{**SMALL, "rounds": 10}
        )
    )
    assert [r["round"] for r in stopped.rounds] == [1, 2, 3, 4, 5, 6]
    assert stopped.rounds[-1]["epsilon"] <= target < full.epsilons[6]
    assert stopped.rounds[-1]["test_accuracy"] is not None  # the last round is evaluated
    assert stopped.details["stopped"] == "target_epsilon"
    with pytest.raises(InputError, match="spent before the first round"):
        plan_privacy(RunSpec(strategy="dp", target_epsilon=1e-3, **SMALL))


def test_poisson_rounds_without_clients() -> None:
    spec = RunSpec(
        client_sampling="poisson", **{**SMALL, "num_clients": 20, "clients_per_round": 1}
    )
    result = run_simulation(spec)
    empty = [r for r in result.rounds if r["num_clients"] == 0]
    assert result.status == "complete" and empty  # q = 0.05: some rounds draw nobody
    assert all(r["train_loss"] is None for r in empty)
    private = run_simulation(
        RunSpec(strategy="dp", client_sampling="poisson", **{**SMALL, "clients_per_round": 1})
    )
    assert private.status == "complete"


def test_fixed_size_sampling_is_todays_draw_bit_for_bit() -> None:
    for r in (1, 2, 17):
        old = np.sort(child_rng(5, "sample", r).choice(30, 7, replace=False))
        assert np.array_equal(sample_clients("fixed", 30, 7, 5, r), old)
    assert np.array_equal(sample_clients("poisson", 9, 9, 5, 1), np.arange(9))


@pytest.mark.parametrize("scheme", CLIENT_SAMPLINGS.names())
def test_every_sampler_draws_sorted_distinct_ids_deterministically(scheme: str) -> None:
    fixed = CLIENT_SAMPLINGS.get(scheme).extra["fixed_size"]
    sizes = []
    for r in range(1, 401):
        ids = sample_clients(scheme, 50, 10, 3, r)
        assert np.array_equal(ids, np.unique(ids)) and ids.min(initial=0) >= 0
        assert ids.max(initial=0) < 50
        assert np.array_equal(ids, sample_clients(scheme, 50, 10, 3, r))
        sizes.append(len(ids))
    if fixed:
        assert set(sizes) == {10}
    else:  # mean 10, std 2.12 per round: the mean of 400 rounds within 5 standard errors
        assert abs(np.mean(sizes) - 10) < 5 * math.sqrt(10 * 0.8 / 400)


# ----------------------------------------------------------------------------- specs


def test_privacy_fields_keep_old_fingerprints_and_count_when_set() -> None:
    plain = RunSpec()
    assert not {"client_sampling", "accountant", "delta", "target_epsilon"} & set(plain.canonical())
    assert plain.fingerprint == "62962a64634f69ddc8da7cf698e892b711f226886067b75e9f8f67fd7992b8ac"
    private = RunSpec(strategy="dp", delta=1e-5, client_sampling="poisson")
    assert private.canonical()["delta"] == 1e-5
    assert private.fingerprint != RunSpec(strategy="dp", client_sampling="poisson").fingerprint
    # Without a privacy stage the privacy fields would change nothing: they are dropped.
    assert RunSpec(delta=1e-5, accountant="pld").fingerprint == plain.fingerprint


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--strategy", "dp:noise_multiplier=-1"], "'noise_multiplier' must be a number >= 0"),
        (["--strategy", "dp:clip_norm=0"], "'clip_norm' must be a number > 0, got 0"),
        (["--strategy", "dp", "--delta", "1"], "delta: Input should be less than 1"),
        (["--strategy", "dp", "--delta", "0"], "delta: Input should be greater than 0"),
        (["--strategy", "dp:target_quantile=1.0"], "'target_quantile' must be a number > 0"),
        (["--strategy", "dp > median"], "composes only with the aggregator 'mean'"),
        (["--strategy", "nnm > dp"], "must come first in the chain"),
        (["--strategy", "dp", "--accountant", "gdp"], "accountant: must be one of rdp, pld"),
        (["--strategy", "dp", "--client-sampling", "all"], "must be one of fixed, poisson"),
        (
            ["--strategy", "dp", "--accountant", "pld", "--clients-per-round", "3"],
            "cannot account fixed-size client sampling",
        ),
        (["--strategy", "dp:target_quantile=0.5"], "needs noise_multiplier < 2 * count_stddev"),
        (["--strategy", "dp", "--target-epsilon", "-2"], "target_epsilon: Input should be"),
        (["--strategy", "dp", "--target-epsilon", "1e-4"], "spent before the first round"),
    ],
)
def test_bad_dp_parameters_are_one_line_exit_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--model", "logreg", "--rounds", "2", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_strategy_table_form_and_label() -> None:
    table, _ = canonical_strategy({"privacy": "dp:noise_multiplier=2", "aggregator": "mean"})
    assert table["privacy"]["noise_multiplier"] == 2.0
    with pytest.raises(SpecError, match="only with the aggregator 'mean'"):
        canonical_strategy({"privacy": "dp", "aggregator": "krum"})
    from velocity.report import strategy_label

    spec = RunSpec(strategy="dp:noise_multiplier=1.0 > mean > momentum").canonical()
    assert strategy_label(spec) == "dp:noise_multiplier=1.0 > mean > momentum"


# ----------------------------------------------------------------------------- reports


def _entry(name: str, z: float | None, epsilon: float | None, accuracy: float) -> dict:
    strategy = "fedavg" if z is None else f"dp:noise_multiplier={z}"
    spec = RunSpec(name=name, strategy=strategy, **SMALL)
    final = {"test_accuracy": accuracy, **({} if epsilon is None else {"epsilon": epsilon})}
    return {
        "name": name,
        "spec": spec.canonical(),
        "fingerprint_without_seed": spec.fingerprint_without_seed,
        "status": "complete",
        "final": final,
    }


def test_frontier_has_one_line_per_strategy_with_non_private_runs_at_infinity() -> None:
    comparison = {
        "runs": [
            _entry("a", 0.5, 20.0, 0.9),
            _entry("b", 2.0, 1.5, 0.6),
            _entry("c", 0.0, math.inf, 0.95),
            _entry("d", None, None, 0.96),
        ],
        "target_accuracy": 0.9,
    }
    lines = _frontier_points(comparison)
    assert lines == {
        "dp > mean": [(1.5, 0.6, 1), (20.0, 0.9, 1), (math.inf, 0.95, 1)],
        "fedavg": [(math.inf, 0.96, 1)],
    }
    assert plot_names(comparison)[-1] == "privacy"
    plot = render_plot("privacy", comparison)
    assert plot.png.startswith(b"\x89PNG") and plot.svg == render_plot("privacy", comparison).svg
    assert "privacy" not in plot_names({"runs": [_entry("d", None, None, 0.9)]})


def test_pareto_against_epsilon(tmp_path: Path) -> None:
    def record(name: str, z: float | None, epsilon: float, accuracy: float) -> RunRecord:
        strategy = "fedavg" if z is None else f"dp:noise_multiplier={z}"
        spec = spec_from_mapping({**SMALL, "name": name, "strategy": strategy})
        final = {"test_accuracy": accuracy, **({"epsilon": epsilon} if z is not None else {})}
        return RunRecord(
            run_id=name,
            name=name,
            source="/s",
            fingerprint=spec.fingerprint,
            fingerprint_without_seed=spec.fingerprint_without_seed,
            seed=0,
            spec=spec.canonical(),
            status="complete",
            started_at="2025-01-01T00:00:00.000Z",
            finished_at="2025-01-01T00:01:00.000Z",
            final=final,
            totals={"bytes": 40},
        )

    records = [
        record("private", 1.0, 3.0, 0.85),
        record("more_noise", 2.0, 1.0, 0.70),
        record("dominated", 0.5, 5.0, 0.80),
        record("plain", None, math.inf, 0.97),
    ]
    board = build_leaderboard(records, "pareto", cost="epsilon")
    fronts = {r.label: r.extra["pareto_front"] for r in board.rows}
    assert fronts == {"private": 1, "more_noise": 1, "plain": 1, "dominated": 2}
    assert {r.label: r.extra["epsilon"] for r in board.rows if r.label != "plain"} == {
        "private": 3.0,
        "more_noise": 1.0,
        "dominated": 5.0,
    }
    assert board.to_dict()["cost"] == "epsilon"
    ranked = build_leaderboard(records, "epsilon")
    assert [r.label for r in ranked.rows] == ["more_noise", "private", "dominated"]
    with pytest.raises(InputError, match="--cost"):
        build_leaderboard(records, "accuracy", cost="epsilon")


@pytest.mark.slow
def test_sweep_report_archive_and_exact_reproduction_of_epsilon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = tmp_path / "dp.toml"
    experiment.write_text(
        "[shared]\nmodel = 'logreg'\nnum_clients = 20\nclients_per_round = 4\nrounds = 3\n"
        "client_sampling = 'poisson'\nbyzantine = 2\n[matrix]\n"
        "strategy = ['dp:noise_multiplier=0.8', 'fedavg']\n"
        "attack = ['none', 'sign_flip']\n"
    )
    out = tmp_path / "sweep"
    assert main(["sweep", str(experiment), "--out", str(out), "--parallel", "2"]) == 0
    assert (out / "plots" / "privacy.png").is_file()
    header = (out / "comparison.md").read_text().splitlines()[4]
    assert header.endswith("| epsilon |")
    comparison = build_comparison(read_sweep(out))
    private = [r for r in comparison["runs"] if "dp" in r["strategy"]]
    assert all(r["final"]["epsilon"] > 0 for r in private)
    rounds_csv = (out / private[0]["name"] / "rounds.csv").read_text().splitlines()
    assert {"epsilon", "delta"} <= set(rounds_csv[0].split(","))
    board = ["leaderboard", "--sweep", str(out), "--metric", "pareto", "--cost", "epsilon"]
    assert main(board) == 0
    archive = tmp_path / "dp.crate.zip"
    assert main(["archive", str(out), "-o", str(archive)]) == 0
    again = tmp_path / "again"
    code = main(["reproduce", str(archive), "--out", str(again), "--check", "--exact"])
    assert code == 0, capsys.readouterr()
