"""Experiment files: [shared]/[[runs]]/[matrix] expansion, generated names, baselines, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from velocity.cli import main
from velocity.errors import InputError, SpecError
from velocity.experiment import (
    expand_experiment,
    load_experiment,
    name_slug,
    specs_from_flags,
    split_spec_list,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHARED = {"model": "logreg", "rounds": 2, "num_clients": 5, "byzantine": 1}


@pytest.fixture(autouse=True)
def _private_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOCITY_STORE", str(tmp_path / "runs.db"))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_matrix_expands_to_the_cartesian_product_with_readable_names() -> None:
    specs = expand_experiment(
        {
            "shared": SHARED,
            "matrix": {"strategy": ["fedavg", "krum:f=1"], "partition": ["iid"], "seeds": 2},
        },
        "x.toml",
    )
    assert [s.name for s in specs] == [
        "fedavg__iid__s0",
        "fedavg__iid__s1",
        "krum-f1__iid__s0",
        "krum-f1__iid__s1",
    ]
    assert [s.seed for s in specs] == [0, 1, 0, 1]
    aggregator = specs[2].strategy["aggregator"]
    assert aggregator["type"] == "krum" and aggregator["f"] == 1
    assert len({s.fingerprint for s in specs}) == 4


def test_seed_list_and_shared_values_apply_to_every_run() -> None:
    specs = expand_experiment({"shared": SHARED, "matrix": {"seeds": [3, 7]}}, "x.toml")
    assert [(s.name, s.seed, s.rounds) for s in specs] == [("s3", 3, 2), ("s7", 7, 2)]


def test_sweeping_attack_adds_one_no_attack_baseline_per_strategy_and_seed() -> None:
    specs = expand_experiment(
        {
            "shared": SHARED,
            "matrix": {
                "strategy": ["fedavg", "median"],
                "attack": ["sign_flip", "alie"],
                "seeds": 2,
            },
        },
        "x.toml",
    )
    names = [s.name for s in specs]
    assert names[:6] == [
        "fedavg__none__s0",
        "fedavg__none__s1",
        "fedavg__sign_flip__s0",
        "fedavg__sign_flip__s1",
        "fedavg__alie__s0",
        "fedavg__alie__s1",
    ]
    assert len(names) == len(set(names)) == 12
    baselines = [s for s in specs if "__none__" in s.name]
    assert len(baselines) == 4
    assert all(s.attacks == [] and s.byzantine == 0 for s in baselines)
    attacked = [s for s in specs if "__none__" not in s.name]
    assert all(s.attacks and s.byzantine == 1 for s in attacked)


@pytest.mark.parametrize(
    "attacks", [["none", "sign_flip"], ["sign_flip", "none"], ["alie", "none", "sign_flip"]]
)
def test_an_explicit_none_in_the_attack_list_is_not_duplicated(attacks: list[str]) -> None:
    # The generated baseline and the listed "none" are one run, whichever comes first.
    specs = expand_experiment(
        {"shared": SHARED, "matrix": {"strategy": ["fedavg", "median"], "attack": attacks}},
        "x.toml",
    )
    names = [s.name for s in specs]
    assert len(names) == len(set(names)) == 2 * len(attacks)
    for strategy in ("fedavg", "median"):
        baseline = next(s for s in specs if s.name == f"{strategy}__none")
        assert baseline.attacks == [] and baseline.byzantine == 0
        assert {f"{strategy}__{a}" for a in attacks} <= set(names)


def test_an_explicit_none_with_seeds_keeps_one_baseline_per_seed() -> None:
    specs = expand_experiment(
        {"shared": SHARED, "matrix": {"attack": ["alie", "none"], "seeds": 2}}, "x.toml"
    )
    assert [s.name for s in specs] == ["none__s0", "none__s1", "alie__s0", "alie__s1"]


def test_a_none_run_differing_from_the_baseline_is_still_a_duplicate_name() -> None:
    # Two generated baselines with one name but different configs are not the same run.
    with pytest.raises(SpecError, match="duplicate run name 'x__none'"):
        expand_experiment(
            {
                "shared": SHARED,
                "runs": [{"name": "x", "lr": 0.1}, {"name": "x", "lr": 0.2}],
                "matrix": {"attack": ["alie"]},
            },
            "x.toml",
        )


def test_matrix_applies_on_top_of_every_explicit_run_and_overrides_win() -> None:
    specs = expand_experiment(
        {
            "shared": SHARED,
            "runs": [{"name": "small", "lr": 0.01}, {"name": "big", "lr": 0.1}],
            "matrix": {"seeds": 2},
        },
        "x.toml",
        overrides={"rounds": 4},
    )
    assert [(s.name, s.lr, s.rounds) for s in specs] == [
        ("small__s0", 0.01, 4),
        ("small__s1", 0.01, 4),
        ("big__s0", 0.1, 4),
        ("big__s1", 0.1, 4),
    ]


def test_shared_and_runs_file_without_matrix_keeps_run_names() -> None:
    specs = load_experiment(EXAMPLES / "quickstart.toml")
    assert [s.name for s in specs] == ["fedavg-mlp"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[matrix]\nstratgy = ['fedavg']\n",
            "matrix.stratgy: unknown key; did you mean 'strategy'",
        ),
        ("[matrix]\nstrategy = 'fedavg'\n", "matrix.strategy: must be a list of values"),
        ("[matrix]\nstrategy = []\n", "matrix.strategy: empty list"),
        ("[matrix]\n", "[matrix] is empty"),
        ("[matrix]\nseeds = 0\n", "seeds must be a count N > 0"),
        ("[matrix]\nseeds = [1, 1]\n", "seeds must be distinct"),
        ("[matrix]\nseed = [1, 2]\n", "use 'seeds'"),
        (
            "[matrix]\nlr = ['fast']\n",
            "matrix.lr = 'fast': lr: expected a number, got the string 'fast'",
        ),
        ("[shared]\nrounds = 'many'\n", "shared: rounds: expected a number, got the string 'many'"),
        ("[shared]\nrouns = 3\n", "rouns: unknown key; did you mean 'rounds'?"),
        ("[sweep]\nx = 1\n", "unknown top-level key 'sweep'"),
        ("[[runs]]\nname = 'a'\n[[runs]]\nname = 'a'\n", "duplicate run name 'a'"),
        (
            "[matrix]\nstrategy = ['krum:f=1', 'krum:f=1']\n",
            "duplicate run name 'krum-f1'",
        ),
        ("[matrix]\nattack = ['sign_flip']\n", "attacks need malicious clients"),
    ],
)
def test_bad_experiment_files_give_one_line_naming_file_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_experiment(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_cli_reports_bad_toml_with_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "[matrix]\nstrategy = []\n")
    out = tmp_path / "out"
    code = main(["sweep", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "matrix.strategy" in err
    assert not out.exists()
    assert not (tmp_path / "runs.db").exists()


def test_invalid_toml_syntax_is_an_input_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "[matrix\n")
    with pytest.raises(InputError, match="invalid TOML"):
        load_experiment(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fedavg,krum:f=2", ["fedavg", "krum:f=2"]),
        ("krum:f=2,m=3", ["krum:f=2,m=3"]),
        ("FedAvg,krum:f=2,m=3,median", ["FedAvg", "krum:f=2,m=3", "median"]),
        ("krum:f=2;trimmed_mean:k=1", ["krum:f=2", "trimmed_mean:k=1"]),
        ("nnm:f=2,x=1 > krum:f=2,median", ["nnm:f=2,x=1 > krum:f=2", "median"]),
        ("sign_flip:scale=10,alie", ["sign_flip:scale=10", "alie"]),
    ],
)
def test_split_spec_list_splits_only_between_specs(text: str, expected: list[str]) -> None:
    assert split_spec_list(text) == expected


def test_split_spec_list_rejects_empty_entries() -> None:
    with pytest.raises(SpecError, match="--strategies: empty entry"):
        split_spec_list("fedavg,,median", "--strategies")


def test_name_slug_is_a_safe_folder_name() -> None:
    assert name_slug("strategy", "nnm:f=2 > trimmed_mean:k=2") == "nnm-f2+trimmed_mean-k2"
    assert name_slug("strategy", {"type": "krum", "f": 2}) == "krum-f2"
    assert name_slug("lr", 0.1) == "lr0.1"
    assert name_slug("attack", "none") == "none"
    assert name_slug("dataset", "npz:path=/data/x.npz") == "npz-path-data-x.npz"


def test_specs_from_flags_match_the_equivalent_matrix() -> None:
    flags = specs_from_flags(
        strategies=["fedavg", "krum:f=1"], attacks=["sign_flip"], seeds=2, shared=SHARED
    )
    matrix = expand_experiment(
        {
            "shared": SHARED,
            "matrix": {"strategy": ["fedavg", "krum:f=1"], "attack": ["sign_flip"], "seeds": 2},
        },
        "x",
    )
    assert [(s.name, s.fingerprint) for s in flags] == [(s.name, s.fingerprint) for s in matrix]
    assert flags[0].name == "fedavg__none__s0"


def test_owned_examples_parse() -> None:
    for path in sorted(EXAMPLES.glob("*.toml")):
        if path.name in ("quickstart.toml", "attack_arena.toml"):
            continue
        specs = load_experiment(path)
        assert specs, path
        assert len({s.name for s in specs}) == len(specs)


def test_a_flat_file_of_run_fields_is_one_run_named_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fedavg-digits.toml"
    path.write_text('dataset = "digits"\nmodel = "logreg"\nrounds = 4\nbatch_size = 16\n')
    (spec,) = load_experiment(path)
    assert spec.name == "fedavg-digits"
    assert (spec.rounds, spec.batch_size, spec.model["type"]) == (4, 16, "logreg")
    # Flags still override, the same loader serves run and sweep.
    (overridden,) = load_experiment(path, {"rounds": 2}, matrix=False)
    assert overridden.rounds == 2 and overridden.name == "fedavg-digits"


def test_a_flat_file_keeps_its_own_name_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(
        'name = "mine"\nattack = "sign_flip"\nbyzantine = 1\n[model]\ntype = "logreg"\n'
    )
    (spec,) = load_experiment(path)
    assert spec.name == "mine" and spec.model == {"type": "logreg"}
    assert spec.attacks[0]["type"] == "sign_flip"


def test_an_unusable_file_name_falls_back_to_the_default_run_name(tmp_path: Path) -> None:
    path = tmp_path / "plugins.toml"  # a name the sweep folder reserves for itself
    path.write_text("rounds = 2\n")
    assert load_experiment(path)[0].name == "run"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rounds = 3\nbatch_sze = 4\n",
            "unknown top-level key 'batch_sze'; did you mean 'batch_size'?",
        ),
        ("[matrx]\nrounds = [1]\n", "unknown top-level key 'matrx'; did you mean '[matrix]'?"),
        ("rounds = 0\n", "exp.toml: rounds: Input should be greater than 0"),
        ("rounds = 3\n[shared]\nlr = 0.1\n", "a run field beside tables belongs in [shared]"),
    ],
)
def test_flat_file_errors_name_the_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_experiment(path)
    assert expected in str(info.value) and str(path) in str(info.value)


def test_velocity_run_and_sweep_accept_a_flat_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "quick.toml"
    path.write_text('model = "logreg"\nrounds = 2\nnum_clients = 4\n')
    assert main(["run", str(path), "--json"]) == 0
    assert '"name": "quick"' in capsys.readouterr().out
    out = tmp_path / "sweep"
    assert main(["sweep", str(path), "--out", str(out), "--parallel", "1"]) == 0
    assert (out / "quick" / "summary.json").is_file()
