"""FEMNIST in LEAF's JSON format: writers become natural clients, read offline from a file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from velocity.cli import main
from velocity.data import load_dataset


def _leaf(path: Path, writers: int = 3, per_writer: int = 40, size: int = 28) -> Path:
    rng = np.random.default_rng(0)
    users = [f"f{k:04d}_{k}" for k in range(writers)]
    data = {}
    for k, user in enumerate(users):
        y = (np.arange(per_writer) + k) % 4  # four classes, every writer sees several
        x = rng.random((per_writer, size * size)) * 0.1
        x[:, : size * 2] += y[:, None] * 0.3  # class written into the top rows
        data[user] = {"x": x.round(4).tolist(), "y": y.tolist()}
    doc = {"users": users, "num_samples": [per_writer] * writers, "user_data": data}
    path.write_text(json.dumps(doc))
    return path


def test_writers_are_the_natural_clients(tmp_path: Path) -> None:
    path = _leaf(tmp_path / "all_data_0.json")
    data = load_dataset(f"femnist_leaf:path={path}", seed=0)
    assert data.sample_shape == (1, 28, 28) and data.input_shape == (1, 28, 28)
    assert data.num_classes == 62
    assert data.groups_train is not None and set(data.groups_train) == {0, 1, 2}
    assert len(data.y_train) + len(data.y_test) == 120 and len(data.y_test) > 0


def test_a_femnist_run_trains_on_its_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VELOCITY_STORE", str(tmp_path / "runs.db"))
    monkeypatch.chdir(tmp_path)
    _leaf(tmp_path / "leaf.json")
    args = ["run", "--dataset", "femnist_leaf:path=leaf.json", "--partition", "natural"]
    args += ["--num-clients", "3", "--rounds", "2", "--model", "logreg", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    record = out[0] if isinstance(out, list) else out
    assert record["status"] == "complete"
    assert record["final"]["test_accuracy"] is not None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not a LEAF JSON file"),
        ('{"users": [], "user_data": {}}', "non-empty 'users'"),
        ('{"users": ["a"], "user_data": {}}', "no samples for user 'a'"),
        ('{"users": ["a"], "user_data": {"a": {"x": [[0.0, 1.0]], "y": [1]}}}', "pixels"),
        ('{"users": ["a"], "user_data": {"a": {"x": [[0.0]], "y": [1, 2]}}}', "one label"),
    ],
)
def test_a_damaged_leaf_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    args = ["run", "--dataset", f"femnist_leaf:path={path}", "--partition", "natural"]
    args += ["--num-clients", "1", "--rounds", "1", "--model", "logreg"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
