"""System heterogeneity, simulated time, asynchronous FL and compression, each against its
definition; runs without a ``system`` table keep their identity and results."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from velocity.errors import SpecError
from velocity.federation import (
    EventQueue,
    SystemModel,
    canonical_system,
    compress_updates,
    encoded_bytes,
    qsgd_quantize,
    sample_available,
    staleness_weights,
    topk_sparsify,
)
from velocity.models import plan_round
from velocity.simulation import _local_config, run_simulation, sample_clients, validate_run
from velocity.spec import RunSpec, spec_from_mapping
from velocity.strategies import aggregate

SMALL = dict(num_clients=8, clients_per_round=4, rounds=2, model="logreg", momentum=0.0)


def _digest(params: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(params).tobytes()).hexdigest()


def test_no_system_table_keeps_identity_and_results() -> None:
    plain = RunSpec(**SMALL)
    ideal = RunSpec(**SMALL, system={"stragglers": 0.0, "availability": 1.0})
    for key in ("system", "partial_work", "asynchronous", "compression"):
        assert key not in plain.canonical()
    assert ideal.fingerprint == plain.fingerprint  # an ideal federation is no federation
    a, b = run_simulation(plain), run_simulation(ideal)
    assert _digest(a.final_params) == _digest(b.final_params)
    assert "sim_seconds" not in a.rounds[0]


def test_partial_work_default_follows_the_strategy() -> None:
    assert RunSpec(**SMALL, system="stragglers=0.5").partial_work == "drop"
    assert RunSpec(**SMALL, strategy="fedprox:mu=1", system="stragglers=0.5").partial_work == "keep"
    given = RunSpec(**SMALL, system="stragglers=0.5", partial_work="keep")
    assert given.partial_work == "keep"
    assert RunSpec(**SMALL, partial_work="keep").partial_work is None  # no stragglers


def test_straggler_count_and_work_follow_the_definition() -> None:
    model = SystemModel(canonical_system({"stragglers": 0.9}), seed=3, num_clients=50)
    ids = np.arange(0, 40, 2)
    full = np.full(len(ids), 30)
    for r in range(1, 20):
        mask = model.stragglers(r, ids)
        assert mask.sum() == 18  # round(0.9 * 20)
        steps = model.straggler_steps(r, ids, full, mask)
        assert np.all(steps[~mask] == 30)
        assert np.all((steps[mask] >= 1) & (steps[mask] <= 29))
    # Position independence: a client's draw does not depend on who else is in the round.
    a = model.straggler_steps(1, ids, full, np.ones(len(ids), bool))
    b = model.straggler_steps(1, ids[::-1], full, np.ones(len(ids), bool))
    assert np.array_equal(a, b[::-1])


def test_dropping_stragglers_aggregates_exactly_the_others() -> None:
    spec = RunSpec(**{**SMALL, "rounds": 1}, system="stragglers=0.5")
    setup = validate_run(spec)
    result = run_simulation(spec, setup=setup)
    record = result.rounds[0]
    assert record["stragglers"] == 2 and record["num_clients"] == 2
    ids = sample_clients(spec, 1)
    plan = plan_round(
        [setup.clients[k] for k in ids], ids, epochs=1, batch_size=32, seed=spec.seed, round_index=1
    )
    system = SystemModel(spec.system, spec.seed, spec.num_clients)
    keep = ~system.stragglers(1, ids)
    # Every client trains its full work; the stragglers' rows are then left out.
    local = setup.model.train_round(
        setup.initial_params, setup.X_train, setup.y_train, plan, _local_config(spec)
    )
    deltas = local.params[keep] - setup.initial_params[None, :]
    expected = setup.initial_params + aggregate("fedavg", deltas, local.num_samples[keep])
    assert np.array_equal(result.final_params, expected)


def test_unavailable_clients_are_never_sampled_and_rates_match() -> None:
    for model_name in ("constant", "beta", "daynight"):
        table = canonical_system({"availability": 0.6, "availability_model": model_name})
        model = SystemModel(table, seed=1, num_clients=200)
        rates = []
        for r in range(1, 41):
            available = model.available(r)
            for scheme in ("fixed", "poisson"):
                ids = sample_available(scheme, available, 20, 1, r)
                assert available[ids].all()
            rates.append(available.mean())
        assert abs(np.mean(rates) - 0.6) < 0.06, model_name
    day = SystemModel(
        canonical_system("availability=0.5,availability_model=daynight,period=4,amplitude=0.5"),
        0,
        1,
    )
    p = [float(day.availability(r)[0]) for r in range(4)]
    assert max(p) - min(p) > 0.5  # a client's day and night


def test_dropout_rate_and_round_records() -> None:
    model = SystemModel(canonical_system({"dropout": 0.3}), seed=2, num_clients=1000)
    assert abs(model.dropped(1, np.arange(1000)).mean() - 0.3) < 0.05
    spec = RunSpec(**SMALL, system="dropout=0.5,availability=0.75,speed_sigma=1.0")
    for rec in run_simulation(spec).rounds:
        assert rec["num_clients"] == rec["selected"] - rec["dropped"]
        assert rec["selected"] <= min(rec["available"], 4)
        assert rec["sim_seconds"] >= 0


def test_deadline_drops_late_clients_and_caps_the_round() -> None:
    spec = RunSpec(**SMALL, system="speed_sigma=2.0,deadline=0.5")
    for rec in run_simulation(spec).rounds:
        assert rec["sim_seconds"] <= 0.5
        assert rec["num_clients"] == rec["selected"] - rec["late"]


def test_event_queue_orders_by_time_then_client() -> None:
    queue = EventQueue()
    for time, client in [(2.0, 5), (1.0, 9), (1.0, 3), (3.0, 0), (2.0, 1)]:
        queue.push(time, client, None)
    order = []
    while len(queue):
        order.append([(t, c) for t, c, _ in queue.pop_simultaneous()])
    assert order == [[(1.0, 3), (1.0, 9)], [(2.0, 1), (2.0, 5)], [(3.0, 0)]]


def test_staleness_weights() -> None:
    tau = np.array([0, 1, 3, 8])
    np.testing.assert_allclose(staleness_weights(tau, "polynomial", 0.5, 4), (1 + tau) ** -0.5)
    np.testing.assert_allclose(staleness_weights(tau, "hinge", 1.0, 2), [1, 1, 1 / 2, 1 / 7])
    assert staleness_weights(tau, "hinge", 0.0, 2).tolist() == [1, 1, 1, 1]
    assert np.all(staleness_weights(tau, "constant", 0.5, 4) == 1)


def test_fedbuff_steps_every_k_updates_and_records_staleness() -> None:
    spec = RunSpec(
        **{**SMALL, "rounds": 4},
        system="speed_sigma=1.5",
        asynchronous="fedbuff:buffer=3,concurrency=4",
    )
    result = run_simulation(spec)
    times = [r["sim_time"] for r in result.rounds]
    assert [r["num_clients"] for r in result.rounds] == [3] * 4
    assert times == sorted(times) and all(r["staleness_max"] >= 0 for r in result.rounds)
    assert any(r["staleness_max"] > 0 for r in result.rounds)


def test_fedbuff_equals_fedavg_when_everything_arrives_at_once() -> None:
    # Equal clients (456 samples / 8), speeds and links: every update arrives at once, so
    # FedBuff with K = concurrency = clients_per_round is synchronous FedAvg, bit for bit.
    same = {**SMALL, "dataset": "breast_cancer", "system": "bandwidth_mbps=5"}
    sync = run_simulation(RunSpec(**same))
    fedbuff = run_simulation(RunSpec(**same, asynchronous="fedbuff:buffer=4,concurrency=4"))
    assert _digest(sync.final_params) == _digest(fedbuff.final_params)
    assert [r["staleness_max"] for r in fedbuff.rounds] == [0, 0]


def test_topk_keeps_exactly_the_largest_and_counts_bytes() -> None:
    x = np.array([[0.1, -3.0, 2.0, 0.5], [1.0, 1.0, -1.0, 0.0]], dtype=np.float32)
    out = topk_sparsify(x, 2)
    assert np.array_equal(out, [[0, -3.0, 2.0, 0], [1.0, 1.0, 0, 0]])
    assert encoded_bytes({}, 1000) == 4000
    assert encoded_bytes({"type": "topk", "fraction": 0.01}, 1000) == -(-10 * (10 + 32) // 8)
    assert encoded_bytes({"type": "qsgd", "levels": 15}, 1000) == 4 + 1000 * 5 // 8


def test_qsgd_is_unbiased_and_error_feedback_conserves_the_sum() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(1, 16)).astype(np.float32)
    draws = [qsgd_quantize(v, 2, rng.random(v.shape)) for _ in range(4000)]
    np.testing.assert_allclose(np.mean(draws, axis=0), v, atol=0.06)
    table = {"type": "topk", "fraction": 0.25, "error_feedback": True}
    residuals: dict[int, np.ndarray] = {}
    sent = np.zeros(16, dtype=np.float32)
    total = np.zeros(16, dtype=np.float32)
    for r in range(1, 6):
        u = rng.normal(size=(1, 16)).astype(np.float32)
        total += u[0]
        sent += compress_updates(table, u, np.array([7]), 0, r, residuals)[0]
    np.testing.assert_allclose(sent + residuals[7], total, atol=1e-5)


def test_compressed_run_counts_compressed_bytes() -> None:
    result = run_simulation(RunSpec(**SMALL, compression="qsgd:levels=4"))
    d = int(result.details["num_params"])
    assert result.rounds[0]["bytes_up"] == 4 * (4 + -(-d * 4 // 8))


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("system", {"stragglerz": 0.5}, "system: unknown key 'stragglerz'"),
        ("system", {"stragglers": 1.5}, "parameter 'stragglers' must be"),
        ("system", {"availability": 0}, "parameter 'availability' must be"),
        ("system", {"availability_model": "moon"}, "parameter 'availability_model'"),
        ("system", "deadline", "system: expected key=value"),
        ("partial_work", "maybe", "partial_work"),
        ("asynchronous", "fedbuf", "asynchronous"),
        ("asynchronous", "fedbuff:buffer=0", "parameter 'buffer'"),
        ("compression", "topk:fraction=2", "parameter 'fraction'"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(field: str, value: object, needle: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_mapping({**SMALL, field: value}, "exp.toml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("exp.toml: ") and needle in message


def test_async_rejects_what_it_cannot_simulate() -> None:
    with pytest.raises(SpecError, match="asynchronous: not supported with system"):
        RunSpec(**SMALL, system="deadline=5", asynchronous="fedbuff")
    with pytest.raises(SpecError, match="concurrency"):
        RunSpec(**SMALL, asynchronous="fedbuff:concurrency=9")


_FRESH = """
import hashlib, sys
from velocity.simulation import run_simulation
from velocity.spec import RunSpec
spec = RunSpec(num_clients=8, clients_per_round=4, rounds=3, model="logreg", system=sys.argv[1],
               asynchronous=sys.argv[2] or None, compression="qsgd:levels=8")
