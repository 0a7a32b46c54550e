"""No wrong numbers, through the real CLI: diverged runs have no accuracy and rank last, names
that spell non-finite numbers stay names, one rule for numeric fields, case-insensitive names."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from velocity.artifacts import decode_floats_at, read_json, read_rounds_csv
from velocity.cli import main
from velocity.errors import InputError, SpecError
from velocity.models import MLP
from velocity.spec import RunSpec, spec_from_mapping
from velocity.sweeps import run_sweep

BASE = 'dataset = "digits"\nmodel = "logreg"\nnum_clients = 4\nrounds = 2\n'
DIVERGES = {"model": "mlp:hidden=8", "lr": 1e6, "momentum": 0.0}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VELOCITY_STORE", str(tmp_path / "store.db"))


# ----------------------------------------------------------------------------- diverged runs


@pytest.mark.parametrize("shape", [(), (8,), (16, 4)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 3e38])
def test_scores_that_are_not_finite_have_no_accuracy(shape: tuple[int, ...], bad: float) -> None:
    model = MLP(5, 3, shape)
    params = model.init(np.random.default_rng(0))
    X = np.random.default_rng(1).normal(size=(30, 5)).astype(np.float32)
    y = np.zeros(30, dtype=np.int64)  # argmax of NaN scores is class 0: all "right"
    loss, accuracy = model.evaluate(params, X, y)
    assert math.isfinite(loss) and 0 <= accuracy <= 1
    params[:] = np.float32(bad)
    with np.errstate(all="ignore"):
        loss, accuracy = model.evaluate(params, X, y)
    assert math.isnan(accuracy)


def test_a_diverged_run_has_no_accuracy_and_ranks_last(capsys: pytest.CaptureFixture[str]) -> None:
    lr = DIVERGES["lr"]
    Path("exp.toml").write_text(
        f"[shared]\n{BASE}\n"
        '[[runs]]\nname = "weak"\nlr = 0.0001\nrounds = 1\n'  # complete, but barely trained
        'model = "logreg:init=glorot_uniform"\n\n'  # from zeros even one tiny step ranks well
        '[[runs]]\nname = "good"\n\n'
        f'[[runs]]\nname = "blowup"\nmodel = "mlp:hidden=8"\nlr = {lr}\nmomentum = 0.0\n'
        'eval_every = 5\nrounds = 6\nattack = "backdoor:target=0"\nbyzantine = 1\n'
    )
    assert main(["sweep", "exp.toml", "--out", "out", "--parallel", "2"]) == 0
    capsys.readouterr()
    summary = read_json(Path("out/blowup/summary.json"), (("final",), ("best",)))
    assert summary["status"] == "diverged"
    final = summary["final"]
    # Not the test share of class 0 (argmax of NaN), and neither is the backdoor's success.
    assert math.isnan(final["test_accuracy"]) and math.isnan(final["attack_success_rate"])
    rounds = read_rounds_csv(Path("out/blowup/rounds.csv"))
    last = rounds[-1]
    # The diverged round was not an evaluation round (eval_every=5): it is evaluated anyway,
    # and its attack records are there.
    assert last["round"] < 5 and math.isnan(last["attack_success_rate"])
    assert last["num_malicious"] == 1
    comparison = json.loads(Path("out/comparison.json").read_text())
    weak = read_json(Path("out/weak/summary.json"), (("final",),))["final"]["test_accuracy"]
    assert comparison["ranking"] == ["good", "weak", "blowup"]
    assert weak < 0.5  # the complete run ranks above the diverged one, whatever its accuracy
    groups = {g["label"]: g for g in comparison["groups"]}
    assert groups["blowup"]["diverged"] == 1 and groups["good"]["diverged"] == 0
    markdown = Path("out/comparison.md").read_text()
    assert markdown.index("| blowup |") > markdown.index("| weak |")
    assert "1 (1 diverged)" in markdown
    assert main(["leaderboard", "--sweep", "out", "--json"]) == 0
    board = json.loads(capsys.readouterr().out)
    assert [row["label"] for row in board["rows"]][-1] == "blowup"
    assert board["rows"][-1]["extra"]["diverged"] == 1


@pytest.mark.parametrize("metric", ["wall-clock", "comm-cost", "rounds-to-target", "pareto"])
def test_a_diverged_configuration_ranks_last_for_every_metric(metric: str, tmp_path: Path) -> None:
    specs = [
        spec_from_mapping(
            {
                "dataset": "digits",
                "model": "logreg",
                "num_clients": 4,
                "rounds": 3,
                "name": "steady",
            }
        ),
        spec_from_mapping(
            {"dataset": "digits", "num_clients": 4, "rounds": 3, "name": "blowup", **DIVERGES}
        ),
    ]
    run_sweep(specs, tmp_path / "out", parallel=1)
    from velocity.api import leaderboard

    board = leaderboard(tmp_path / "out", metric=metric, target=0.5)
    labels = [row.label for row in board.rows]
    # The diverged run stopped early: cheaper and faster, but it never ranks first.
    assert labels[-1] == "blowup", labels
    text_board = board.rows[-1].extra
    assert text_board["diverged"] == 1


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("names", [["NaN", "Infinity"], ["nan", "inf", "Infinity1"], ["NaN", "e1"]])
def test_runs_named_like_non_finite_numbers_survive_the_whole_loop(
    names: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    runs = "".join(
        f'[[runs]]\nname = "{n}"\nlr = {0.05 + 0.01 * i}\n\n' for i, n in enumerate(names)
    )
    Path("exp.toml").write_text(f"[shared]\n{BASE}\n{runs}")
    assert main(["sweep", "exp.toml", "--out", "out", "--parallel", "1"]) == 0
    assert main(["sweep", "--resume", "out"]) == 0  # the folder reads back
    assert main(["archive", "out", "-o", "a.zip"]) == 0
    assert main(["inspect", "a.zip", "--json"]) == 0
    capsys.readouterr()
    assert main(["inspect", "a.zip", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in info["runs"]] == names and info["verified"]
    assert main(["reproduce", "a.zip", "--out", "re", "--check", "--exact"]) == 0
    assert main(["leaderboard", "--sweep", "out", "--json"]) == 0
    capsys.readouterr()
    assert main(["runs", "--json"]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert sorted(r["name"] for r in stored) == sorted(names)
    assert main(["show", names[0], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spec"]["name"] == names[0]


def test_non_finite_markers_decode_only_where_numbers_are() -> None:
    doc = {"name": "NaN", "final": {"test_accuracy": "NaN", "malicious": "[]"}, "runs": ["NaN"]}
    out = decode_floats_at(doc, (("final",),))
    assert out["name"] == "NaN" and out["runs"] == ["NaN"] and out["final"]["malicious"] == "[]"
    assert math.isnan(out["final"]["test_accuracy"])
    nested = decode_floats_at(
        {"runs": [{"name": "NaN", "best": {"x": "-Infinity"}}]}, (("runs", "*", "best"),)
    )
    assert nested["runs"][0]["name"] == "NaN" and nested["runs"][0]["best"]["x"] == -math.inf


def test_a_csv_path_spelled_nan_stays_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    lines = ["a,b,label"] + [f"{i % 5},{i % 3},{'xy'[i % 2]}" for i in range(40)]
    Path("NaN").write_text("\n".join(lines) + "\n")
    assert (
        main(
            [
                "sweep",
                "--dataset",
                "csv:path=NaN",
                "--rounds",
                "1",
                "--num-clients",
                "2",
                "--out",
                "out",
                "--parallel",
                "1",
            ]
        )
        == 0
    )
    assert main(["archive", "out", "-o", "a.zip"]) == 0
    assert main(["inspect", "a.zip"]) == 0


# ----------------------------------------------------------------------------- one rule


@pytest.mark.parametrize(
    "field",
    [
        "byzantine",
        "lr",
        "momentum",
        "num_clients",
        "clients_per_round",
        "rounds",
        "batch_size",
        "seed",
        "mu",
        "weight_decay",
        "eval_every",
        "local_epochs",
    ],
)
def test_a_number_written_as_a_string_is_refused_for_every_field(
    field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = 'attack = "sign_flip"\n' if field == "byzantine" else ""
    base = "".join(line + "\n" for line in BASE.splitlines() if not line.startswith(field))
    Path("exp.toml").write_text(f'[shared]\n{base}{extra}{field} = "1"\n')
    assert main(["run", "exp.toml"]) == 2
    err = capsys.readouterr().err
    assert f"{field}: expected a number, got the string '1'" in err, err


def test_byzantine_as_a_string_is_refused_like_lr() -> None:
    with pytest.raises(SpecError, match=r"byzantine: expected a number, got the string '0\.2'"):
        spec_from_mapping({"byzantine": "0.2", "attack": "sign_flip"})
    with pytest.raises(SpecError, match=r"lr: expected a number, got the string '0\.1'"):
        spec_from_mapping({"lr": "0.1"})
    assert spec_from_mapping({"byzantine": 0.2, "attack": "sign_flip"}).byzantine == 2


@pytest.mark.parametrize("spelling", ["NONE", "None", "none", " none ", ""])
def test_no_attack_is_spelled_in_any_case(
    spelling: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--model", "logreg", "--rounds", "1", "--attack", spelling]) == 0
    assert RunSpec(attack=spelling).attacks == []
    assert RunSpec(attacks=[spelling]).attacks == []


def test_no_attack_in_an_attack_list_is_spelled_in_any_case(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["sweep", "--attacks", "NONE,sign_flip", "--byzantine", "1", "--rounds", "1"]
    assert main([*args, "--num-clients", "4", "--model", "logreg", "--out", "out"]) == 0
    manifest = json.loads(Path("out/manifest.json").read_text())
    assert manifest["runs"] == ["none", "sign_flip"]


# ----------------------------------------------------------------------------- case


@pytest.mark.parametrize(
    "runs",
    [
        '[[runs]]\nname = "Run1"\n\n[[runs]]\nname = "run1"\n',
        '[[runs]]\nname = "ALPHA"\n\n[[runs]]\nname = "alpha"\nlr = 0.1\n',
        '[[runs]]\nname = "A"\n\n[[runs]]\nname = "a"\n\n[matrix]\nlr = [0.1, 0.2]\n',
    ],
)
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_names_that_differ_only_in_case_are_refused_at_input(
    runs: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if command == "run" and "[matrix]" in runs:
        return  # velocity run takes no matrix
    Path("exp.toml").write_text(f"[shared]\n{BASE}\n{runs}")
    assert (
        main([command, "exp.toml", "--out", "out"] if command == "sweep" else [command, "exp.toml"])
        == 2
    )
    err = capsys.readouterr().err
    assert "differ only in case" in err and len(err.strip().splitlines()) == 1, err
    assert not Path("out").exists() and not Path("store.db").exists()


def test_a_sweep_of_runspecs_refuses_names_differing_in_case(tmp_path: Path) -> None:
    specs = [RunSpec(name="Run1", rounds=1), RunSpec(name="run1", rounds=1, lr=0.1)]
    with pytest.raises(InputError, match="'Run1' and 'run1' differ only in case"):
        run_sweep(specs, tmp_path / "out", parallel=1)
    assert not (tmp_path / "out").exists()
