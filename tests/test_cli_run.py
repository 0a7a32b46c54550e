"""`velocity run`, `version` and `datasets` through the real console entry point."""

from __future__ import annotations

import json
import re
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
    assert "fedavg-mlp: complete" in out


def _table_rows(out: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in out.splitlines()
        if line.startswith("│")
    ]


def _header(out: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith("┃"))
    return [cell.strip() for cell in line.strip("┃").split("┃")]


def test_table_and_json_use_the_same_metric_names(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "--rounds", "2", "--model", "logreg", "--num-clients", "4"]
    assert main(args) == 0
    header = _header(capsys.readouterr().out)
    assert "test_accuracy" in header and "test_acc" not in header
    assert main([*args, "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert set(header) <= set(record["rounds"][0])


def test_only_evaluated_rounds_are_shown_then_a_summary_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["run", "--rounds", "12", "--eval-every", "5", "--model", "logreg", "--target", "0.5"]
    assert main([*args, "--num-clients", "4"]) == 0
    out = capsys.readouterr().out
    assert [row[0] for row in _table_rows(out)] == ["5", "10", "12"]
    assert all(row[1] != "-" for row in _table_rows(out))
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("run: complete · final test_accuracy 0.")
    assert "(round 12)" in summary and "best 0." in summary
    assert "target 0.5 reached at round 5" in summary
    assert re.search(r"12 rounds in \d+\.\d s$", summary)


def test_a_long_run_shows_every_kth_round_with_the_best_and_the_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["run", "--rounds", "90", "--model", "logreg", "--num-clients", "4", "--json"]
    assert main(args) == 0
    (record,) = json.loads(capsys.readouterr().out)
    best_round = record["best"]["test_accuracy_round"]
    assert main(args[:-1]) == 0
    out = capsys.readouterr().out
    shown = [int(row[0]) for row in _table_rows(out) if row[0].isdigit()]
    assert len(shown) <= 22 and shown[0] == 1 and shown[-1] == 90 and best_round in shown
    assert shown[:4] == [1, 6, 11, 16]  # every 5th of 90 evaluated rounds
    assert "every 5th of 90 evaluated rounds" in " ".join(out.split())


def test_quiet_prints_only_the_summary_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "two.toml"
    spec.write_text(
        '[shared]\nrounds = 3\nmodel = "logreg"\nnum_clients = 4\n'
        '[[runs]]\nname = "a"\n[[runs]]\nname = "b"\nlr = 0.5\n'
    )
    assert main(["run", str(spec), "--quiet", "--target", "1.0"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["a", "b"]
    assert all("target 1 not reached" in line for line in lines)
    assert captured.err == ""


def test_bad_target_is_an_input_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--target", "1.5"]) == 2
    assert "--target must be an accuracy in (0, 1], got 1.5" in capsys.readouterr().err


def test_run_and_sweep_json_print_run_records_with_the_same_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--rounds", "2", "--model", "logreg", "--num-clients", "4"]
    assert main(["run", *flags, "--json"]) == 0
    run_records = json.loads(capsys.readouterr().out)
    out = tmp_path / "sweep"
    sweep = ["sweep", "--strategies", "fedavg,median", *flags, "--out", str(out), "--json"]
    assert main([*sweep, "--parallel", "1"]) == 0
    sweep_records = json.loads(capsys.readouterr().out)
    assert isinstance(run_records, list) and isinstance(sweep_records, list)
    assert [r["name"] for r in sweep_records] == ["fedavg", "median"]
    assert {frozenset(r) for r in run_records + sweep_records} == {frozenset(run_records[0])}
    assert run_records[0]["source"] is None and sweep_records[0]["source"] == str(out)
    for record in run_records + sweep_records:
        assert record["status"] == "complete" and record["rounds_completed"] == 2
        assert [r["round"] for r in record["rounds"]] == [1, 2]
        assert record["spec"]["rounds"] == 2 and record["target_accuracy"] == 0.9


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
    synthetic = rows["synthetic"]["description"]
    assert "generated per client" in synthetic and "per run client" not in synthetic


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
