"""End to end with torch models: the CNN learns digits, the CLI runs it, a user's module file
goes through sweep -> archive -> reproduce --check --exact, and the sign-flip acceptance
(FedAvg collapses, robust aggregators hold) holds with torch_cnn too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from velocity.simulation import RunResult, run_simulation
from velocity.spec import spec_from_mapping

VELOCITY = [sys.executable, "-m", "velocity"]

NET = """
from torch import nn


def make_model(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, num_classes)
    )
"""

SWEEP = """
[shared]
dataset = "digits_images"
model = "torch_module:path=tiny_net.py,factory=make_model"
num_clients = 4
rounds = 2
batch_size = 16

[matrix]
strategy = ["fedavg", "median"]
"""


def _velocity(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*VELOCITY, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
        env=dict(os.environ), check=False,
    )  # fmt: skip


def _accuracy(result: RunResult) -> float:
    accuracy = result.final_metrics()["test_accuracy"]
    return float(accuracy) if accuracy is not None and np.isfinite(accuracy) else 0.0


@pytest.mark.slow
def test_torch_cnn_learns_digits_images_with_fedavg() -> None:
    spec = {"dataset": "digits_images", "model": "torch_cnn", "num_clients": 10, "rounds": 20}
    result = run_simulation(spec_from_mapping({**spec, "batch_size": 16, "eval_every": 5}))
    assert result.status == "complete" and _accuracy(result) >= 0.95


@pytest.mark.slow
def test_the_cli_runs_a_cnn_and_a_user_module_reproduces_exactly(tmp_path: Path) -> None:
    run = _velocity(
        "run", "--dataset", "digits_images", "--model", "torch_cnn:channels=4", "--rounds", "2",
        "--num-clients", "4", "--quiet", "--store", str(tmp_path / "runs.db"), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    work = tmp_path / "work"
    work.mkdir()
    (work / "tiny_net.py").write_text(NET)
    (work / "sweep.toml").write_text(SWEEP)
    sweep = _velocity("sweep", "sweep.toml", "--out", "out/s", "--parallel", "2", cwd=work)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    assert (work / "out" / "s" / "plugins" / "tiny_net.py").read_text() == NET
    assert _velocity("archive", "out/s", cwd=work).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()  # no tiny_net.py here: the archived copy is the one loaded
    archive = work / "out" / "s.crate.zip"
    done = _velocity(
        "reproduce", str(archive), "--check", "--exact", "--out", "again", cwd=elsewhere
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2/2 runs matched" in done.stdout


def _run(**fields: Any) -> RunResult:
    setup = {
        "dataset": "digits_images", "model": "torch_cnn:channels=8", "num_clients": 20,
        "byzantine": 0.2, "rounds": 20, "local_epochs": 2, "batch_size": 16, "eval_every": 100,
    }  # fmt: skip
    if not fields.get("attack"):
        setup["byzantine"] = 0
    result = run_simulation(spec_from_mapping({**setup, **fields}))
    assert result.status in ("complete", "diverged"), result.error
    return result


@pytest.mark.slow
def test_sign_flip_breaks_fedavg_but_not_robust_aggregators_with_torch_cnn() -> None:
    attack = "sign_flip:scale=10"
    assert _accuracy(_run(strategy="fedavg")) >= 0.9  # the attack, not the setup, breaks it
    assert _accuracy(_run(strategy="fedavg", attack=attack)) < 0.5
    floors = {"median": 0.85, "trimmed_mean:k=4": 0.85, "multi_krum:f=4": 0.85}
    measured = {name: _accuracy(_run(strategy=name, attack=attack)) for name in floors}
    assert all(measured[name] >= floor for name, floor in floors.items()), measured


SQUARE = "+".join(str(8 * r + c) for r in range(5, 8) for c in range(5, 8))  # 3x3, bottom right


@pytest.mark.slow
def test_a_pixel_square_backdoor_is_planted_in_torch_cnn_and_measured() -> None:
    assert SQUARE == "45+46+47+53+54+55+61+62+63"  # the pattern docs/torch.md names
    common = {"dataset": "digits_images", "model": "torch_cnn:channels=8", "num_clients": 10}
    common.update(rounds=12, batch_size=16, byzantine=0.2, eval_every=4)
    attacked = run_simulation(spec_from_mapping({**common, "attack": f"backdoor:trigger={SQUARE}"}))
    assert attacked.status == "complete", attacked.error
    first, *_, last = [r for r in attacked.rounds if r["test_accuracy"] is not None]
    assert first["attack_success_rate"] < 0.2  # not planted yet after 4 rounds...
    assert last["attack_success_rate"] >= 0.7 and last["test_accuracy"] >= 0.85  # ...then it is
