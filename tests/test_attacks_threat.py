"""The threat model: fixed malicious set, data poisoning copies, per-round records, sybils."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from velocity.artifacts import read_rounds_csv, rounds_csv_text
from velocity.attacks import draw_malicious_clients
from velocity.attacks.model_poisoning import alie_default_z
from velocity.errors import InputError, SpecError
from velocity.records import TIMING_METRICS, rounds_columns
from velocity.seeds import child_rng
from velocity.simulation import build_threat_model, run_simulation, validate_run
from velocity.spec import spec_from_mapping

BASE = {"dataset": "digits", "num_clients": 10, "rounds": 3, "byzantine": 0.3}


def _threat(**fields: object) -> tuple:
    spec = spec_from_mapping({**BASE, **fields})
    setup = validate_run(spec)
    return spec, setup, build_threat_model(spec, setup.data, setup.clients, setup.model)


def test_malicious_clients_come_from_the_seed_tree() -> None:
    first = draw_malicious_clients(3, 20, 4)
    np.testing.assert_array_equal(first, draw_malicious_clients(3, 20, 4))
    assert len(set(first.tolist())) == 4 and np.all(np.diff(first) > 0)
    assert first.max() < 20
    others = {tuple(draw_malicious_clients(s, 20, 4)) for s in range(10)}
    assert len(others) > 1
    _, _, threat = _threat(attack="sign_flip", seed=3, num_clients=20, byzantine=4)
    np.testing.assert_array_equal(threat.malicious_clients, first)


def test_poison_data_returns_copies_changing_only_malicious_samples() -> None:
    _, setup, threat = _threat(attack="label_flip")
    X, y = setup.data.X_train, setup.data.y_train
    X0, y0 = X.copy(), y.copy()
    X_out, y_out = threat.poison_data(X, y)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)
    owned = threat.malicious_samples()
    honest = np.setdiff1d(np.arange(len(y)), owned)
    np.testing.assert_array_equal(y_out[honest], y[honest])
    np.testing.assert_array_equal(y_out[owned], 9 - y[owned])
    np.testing.assert_array_equal(X_out, X)


def test_backdoor_poisons_the_fraction_of_each_malicious_clients_own_samples() -> None:
    # Non-IID shards give the malicious clients different sample counts.
    spec, setup, threat = _threat(
        attack="backdoor:fraction=0.1", partition="dirichlet:alpha=0.3", num_clients=10
    )
    X, y = setup.data.X_train, setup.data.y_train
    X_out, y_out = threat.poison_data(X, y)
    stamped = np.all(X_out[:, 60:] == 3.0, axis=1) & ~np.all(X[:, 60:] == 3.0, axis=1)
    sizes = []
    for client in threat.malicious_clients:
        rows = setup.clients[int(client)]
        sizes.append(len(rows))
        expected = max(int(np.floor(0.1 * len(rows) + 0.5)), 1)
        assert stamped[rows].sum() == expected, (client, len(rows))
        assert np.all(y_out[rows][stamped[rows]] == 0)
        # The client's choice comes from its own seed-tree child, not from a pooled draw.
        entry, params = threat.data_attacks[0].entry, threat.data_attacks[0].params
        X_own, _ = entry.obj(
            X[rows],
            y[rows],
            child_rng(spec.seed, "attack", "data", int(client), 0),
            shared_rng=child_rng(spec.seed, "attack", "data", "shared", 0),
            num_classes=10,
            **params,
        )
        np.testing.assert_array_equal(X_out[rows], X_own)
    assert len(set(sizes)) > 1  # the check covers clients of different sizes
    assert stamped.sum() == stamped[threat.malicious_samples()].sum()


def test_label_flip_derangement_is_one_mapping_shared_by_every_malicious_client() -> None:
    _, setup, threat = _threat(attack="label_flip:mapping=derangement")
    y = setup.data.y_train
    _, y_out = threat.poison_data(setup.data.X_train, y)
    owned = threat.malicious_samples()
    mapping = {int(a): int(b) for a, b in zip(y[owned], y_out[owned], strict=True)}
    pairs = {(int(a), int(b)) for a, b in zip(y[owned], y_out[owned], strict=True)}
    assert len(pairs) == len(mapping) == 10  # every class, one image each
    assert all(a != b for a, b in mapping.items())


def test_poison_updates_replaces_only_sampled_malicious_rows() -> None:
    _, _, threat = _threat(attack="sign_flip:scale=2")
    ids = np.arange(10)
    updates = np.random.default_rng(0).normal(size=(10, 5)).astype(np.float32)
    weights = np.full(10, 50.0)
    before = updates.copy()
    out, w, record = threat.poison_updates(updates, weights, ids, 1)
    np.testing.assert_array_equal(updates, before)
    np.testing.assert_array_equal(w, weights)
    bad = np.isin(ids, threat.malicious_clients)
    np.testing.assert_array_equal(out[~bad], updates[~bad])
    np.testing.assert_allclose(out[bad], -2 * updates[bad])
    assert record["num_malicious"] == 3
    assert record["malicious"] == json.dumps(threat.malicious_clients.tolist())
    # A round without malicious clients: nothing changes, the columns are still there.
    honest_ids = np.setdiff1d(ids, threat.malicious_clients)[:4]
    out, _, record = threat.poison_updates(updates[:4], weights[:4], honest_ids, 2)
    np.testing.assert_array_equal(out, updates[:4])
    assert record == {"num_malicious": 0, "malicious": "[]"}


def test_records_keep_the_same_columns_and_map_rows_to_client_ids() -> None:
    _, _, threat = _threat(attacks=["mimic", "sybil:count=2"])
    honest_ids = np.setdiff1d(np.arange(10), threat.malicious_clients)
    ids = np.sort(np.r_[threat.malicious_clients[:2], honest_ids[:4]])
    updates = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    weights = np.arange(1.0, 7.0)
    bad = np.isin(ids, threat.malicious_clients)
    out, w, record = threat.poison_updates(updates, weights, ids, 1)
    assert set(record) == {"num_malicious", "malicious", "mimic_target"}
    assert record["mimic_target"] in ids[~bad].tolist()
    target_row = int(np.flatnonzero(ids == record["mimic_target"])[0])
    assert out.shape == (6 + 2, 4) and len(w) == 8
    np.testing.assert_array_equal(out[:6][bad], np.repeat(updates[[target_row]], 2, 0))
    np.testing.assert_array_equal(out[:6][~bad], updates[~bad])
    np.testing.assert_array_equal(out[6:], np.repeat(updates[[target_row]], 2, 0))
    np.testing.assert_array_equal(w[:6], weights)
    assert np.all(w[6:] == weights[np.flatnonzero(bad)[0]])
    _, _, none_record = threat.poison_updates(updates[~bad], weights[~bad], ids[~bad], 2)
    assert set(none_record) == set(record) and none_record["mimic_target"] is None


def test_same_attack_twice_gets_numbered_columns() -> None:
    _, _, threat = _threat(attacks=["alie", "alie:z=2"])
    updates = np.ones((10, 3), dtype=np.float32)
    _, _, record = threat.poison_updates(updates, np.ones(10), np.arange(10), 1)
    assert record["alie1_z"] == pytest.approx(alie_default_z(10, 3))
    assert record["alie2_z"] == 2.0


def test_runs_record_malicious_clients_and_attack_columns_every_round(tmp_path: Path) -> None:
    spec = spec_from_mapping(
        {
            **BASE,
            "clients_per_round": 3,  # seed 0: 1, 0, 1, 2 malicious clients in rounds 1-4
            "rounds": 4,
            "eval_every": 2,
            "attacks": ["backdoor", "scaling"],
        }
    )
    result = run_simulation(spec)
    assert result.status == "complete", result.error
    keys = {frozenset(r) for r in result.rounds}
    assert len(keys) == 1
    first = result.rounds[0]
    for column in ("num_malicious", "malicious", "scaling_factor", "attack_success_rate"):
        assert column in first
    for record in result.rounds:
        ids = json.loads(record["malicious"])
        assert len(ids) == record["num_malicious"]
        assert set(ids) <= set(draw_malicious_clients(0, 10, 3).tolist())
        assert (record["scaling_factor"] is None) == (record["num_malicious"] == 0)
        evaluated = record["round"] % 2 == 0
        assert (record["attack_success_rate"] is not None) == evaluated
        assert (record["test_accuracy"] is not None) == evaluated
    assert [r["num_malicious"] for r in result.rounds] == [1, 0, 1, 2]
    # One or several ids, or none: the column stays a string through rounds.csv.
    path = tmp_path / "rounds.csv"
    path.write_text(rounds_csv_text(result.rounds, rounds_columns(result.rounds)))
    read_back = [r["malicious"] for r in read_rounds_csv(path)]
    assert read_back == [r["malicious"] for r in result.rounds]
    assert all(isinstance(v, str) for v in read_back)


def test_attacked_runs_are_deterministic() -> None:
    spec = spec_from_mapping({**BASE, "attacks": ["minmax"], "rounds": 2})
    first, second = run_simulation(spec), run_simulation(spec)

    def strip(rounds: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in TIMING_METRICS} for r in rounds]

    assert strip(first.rounds) == strip(second.rounds)
    np.testing.assert_array_equal(first.final_params, second.final_params)
    assert first.rounds[0]["minmax_gamma"] > 0


def test_bad_attack_specs_fail_before_any_round() -> None:
    with pytest.raises(SpecError, match="unknown attack 'flip'"):
        spec_from_mapping({**BASE, "attack": "flip"})
    with pytest.raises(SpecError, match="parameter 'scale'"):
        spec_from_mapping({**BASE, "attack": "sign_flip:scale=-1"})
    spec = spec_from_mapping({**BASE, "attack": "targeted_label_flip:source=12"})
    with pytest.raises(InputError, match=r"'source' must be a class in 0\.\.9"):
        run_simulation(spec)