r = run_simulation(spec)
print(hashlib.sha256(r.final_params.tobytes()).hexdigest(), r.rounds[-1]["sim_time"])
"""


@pytest.mark.parametrize("protocol", ["", "fedbuff:buffer=2"])
def test_deterministic_in_a_fresh_process(protocol: str) -> None:
    system = "stragglers=0.5,dropout=0.2,availability=0.8,speed_sigma=1.0"
    spec = RunSpec(
        num_clients=8,
        clients_per_round=4,
        rounds=3,
        model="logreg",
        system=system,
        asynchronous=protocol or None,
        compression="qsgd:levels=8",
    )
    here = run_simulation(spec)
    out = subprocess.run(
        [sys.executable, "-c", _FRESH, system, protocol], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [_digest(here.final_params), repr(here.rounds[-1]["sim_time"])]


def test_simulated_time_is_recorded_and_not_a_timing() -> None:
    from velocity.records import is_timing, summarize_rounds, time_to_target

    rounds = [
        {"round": 1, "test_accuracy": 0.5, "sim_seconds": 2.0, "sim_time": 2.0},
        {"round": 2, "test_accuracy": 0.8, "sim_seconds": 3.0, "sim_time": 5.0},
    ]
    assert time_to_target(rounds, 0.7) == 5.0 and time_to_target(rounds, 0.9) is None
    assert summarize_rounds(rounds)[1]["sim_time"] == 5.0
    assert not is_timing("sim_seconds") and is_timing("round_seconds")
    result = run_simulation(RunSpec(**SMALL, system="speed_sigma=1.0"))
    times = [r["sim_seconds"] for r in result.rounds]
    assert result.summary()["totals"]["sim_time"] == pytest.approx(sum(times))


def test_federation_fields_round_trip_through_toml() -> None:
    import tomllib

    from velocity.spec import spec_toml

    spec = RunSpec(
        **SMALL,
        system="stragglers=0.5,availability=0.7,availability_model=beta",
        asynchronous="fedbuff:buffer=3",
        compression="topk:fraction=0.1",
    )
    again = spec_from_mapping(tomllib.loads(spec_toml(spec.canonical())))
    assert again.fingerprint == spec.fingerprint


def test_async_stragglers_are_per_client_draws() -> None:
    model = SystemModel(canonical_system({"stragglers": 0.3}), seed=4, num_clients=2000)
    mask = model.stragglers(1, np.arange(2000), exact=False)
    assert abs(mask.mean() - 0.3) < 0.04
    with pytest.raises(SpecError, match="no update ever"):
        RunSpec(**SMALL, system="stragglers=1", asynchronous="fedbuff")


@pytest.mark.slow
def test_sweep_workers_match_a_run_in_this_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import csv

    from velocity.records import is_timing
    from velocity.store import open_store
    from velocity.sweeps import run_sweep

    system = "stragglers=0.5,availability=0.8,dropout=0.1,speed_sigma=1.0"
    specs = [
        RunSpec(**SMALL, name="sync", system=system, compression="topk:fraction=0.2"),
        RunSpec(**SMALL, name="fedbuff", system=system, asynchronous="fedbuff:buffer=2"),
        RunSpec(**SMALL, name="fedasync", system="speed_sigma=1", asynchronous="fedasync"),
    ]
    with open_store(tmp_path / "store.db") as store:
        result = run_sweep(specs, tmp_path / "sweep", parallel=2, store=store)
    assert result.exit_code == 0
    for spec in specs:
        with (result.out_dir / spec.name / "rounds.csv").open() as handle:
            swept = [
                {k: v for k, v in r.items() if not is_timing(k)} for r in csv.DictReader(handle)
            ]
        here = run_simulation(spec).rounds
        assert [float(r["sim_time"]) for r in swept] == [r["sim_time"] for r in here], spec.name
        assert [float(r["test_accuracy"]) for r in swept] == [r["test_accuracy"] for r in here]


def test_rounds_without_clients_keep_the_system_columns() -> None:
    # Poisson sampling at q = 1/8 among 2 reachable clients draws nobody in some rounds.
    spec = RunSpec(
        **{**SMALL, "rounds": 6, "clients_per_round": 1},
        client_sampling="poisson",
        system="availability=0.3",
    )
    rounds = run_simulation(spec).rounds
    assert any(r["selected"] == 0 for r in rounds)
    assert all(r["num_clients"] == r["selected"] for r in rounds)
    times = [r["sim_time"] for r in rounds]
    assert times == sorted(times)


def test_time_to_target_leaderboard_and_federation_labels() -> None:
    from velocity.leaderboards import build_leaderboard
    from velocity.report import spec_fields
    from velocity.store import RunRecord

    def record(name: str, seed: int, sim_times: list[float], **fields: object) -> RunRecord:
        spec = spec_from_mapping({**SMALL, "name": name, "seed": seed, **fields})
        rounds = [
            {"round": i + 1, "test_accuracy": 0.5 + 0.2 * i, "sim_time": t}
            for i, t in enumerate(sim_times)
        ]
        return RunRecord(
            run_id=f"{name}-{seed}",
            name=name,
            source="/s",
            fingerprint=spec.fingerprint,
            fingerprint_without_seed=spec.fingerprint_without_seed,
            seed=seed,
            spec=spec.canonical(),
            status="complete",
            started_at="2025-01-01T00:00:00.000Z",
            finished_at="2025-01-01T00:01:00.000Z",
            wall_seconds=1.0,
            final={"test_accuracy": 0.9},
            totals={},
            rounds=rounds,
        )

    records = [record(f"sync__s{s}", s, [10.0, 20.0, 30.0], system="speed_sigma=1") for s in (0, 1)]
    records += [
        record(
            f"buff__s{s}", s, [1.0, 2.0 + s, 3.0], system="speed_sigma=1", asynchronous="fedbuff"
        )
        for s in (0, 1)
    ]
    board = build_leaderboard(records, "time-to-target", target=0.85)
    assert [row.mean for row in board.rows] == [pytest.approx(3.0), pytest.approx(30.0)]
    assert board.rows[0].extra["reached"] == "2/2"
    fields = spec_fields(records[-1].spec)
    assert fields["asynchronous"] == "fedbuff" and fields["system"] == "speed_sigma=1"


def test_private_runs_refuse_clients_that_silently_leave() -> None:
    dp = "dp:noise_multiplier=1.0,clip_norm=1.0 > mean"
    for system in ("dropout=0.1", "availability=0.5", "deadline=3", "stragglers=0.5"):
        with pytest.raises(SpecError, match="dp/ldp"):
            RunSpec(**SMALL, strategy=dp, system=system)
    kept = RunSpec(**SMALL, strategy=dp, system="stragglers=0.5", partial_work="keep")
    assert kept.partial_work == "keep"


def test_arrival_seconds_follow_the_formula_and_speeds_their_distribution() -> None:
    from velocity.federation import arrival_seconds

    got = arrival_seconds(
        np.array([100, 300]), 4000, 1000.0, np.array([1.0, 2.0]), np.array([8.0, 1.0]), 50.0
    )
    expected = [5000 * 8 / 8e6 + 100 / 50, 5000 * 8 / 1e6 + 300 / 100]
    np.testing.assert_allclose(got, expected)
    model = SystemModel(canonical_system({"speed_sigma": 0.8}), seed=5, num_clients=4000)
    logs = np.log(model.speeds())
    assert abs(logs.mean()) < 0.05 and abs(logs.std() - 0.8) < 0.05  # LogNormal(0, sigma)
