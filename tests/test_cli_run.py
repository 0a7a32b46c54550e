"""`velocity run`, `version` and `datasets` through the real console entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from velocity.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_run_json_output_is_pure_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--rounds", "2", "--model", "logreg", "--num-clients", "4", "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload[0]["status"] == "complete"
    assert [r["round"] for r in payload[0]["rounds"]] == [1, 2]
    assert 0 <= payload[0]["final"]["test_accuracy"] <= 1


def test_run_quickstart_file_prints_round_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(ROOT / "examples" / "quickstart.toml"), "--rounds", "3"]) == 0
    out = capsys.readouterr().out
    assert "fedavg-mlp: complete" in out and "test_acc" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--rounds", "0"], "rounds: Input should be greater than 0"),
        (["run", "--dataset", "mnist"], "unknown dataset 'mnist'; available:"),
        (["run", "--partition", "zipf"], "unknown partition 'zipf'; available:"),
        (["run", "--model", "cnn"], "unknown model 'cnn'"),
        (["run", "--strategy", "fedfoo"], "unknown strategy 'fedfoo'"),
        (["run", "--num-clients", "3", "--clients-per-round", "5"], "must be <= num_clients"),
        (["run", "missing.toml"], "missing.toml: file not found"),
        (["run", "--rounds", "x"], "Invalid value for '--rounds'"),
        (["run", "--no-such-flag"], "No such option: --no-such-flag"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_misspelled_toml_key_names_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "exp.toml"
    spec.write_text("[shared]\nlocal_epoch = 2\n")
    assert main(["run", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{spec}: shared: local_epoch: unknown key; did you mean 'local_epochs'" in err


def test_console_script_exit_code_and_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "velocity", "run", "--lr", "-1"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "lr: Input should be greater than 0" in proc.stderr


def test_version_and_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version", "--json"]) == 0
    assert "velocity" in json.loads(capsys.readouterr().out)
    assert main(["datasets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows["digits"]["samples"], rows["digits"]["features"], rows["digits"]["classes"]) == (
        1797,
        64,
        10,
    )
    assert rows["npz"]["samples"] is None


def test_bad_data_in_a_later_run_stops_before_anything_runs_or_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "exp.toml"
    spec.write_text(
        '[shared]\nrounds = 1\nmodel = "logreg"\n\n[[runs]]\nname = "good"\n\n'
        f'[[runs]]\nname = "bad"\ndataset = "npz:path={tmp_path / "missing.npz"}"\n'
    )
    store = tmp_path / "store.db"
    assert main(["run", str(spec), "--store", str(store)]) == 2
    captured = capsys.readouterr()
    assert "missing.npz: file not found" in captured.err and "good" not in captured.out
    assert not store.exists()
