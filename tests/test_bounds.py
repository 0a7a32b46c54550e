"""Bounded input through the real CLI: oversize specs refused from an estimate before anything is
allocated (one line naming the field, the estimate and the limit), deep TOML, unreadable and
malformed user files, damaged stores, and the CSV reader's memory."""

from __future__ import annotations

import os
import sqlite3
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from velocity.cli import main
from velocity.data import load_dataset
from velocity.limits import format_bytes, parse_size
from velocity.sizing import estimate_run
from velocity.spec import RunSpec

SMALL = ["--rounds", "1", "--model", "logreg", "--num-clients", "3"]


def _refused(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> tuple[str, int]:
    """Run the CLI in this process; it must exit 2 with one line holding every needle, having
    allocated almost nothing (the estimate comes before any array). Returns (line, peak)."""
    tracemalloc.start()
    try:
        code = main(args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert peak < 64 * 2**20, f"{format_bytes(peak)} allocated before refusing"
    return err, peak


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VELOCITY_STORE", str(tmp_path / "store.db"))
    monkeypatch.delenv("VELOCITY_MAX_MEMORY", raising=False)
    monkeypatch.delenv("VELOCITY_MAX_RUNS", raising=False)


# ----------------------------------------------------------------------------- memory estimates


@pytest.mark.parametrize(
    ("args", "field", "what"),
    [
        (["--model", "mlp:hidden=1000000000"], "model:", "parameters x"),
        (["--model", "mlp:hidden=4000-4000-4000-4000", "--num-clients", "50000"], "model:", ""),
        (
            ["--dataset", "synthetic", "--partition", "natural", "--num-clients", "100000000000"],
            "num_clients:",
            "",
        ),
        (["--num-clients", "1000000000000"], "num_clients:", ""),
        (["--rounds", "1000000000"], "rounds:", "per-round records of 1000000000 rounds"),
        (["--local-epochs", "100000000000"], "local_epochs:", "batch schedules"),
    ],
)
def test_oversize_runs_are_refused_from_an_estimate(
    args: list[str], field: str, what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err, _ = _refused(["run", *args], capsys, field, "over the limit of", "VELOCITY_MAX_MEMORY")
    assert what in err
    assert "the run would need about" in err
    assert not Path("store.db").exists()  # nothing recorded


def test_a_batch_size_beyond_every_client_allocates_nothing_for_it() -> None:
    # Batches are cut to the largest client's samples before any schedule is made.
    assert main(["run", *SMALL, "--batch-size", "100000000000"]) == 0


def test_persistent_client_momentum_counts_a_buffer_per_client(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VELOCITY_MAX_MEMORY", "2G")
    args = ["run", "--model", "mlp:hidden=8000", "--num-clients", "1000", "--rounds", "1"]
    args += ["--clients-per-round", "10"]
    _refused([*args, "--client-momentum", "persistent"], capsys, "client_momentum:", "2 GiB")
    reset = RunSpec(model="mlp:hidden=8000", num_clients=1000, clients_per_round=10)
    kept = reset.model_copy(update={"client_momentum": "persistent"})
    assert sum(e.bytes for e in estimate_run(kept)) > sum(e.bytes for e in estimate_run(reset))


def test_the_memory_limit_is_overridable_and_validated(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VELOCITY_MAX_MEMORY", "1M")
    _refused(["run", *SMALL], capsys, "over the limit of 1 MiB", "VELOCITY_MAX_MEMORY")
    monkeypatch.setenv("VELOCITY_MAX_MEMORY", "a lot")
    _refused(["run", *SMALL], capsys, "VELOCITY_MAX_MEMORY must be a size in bytes")
    monkeypatch.setenv("VELOCITY_MAX_MEMORY", "4G")
    assert main(["run", *SMALL]) == 0
    assert parse_size("1.5G") == 3 * 2**29 and parse_size("512m") == 512 * 2**20
    assert parse_size("2048") == 2048 and parse_size("64GiB") == 64 * 2**30


def test_a_sweep_refuses_an_oversize_run_before_writing_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exp = Path("exp.toml")
    exp.write_text(
        '[shared]\nrounds = 1\nmodel = "logreg"\n\n[[runs]]\nname = "ok"\n\n'
        '[[runs]]\nname = "huge"\nmodel = "mlp:hidden=1000000000"\n'
    )
    _refused(["sweep", str(exp), "--out", "out"], capsys, "run 'huge': model:")
    assert not Path("out").exists() and not Path("store.db").exists()


def test_user_data_is_checked_again_with_its_loaded_shape(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2000 features: the model alone is over the limit, which only the file tells.
    rng = np.random.default_rng(0)
    np.savez("wide.npz", X=rng.normal(size=(40, 2000)), y=np.arange(40) % 2)
    monkeypatch.setenv("VELOCITY_MAX_MEMORY", "64M")
    args = ["run", "--dataset", "npz:path=wide.npz", "--model", "mlp:hidden=3000", "--rounds", "1"]
    _refused(args, capsys, "model:", "over the limit of 64 MiB")


# ----------------------------------------------------------------------------- run counts


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seeds", "100000000"], "seeds: expands to 100000000 runs"),
        (["--seeds", "100000", "--strategies", "fedavg,median"], "expands to 200000 runs"),
        (["--seeds", "60000", "--attacks", "alie"], "expands to 120000 runs"),
    ],
)
def test_a_matrix_is_counted_before_it_is_expanded(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused(["sweep", *args, "--out", "out"], capsys, needle, "over the limit of 100000 runs")
    assert not Path("out").exists()


def test_a_matrix_file_names_its_largest_axis(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("m.toml").write_text(
        '[matrix]\nlr = [0.1, 0.2, 0.3]\nseeds = 50000\nstrategy = ["fedavg", "median"]\n'
    )
    _refused(["sweep", "m.toml"], capsys, "m.toml: matrix.seeds: expands to 300000 runs")
    monkeypatch.setenv("VELOCITY_MAX_RUNS", "5")
    Path("m.toml").write_text("[matrix]\nlr = [0.1, 0.2, 0.3]\nseeds = 2\n")
    _refused(
        ["sweep", "m.toml"], capsys, "expands to 6 runs", "limit of 5 runs", "VELOCITY_MAX_RUNS"
    )
    monkeypatch.setenv("VELOCITY_MAX_RUNS", "many")
    _refused(["sweep", "m.toml"], capsys, "VELOCITY_MAX_RUNS must be a whole number")


# ----------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("nested", ["a = " + "[" * 100_000 + "]" * 100_000, "a = " + "{b=" * 5000])
def test_deeply_nested_toml_is_one_line(nested: str, capsys: pytest.CaptureFixture[str]) -> None:
    Path("deep.toml").write_text(nested + "\n")
    for command in ("run", "sweep"):
        code = main([command, "deep.toml"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "deep.toml:" in err


def _unreadable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading ``path`` fails as a file without read permission does (also for root)."""
    original = Path.open

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        if self.resolve() == path.resolve():
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", refuse)


@pytest.mark.parametrize("kind", ["csv", "npz", "toml"])
def test_an_unreadable_user_file_is_one_line(
    kind: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("d.csv").write_text("a,label\n1,x\n2,y\n3,x\n4,y\n5,x\n")
    np.savez("d.npz", X=np.ones((6, 2)), y=np.arange(6) % 2)
    Path("e.toml").write_text("[shared]\nrounds = 1\n")
    target = Path(f"d.{kind}" if kind != "toml" else "e.toml")
    _unreadable(target, monkeypatch)
    args = ["e.toml"] if kind == "toml" else ["--dataset", f"{kind}:path={target}"]
    _refused(["run", *args, "--rounds", "1"], capsys, f"{target}: cannot read file", "denied")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_a_file_without_read_permission_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    Path("d.csv").write_text("a,label\n1,x\n2,y\n3,x\n")
    Path("d.csv").chmod(0)
    _refused(["run", "--dataset", "csv:path=d.csv"], capsys, "d.csv: cannot read file")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("label\nx\ny\n", "no feature columns: the header holds only the label column 'label'"),
        ("a,label\n1,x\n2,nan\n", "line 3 has the label 'nan' (NaN or infinite)"),
        ("a,label\n1,x\n2,NaN\n", "line 3 has the label 'NaN'"),
        ("a,label\n1,x\n2,\n", "line 3 has an empty label"),
        ("a,label\n1,x\n2,-inf\n", "(NaN or infinite)"),
        ("a,label\n1,x\nnan,y\n", "features contain NaN or infinite values"),
        ("a,label\n1,x\n2\n", "line 3 has a different number of fields"),
        ("a,label\n1,x\nz,y\n", "could not convert string 'z' to float64 on line 3"),
        ("", "needs a header row and at least one data row"),
        ("a,label\n", "needs a header row and at least one data row"),
    ],
)
def test_malformed_csv_is_refused_naming_file_and_line(
    body: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("bad.csv").write_text(body)
    _refused(["run", "--dataset", "csv:path=bad.csv", *SMALL], capsys, "bad.csv:", needle)


@pytest.mark.parametrize("labels", [[0.0, 1.0, np.nan, 1.0], [0.0, np.inf, 1.0, 0.0]])
def test_non_finite_npz_labels_are_refused(
    labels: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    np.savez("nan.npz", X=np.ones((4, 2)), y=np.array(labels))
    _refused(["run", "--dataset", "npz:path=nan.npz", *SMALL], capsys, "labels contain NaN")


def test_csv_streaming_costs_a_small_multiple_of_the_file(tmp_path: Path) -> None:
    rows = 200_000
    with (tmp_path / "big.csv").open("w") as handle:
        handle.write("f1,f2,f3,label\n")
        for i in range(rows):
            handle.write(f"{i % 97 / 7:.5f},{i % 13},{i % 1000 / 3:.4f},c{i % 7}\n")
    size = (tmp_path / "big.csv").stat().st_size
    tracemalloc.start()
    try:
        data = load_dataset(f"csv:path={tmp_path / 'big.csv'}", seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(data.y_train) + len(data.y_test) == rows and data.num_classes == 7
    # The float64 table is about the text's size; split and standardized copies add the rest.
    assert peak < 5 * size, f"peak {format_bytes(peak)} for a {format_bytes(size)} file"


def test_csv_labels_are_codes_of_the_sorted_label_text(tmp_path: Path) -> None:
    lines = ["x,label"] + [f"{i},{lab}" for i, lab in enumerate(["b", "a", "10", "2"] * 10)]
    (tmp_path / "l.csv").write_text("\n".join(lines) + "\n")
    data = load_dataset(f"csv:path={tmp_path / 'l.csv'}", seed=0, num_clients=1)
    # classes '10' < '2' < 'a' < 'b' as text: row x=0 ('b') is class 3, x=2 ('10') class 0.
    X = np.concatenate([data.X_train, data.X_test])[:, 0]
    y = np.concatenate([data.y_train, data.y_test])
    order = np.argsort(X)
    assert list(y[order][:4]) == [3, 2, 0, 1]


# ----------------------------------------------------------------------------- damaged stores


def _store_with_a_run(tmp_path: Path) -> Path:
    store = tmp_path / "s.db"
    assert main(["run", *SMALL, "--store", str(store), "--name", "one"]) == 0
    return store


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda c: c.execute("UPDATE runs SET final = '{bad json'"), "record of run"),
        (lambda c: c.execute("UPDATE runs SET spec = '[1, 2'"), "cannot be read"),
        (lambda c: c.execute("ALTER TABLE runs RENAME TO old_runs"), "table 'runs' is missing"),
        (lambda c: c.execute("DROP TABLE run_rounds"), "table 'run_rounds' is missing"),
        (lambda c: c.execute("UPDATE schema_version SET version = 'two'"), "not an integer"),
        (lambda c: c.execute("UPDATE schema_version SET version = 1.5"), "not an integer"),
    ],
)
@pytest.mark.parametrize("command", [["runs"], ["show", "one"], ["leaderboard"]])
def test_a_damaged_store_is_one_line_naming_the_file(
    tmp_path: Path,
    damage: Callable[[sqlite3.Connection], object],
    needle: str,
    command: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = _store_with_a_run(tmp_path)
    capsys.readouterr()
    with sqlite3.connect(store) as conn:
        damage(conn)
    conn.close()
    code = main([*command, "--store", str(store)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(store) in err and "damaged run store" in err and needle in err, err


def test_a_file_that_is_not_a_store_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "junk.db").write_bytes(b"not sqlite" * 100)
    assert main(["runs", "--store", str(tmp_path / "junk.db")]) == 2
    err = capsys.readouterr().err
    assert "junk.db" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_an_output_folder_that_cannot_be_made_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    code = main(["sweep", *SMALL, "--out", str(locked / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "locked" in err and len(err.strip().splitlines()) == 1, err


def test_an_output_path_under_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("x")
    code = main(["sweep", *SMALL, "--out", str(tmp_path / "afile" / "out"), "--parallel", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "afile" in err and len(err.strip().splitlines()) == 1, err
