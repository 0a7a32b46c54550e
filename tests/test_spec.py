"""RunSpec validation, canonical JSON, fingerprints and TOML loading."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from velocity.errors import InputError, SpecError
from velocity.experiment import load_experiment
from velocity.spec import RunSpec, spec_from_mapping


def test_defaults_are_filled_and_spellings_do_not_change_identity() -> None:
    a = spec_from_mapping({"model": "mlp", "partition": "dirichlet"})
    b = spec_from_mapping(
        {"model": {"type": "MLP", "hidden": 64}, "partition": "dirichlet:alpha=0.5"}
    )
    assert a.canonical_json() == b.canonical_json()
    assert a.fingerprint == b.fingerprint
    assert a.clients_per_round == a.num_clients
    assert a.model == {"type": "mlp", "hidden": "64"}


def test_fingerprint_ignores_name_but_not_config_and_round_trips() -> None:
    a = spec_from_mapping({"name": "a", "lr": 0.1})
    assert a.fingerprint == spec_from_mapping({"name": "b", "lr": 0.1}).fingerprint
    assert a.fingerprint != spec_from_mapping({"lr": 0.2}).fingerprint
    assert spec_from_mapping(a.canonical()).canonical_json() == a.canonical_json()
    s0, s1 = spec_from_mapping({"seed": 0}), spec_from_mapping({"seed": 1})
    assert s0.fingerprint != s1.fingerprint
    assert s0.fingerprint_without_seed == s1.fingerprint_without_seed


def test_spec_is_frozen_and_rejects_unknown_fields() -> None:
    spec = RunSpec()
    with pytest.raises(ValidationError):
        spec.rounds = 3  # type: ignore[misc]
    with pytest.raises(SpecError, match="did you mean 'rounds'"):
        spec_from_mapping({"roudns": 3})


def test_fedprox_preset_moves_mu_to_the_client_side() -> None:
    spec = spec_from_mapping({"strategy": "FedProx:mu=0.1"})
    assert spec.mu == 0.1
    assert spec.strategy["aggregator"]["type"] == "mean"
    with pytest.raises(SpecError, match="give it once"):
        spec_from_mapping({"strategy": "fedprox:mu=0.1", "mu": 0.2})
    # the preset's default mu yields to the run's explicit mu, 0 included
    assert spec_from_mapping({"strategy": "fedprox", "mu": 0}).mu == 0.0
    assert spec_from_mapping({"strategy": "fedprox", "mu": 0.3}).mu == 0.3
    assert spec_from_mapping({"strategy": "fedprox"}).mu == 0.01


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"rounds": 0}, "rounds: Input should be greater than 0"),
        ({"num_clients": -1}, "num_clients: Input should be greater than 0"),
        ({"clients_per_round": 11}, "clients_per_round (11) must be <= num_clients (10)"),
        ({"dataset": "mnist"}, "unknown dataset 'mnist'; available: breast_cancer"),
        ({"model": "cnn"}, "unknown model 'cnn'; available: logreg, mlp"),
        ({"partition": "dirichlet:alpha=-1"}, "parameter 'alpha' must be a number > 0, got -1"),
        ({"strategy": "nosuch"}, "strategy: unknown strategy 'nosuch'"),
        ({"strategy": "krum:f=-1"}, "strategy: aggregator 'krum': parameter 'f' must be"),
        ({"num_clients": "7"}, "num_clients: expected a number, got the string '7'"),
        ({"lr": "fast"}, "lr: expected a number, got the string 'fast'"),
        ({"momentum": 1.0}, "momentum: Input should be less than 1"),
        ({"name": "../evil"}, "run names use letters"),
        ({"partition": "natural"}, "partition 'natural' needs a dataset with its own clients"),
    ],
)
def test_bad_values_name_field_and_allowed(data: dict, needle: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_mapping(data, "exp.toml: shared")
    assert str(info.value).startswith("exp.toml: shared: ")
    assert needle in str(info.value)


def test_toml_shared_defaults_runs_override(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(
        '[shared]\nrounds = 3\nmodel = "logreg"\n\n'
        '[[runs]]\nname = "a"\n\n[[runs]]\nname = "b"\nrounds = 5\nmodel = "mlp:hidden=8"\n'
    )
    a, b = load_experiment(path, matrix=False)
    assert (a.rounds, a.model["type"]) == (3, "logreg")
    assert (b.rounds, b.model) == (5, {"type": "mlp", "hidden": "8"})
    overridden = load_experiment(tmp_path / "exp.toml", {"rounds": 2}, matrix=False)
    assert [s.rounds for s in overridden] == [2, 2]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[shared]\nrounds = 'x'\n", "exp.toml: shared: rounds: expected a number"),
        ("[shared]\nrnds = 3\n", "exp.toml: shared: rnds: unknown key; did you mean 'rounds'"),
        ("[[runs]]\nlr = 0\n", "exp.toml: runs[0]: lr: Input should be greater than 0"),
        ("[matrx]\n", "unknown top-level key 'matrx'"),
        ("[shared\n", "exp.toml: invalid TOML"),
        ('[[runs]]\nname="x"\n[[runs]]\nname="x"\n', "duplicate run name 'x'"),
    ],
)
def test_bad_toml_gives_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_experiment(path, matrix=False)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_a_boolean_where_a_number_belongs_is_rejected() -> None:
    with pytest.raises(SpecError, match="lr: expected a number, got true"):
        spec_from_mapping({"lr": True})
    with pytest.raises(SpecError, match="rounds: expected a number, got false"):
        spec_from_mapping({"rounds": False})


def test_non_utf8_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b"\xff\xfe[shared]\n")
    with pytest.raises(InputError, match="not a UTF-8 text file"):
        load_experiment(path, matrix=False)
    with pytest.raises(InputError, match="not a file"):
        load_experiment(tmp_path, matrix=False)  # a folder, not a file
