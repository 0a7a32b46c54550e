"""Sweeps: the sweep directory contract, determinism across workers, failures, resume, the CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from velocity.artifacts import read_json, read_rounds_csv
from velocity.cli import main
from velocity.errors import InputError
from velocity.experiment import expand_experiment
from velocity.records import METRICS, TIMING_METRICS
from velocity.spec import RunSpec
from velocity.store import open_store
from velocity.sweepdir import read_sweep, sweep_specs
from velocity.sweeps import SweepResult, run_sweep

# One xdist worker runs this module, so the module-scoped sweeps are computed once.
pytestmark = pytest.mark.xdist_group("sweep")

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": "logreg", "rounds": 3, "num_clients": 4}
RUN_FILES = ("config.json", "rounds.csv", "summary.json")
SWEEP_FILES = ("manifest.json", "comparison.json", "comparison.md", "report.html")
PLOT_FILES = tuple(
    f"plots/{n}.{e}" for n in ("accuracy", "loss", "heatmap", "seeds") for e in ("png", "svg")
)


@pytest.fixture(autouse=True)
def _private_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOCITY_STORE", str(tmp_path / "runs.db"))


def mixed_specs() -> list[RunSpec]:
    """Complete, attacked (with its baseline), diverged and failed runs."""
    return expand_experiment(
        {
            "shared": TINY,
            "runs": [
                {"name": "fedavg__s0", "seed": 0},
                {"name": "fedavg__s1", "seed": 1},
                {"name": "fedavg__sign_flip__s0", "attack": "sign_flip", "byzantine": 1},
                {"name": "diverges", "model": "mlp:hidden=16", "lr": 1e4},
                {"name": "fails", "strategy": "krum:f=3"},
            ],
        },
        "test",
    )


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[int, SweepResult]:
    """The same mixed sweep with 2 workers and with 1 worker (runs finish in other orders)."""
    base = tmp_path_factory.mktemp("sweeps")
    results = {}
    for parallel in (2, 1):
        with open_store(base / f"store{parallel}.db") as store:
            results[parallel] = run_sweep(
                mixed_specs(),
                base / f"p{parallel}",
                parallel=parallel,
                store=store,
                command=["velocity", "sweep", "test"],
            )
    return results


def metric_columns_text(path: Path) -> str:
    """rounds.csv without the wall-clock columns, as text: compared byte for byte."""
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    keep = [i for i, c in enumerate(rows[0]) if c not in TIMING_METRICS]
    return "\n".join(",".join(row[i] for i in keep) for row in rows)


def test_sweep_directory_has_every_artifact(sweeps: dict[int, SweepResult]) -> None:
    out = sweeps[2].out_dir
    for name in (*SWEEP_FILES, *PLOT_FILES):
        assert (out / name).is_file(), name
    for spec in mixed_specs():
        for name in RUN_FILES:
            assert (out / spec.name / name).is_file(), (spec.name, name)
    assert not list(out.rglob(".*.tmp"))


def test_statuses_exit_code_and_errors(sweeps: dict[int, SweepResult]) -> None:
    result = sweeps[2]
    statuses = {name: r.status for name, r in result.results.items()}
    assert statuses == {
        "fedavg__s0": "complete",
        "fedavg__s1": "complete",
        "fedavg__sign_flip__s0": "complete",
        "diverges": "diverged",
        "fails": "failed",
    }
    assert result.exit_code == 1 and result.complete
    assert "krum" in (result.results["fails"].error or "")
    summary = read_json(result.out_dir / "fails" / "summary.json")
    assert summary["status"] == "failed" and "krum" in summary["error"]


def test_metrics_are_bit_identical_for_one_and_two_workers(
    sweeps: dict[int, SweepResult],
) -> None:
    one, two = sweeps[1].out_dir, sweeps[2].out_dir
    for spec in mixed_specs():
        assert metric_columns_text(one / spec.name / "rounds.csv") == metric_columns_text(
            two / spec.name / "rounds.csv"
        ), spec.name
        final_one = read_json(one / spec.name / "summary.json")["final"]
        final_two = read_json(two / spec.name / "summary.json")["final"]
        for key in TIMING_METRICS:
            final_one.pop(key, None)
            final_two.pop(key, None)
        assert json.dumps(final_one, sort_keys=True) == json.dumps(final_two, sort_keys=True)
        assert (one / spec.name / "config.json").read_bytes() == (
            two / spec.name / "config.json"
        ).read_bytes()


def test_run_artifacts_follow_the_contract(sweeps: dict[int, SweepResult]) -> None:
    out = sweeps[2].out_dir
    spec = mixed_specs()[2]
    config = read_json(out / spec.name / "config.json")
    assert config == {
        "schema": "velocity.run-config/1",
        "name": spec.name,
        "fingerprint": spec.fingerprint,
        "spec": spec.canonical(),
    }
    assert RunSpec.model_validate(config["spec"]).fingerprint == spec.fingerprint
    header = (out / spec.name / "rounds.csv").read_text().splitlines()[0].split(",")
    assert header[: len(METRICS)] == list(METRICS)
    assert header[len(METRICS) :] == sorted(header[len(METRICS) :])
    rounds = read_rounds_csv(out / spec.name / "rounds.csv")
    assert [r["round"] for r in rounds] == [1, 2, 3]
    summary = read_json(out / spec.name / "summary.json")
    assert summary["schema"] == "velocity.run-summary/1"
    assert summary["fingerprint"] == spec.fingerprint
    assert summary["final"]["test_accuracy"] == rounds[-1]["test_accuracy"]
    assert summary["best"]["test_accuracy"] == max(r["test_accuracy"] for r in rounds)
    assert summary["rounds_completed"] == 3
    for key in ("started_at", "finished_at", "wall_seconds", "totals", "error"):
        assert key in summary


def test_manifest_records_the_environment(sweeps: dict[int, SweepResult]) -> None:
    manifest = read_json(sweeps[2].out_dir / "manifest.json")
    assert manifest["schema"] == "velocity.sweep/2"
    assert manifest["complete"] is True
    assert manifest["runs"] == [s.name for s in mixed_specs()]
    assert manifest["command"] == ["velocity", "sweep", "test"]
    assert manifest["started_at"] <= manifest["finished_at"]
    assert manifest["started_at"].endswith("Z")
    assert manifest["host"]["cores"] == os.cpu_count()
    assert manifest["host"]["cpu_model"] and manifest["host"]["os"]
    assert manifest["python"]["version"]
    assert manifest["numpy"]["version"]
    assert "numpy" in {k.lower() for k in manifest["packages"]}
    assert "velocity_version" in manifest
    git = manifest["git"]
    assert git is None or (len(git["commit"]) == 40 and isinstance(git["dirty"], bool))


def test_comparison_holds_every_run_and_the_accuracy_drop(
    sweeps: dict[int, SweepResult],
) -> None:
    comparison = read_json(sweeps[2].out_dir / "comparison.json")
    assert comparison["schema"] == "velocity.comparison/1"
    runs = {r["name"]: r for r in comparison["runs"]}
    assert list(runs) == [s.name for s in mixed_specs()]
    attacked, baseline = runs["fedavg__sign_flip__s0"], runs["fedavg__s0"]
    assert attacked["baseline"] == "fedavg__s0"
    expected = baseline["final"]["test_accuracy"] - attacked["final"]["test_accuracy"]
    assert attacked["accuracy_drop"] == expected
    assert baseline["accuracy_drop"] is None
    rounds = read_rounds_csv(sweeps[2].out_dir / "fedavg__s0" / "rounds.csv")
    assert baseline["rounds"] == rounds
    assert runs["fails"]["status"] == "failed" and runs["fails"]["error"]
    markdown = (sweeps[2].out_dir / "comparison.md").read_text()
    assert "| 1 |" in markdown and "fedavg__sign_flip__s0" in markdown
    assert f"{expected:.4f}" in markdown


def test_every_run_is_in_the_store(sweeps: dict[int, SweepResult]) -> None:
    out = sweeps[2].out_dir
    with open_store(out.parent / "store2.db") as store:
        records = {r.name: r for r in store.list_runs(with_rounds=True)}
    assert {n: r.status for n, r in records.items()} == {
        n: r.status for n, r in sweeps[2].results.items()
    }
    assert all(r.source == str(out.resolve()) for r in records.values())
    spec = mixed_specs()[0]
    assert records[spec.name].fingerprint == spec.fingerprint
    assert records[spec.name].rounds == read_rounds_csv(out / spec.name / "rounds.csv")


def test_resuming_a_complete_sweep_runs_nothing(
    sweeps: dict[int, SweepResult], tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(sweeps[1].out_dir, copy)
    before = {p: p.read_bytes() for p in copy.glob("*/summary.json")}
    result = run_sweep(sweep_specs(copy), copy, resume=True, parallel=2)
    assert all(r.resumed for r in result.results.values())
    assert {p: p.read_bytes() for p in copy.glob("*/summary.json")} == before
    manifest = read_json(copy / "manifest.json")
    assert manifest["complete"] and len(manifest["resumes"]) == 1


def test_bad_input_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    specs = mixed_specs()
    with pytest.raises(InputError, match="parallel"):
        run_sweep(specs, tmp_path / "a", parallel=0)
    with pytest.raises(InputError, match="duplicate run name"):
        run_sweep([specs[0], specs[0]], tmp_path / "b")
    with pytest.raises(InputError, match="at least one run"):
        run_sweep([], tmp_path / "c")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        run_sweep(specs, busy)
    with pytest.raises(InputError, match=r"no manifest\.json"):
        run_sweep(specs, busy, resume=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]


def test_two_names_for_one_configuration_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # krum:f=2 and krum:f=2.0 read differently but are one run: it must not count twice.
    out = tmp_path / "twins"
    code = main(
        ["sweep", "--strategies", "krum:f=2;krum:f=2.0", "--model", "logreg", "--out", str(out)]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "runs 'krum-f2' and 'krum-f2.0' are the same configuration" in err
    assert "\n" not in err
    assert not out.exists()
    twins = expand_experiment({"shared": TINY, "runs": [{"name": "a"}, {"name": "b"}]}, "test")
    with pytest.raises(InputError, match="runs 'a' and 'b' are the same configuration"):
        run_sweep(twins, tmp_path / "api")
    assert not (tmp_path / "api").exists()


def test_a_sweep_killed_after_its_manifest_resumes_to_the_uninterrupted_result(
    sweeps: dict[int, SweepResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import velocity.sweepdir as sweep_module

    real_write = sweep_module.write_json_atomic

    def killed_at_the_first_config(path: str | Path, payload: Any) -> None:
        if Path(path).name == "config.json":
            raise KeyboardInterrupt  # the process dies right after writing the manifest
        real_write(path, payload)

    out = tmp_path / "killed"
    monkeypatch.setattr(sweep_module, "write_json_atomic", killed_at_the_first_config)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(mixed_specs(), out, parallel=2)
    monkeypatch.setattr(sweep_module, "write_json_atomic", real_write)
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    assert read_json(out / "manifest.json")["complete"] is False
    with pytest.raises(InputError, match="not empty"):
        run_sweep(mixed_specs(), out)
    assert [s.fingerprint for s in sweep_specs(out)] == [s.fingerprint for s in mixed_specs()]

    assert main(["sweep", "--resume", str(out), "--parallel", "2"]) == 1  # 'fails' fails
    reference = sweeps[1].out_dir
    for spec in mixed_specs():
        for name in RUN_FILES:
            assert (out / spec.name / name).is_file(), (spec.name, name)
        assert (out / spec.name / "config.json").read_bytes() == (
            reference / spec.name / "config.json"
        ).read_bytes()
        assert metric_columns_text(out / spec.name / "rounds.csv") == metric_columns_text(
            reference / spec.name / "rounds.csv"
        ), spec.name
    assert _strip_timings(read_json(out / "comparison.json")) == _strip_timings(
        read_json(reference / "comparison.json")
    )
    assert read_json(out / "manifest.json")["complete"] is True


def test_a_folder_holding_only_a_half_written_manifest_takes_a_fresh_sweep(
    tmp_path: Path,
) -> None:
    # Killed while the manifest's temp file was being written: nothing of the sweep exists yet.
    out = tmp_path / "early"
    out.mkdir()
    (out / ".manifest.json.abc123.tmp").write_text("{", encoding="utf-8")
    specs = mixed_specs()[:1]
    result = run_sweep(specs, out, parallel=1)
    assert result.exit_code == 0
    assert not list(out.rglob(".*.tmp"))


def test_cli_runs_of_a_folder_that_is_no_sweep_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_store(tmp_path / "runs.db"):
        pass  # the store exists: the folder, not a missing store, is the problem
    for folder in (tmp_path / "nonexistent", tmp_path):
        assert main(["runs", "--sweep", str(folder)]) == 2
        err = capsys.readouterr().err.strip()
        assert "not a sweep folder (no manifest.json)" in err and str(folder) in err
        assert "\n" not in err


def test_resume_refuses_runs_that_differ_from_the_saved_ones(
    sweeps: dict[int, SweepResult],
) -> None:
    other = expand_experiment({"shared": {**TINY, "rounds": 5}, "matrix": {"seeds": 1}}, "x")
    with pytest.raises(InputError, match="do not match"):
        run_sweep(other, sweeps[1].out_dir, resume=True)


def test_cli_sweep_of_quickstart_writes_every_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qs"
    code = main(
        [
            "sweep",
            str(ROOT / "examples" / "quickstart.toml"),
            "--out",
            str(out),
            "--rounds",
            "2",
            "--json",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in payload] == ["fedavg-mlp"]
    assert payload[0]["source"] == str(out) and payload[0]["status"] == "complete"
    for name in (*SWEEP_FILES, *PLOT_FILES):
        assert (out / name).is_file(), name
    for name in RUN_FILES:
        assert (out / "fedavg-mlp" / name).is_file()
    data = read_sweep(out)
    assert [r.spec.rounds for r in data.runs] == [2]
    manifest = read_json(out / "manifest.json")
    assert manifest["command"][:3] == [
        "velocity",
        "sweep",
        str(ROOT / "examples" / "quickstart.toml"),
    ]
    assert "--rounds" in manifest["command"]
    assert main(["runs", "--sweep", str(out), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in listed] == ["fedavg-mlp"]
    assert listed[0]["status"] == "complete"


def test_cli_ad_hoc_flags_with_a_failing_run_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "adhoc"
    code = main(
        [
            "sweep",
            "--strategies",
            "fedavg;krum:f=3",
            "--seeds",
            "1",
            "--rounds",
            "2",
            "--model",
            "logreg",
            "--num-clients",
            "4",
            "--out",
            str(out),
            "--parallel",
            "2",
        ]
    )
    assert code == 1
    statuses = {p.parent.name: read_json(p)["status"] for p in out.glob("*/summary.json")}
    assert statuses == {"fedavg__s0": "complete", "krum-f3__s0": "failed"}
    assert "krum-f3__s0" in capsys.readouterr().err


def test_cli_resume_excludes_other_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sweep", str(ROOT / "examples" / "quickstart.toml"), "--resume", str(tmp_path)])
    assert code == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    experiment = tmp_path / "exp.toml"
    experiment.write_text(
        "[shared]\nmodel = 'mlp:hidden=32'\nrounds = 12\nnum_clients = 5\n"
        "[matrix]\nstrategy = ['fedavg', 'fedprox:mu=0.1', 'median']\nseeds = 3\n",
        encoding="utf-8",
    )
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    env = {**os.environ, "VELOCITY_STORE": str(tmp_path / "runs.db")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "velocity",
            "sweep",
            str(experiment),
            "--out",
            str(killed),
            "--parallel",
            "2",
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not list(killed.glob("*/summary.json")):
        assert process.poll() is None, "sweep ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the whole group: the CLI and its workers
    process.wait()
    done_before = {p.parent.name for p in killed.glob("*/summary.json")}
    assert 0 < len(done_before) < 9, "the kill must land mid-way"
    assert read_json(killed / "manifest.json")["complete"] is False

    code = main(["sweep", "--resume", str(killed), "--parallel", "2"])
    assert code == 0
    assert main(["sweep", str(experiment), "--out", str(reference), "--parallel", "1"]) == 0
    assert read_json(killed / "manifest.json")["complete"] is True
    for spec in sweep_specs(reference):
        assert metric_columns_text(killed / spec.name / "rounds.csv") == metric_columns_text(
            reference / spec.name / "rounds.csv"
        ), spec.name
    with open_store(tmp_path / "runs.db") as store:
        records = store.list_runs(source=str(killed.resolve()))
    assert sorted(r.name for r in records) == sorted(s.name for s in sweep_specs(killed))
    assert all(r.status == "complete" for r in records)


def _strip_timings(payload: Any) -> Any:
    if isinstance(payload, dict):
        return {
            k: _strip_timings(v)
            for k, v in payload.items()
            if k not in (*TIMING_METRICS, "wall_seconds", "started_at", "finished_at")
        }
    if isinstance(payload, list):
        return [_strip_timings(v) for v in payload]
    return payload


def test_comparison_json_is_identical_across_worker_counts_but_timings(
    sweeps: dict[int, SweepResult],
) -> None:
    one = _strip_timings(read_json(sweeps[1].out_dir / "comparison.json"))
    two = _strip_timings(read_json(sweeps[2].out_dir / "comparison.json"))
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
