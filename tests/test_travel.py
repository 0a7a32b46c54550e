"""Archives that travel and cannot steer their checks, through the real CLI: user data files
hashed into the run and carried by sweep and archive (or supplied with --data-dir), archived
specs that point outside the archive or ask for too much, version claims, and the archive's own
file name, output file and install instructions."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from velocity.artifacts import dumps_json, read_json
from velocity.cli import main
from velocity.report import build_comparison, comparison_markdown
from velocity.sweepdir import MemoryFolder, read_sweep

SHARED = {"model": "logreg", "num_clients": 3, "rounds": 2}


def _csv(path: Path, rows: int = 90, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["f1,f2,f3,label"]
    for i in range(rows):
        c = i % 3
        a, b, d = rng.normal(size=3) + c
        lines.append(f"{a:.5f},{b:.5f},{d:.5f},kind{c}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _sweep(tmp: Path, dataset: str, name: str = "sweep", strategies: str = "fedavg,median") -> Path:
    out = tmp / name
    args = ["sweep", "--dataset", dataset, "--strategies", strategies, "--out", str(out)]
    args += ["--model", "logreg", "--num-clients", "3", "--rounds", "2", "--parallel", "2"]
    assert main(args) == 0
    return out


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _entries(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as handle:
        return {i.filename: handle.read(i) for i in handle.infolist()}


def _reseal(files: dict[str, bytes], target: Path) -> Path:
    """Write ``files`` as an archive whose metadata checksums match (a careful forger)."""
    metadata = json.loads(files["ro-crate-metadata.json"])
    graph = []
    for entity in metadata["@graph"]:
        name = entity["@id"]
        if entity.get("@type") == "File":
            if name not in files:
                continue
            entity["sha256"] = hashlib.sha256(files[name]).hexdigest()
            entity["contentSize"] = str(len(files[name]))
        graph.append(entity)
    metadata["@graph"] = graph
    files["ro-crate-metadata.json"] = json.dumps(metadata, indent=2).encode()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as handle:
        for name, data in files.items():
            handle.writestr(name, data)
    return target


def _rederive(files: dict[str, bytes]) -> None:
    """Re-derive comparison.json/.md from the (edited) runs, as the sweep would."""
    data = read_sweep(MemoryFolder(files, "forged"))
    comparison = build_comparison(data, target_accuracy=0.9)
    files["comparison.json"] = dumps_json(comparison).encode()
    files["comparison.md"] = comparison_markdown(comparison, data.manifest).encode()


def _edit_spec(files: dict[str, bytes], run: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Change one run's spec consistently: config.json, the manifest's copy, the fingerprints."""
    config = json.loads(files[f"{run}/config.json"])
    change(config["spec"])
    data = {k: v for k, v in config["spec"].items() if k != "name"}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    config["fingerprint"] = hashlib.sha256(text.encode()).hexdigest()
    files[f"{run}/config.json"] = dumps_json(config).encode()
    summary = json.loads(files[f"{run}/summary.json"])
    summary["fingerprint"] = config["fingerprint"]
    files[f"{run}/summary.json"] = dumps_json(summary).encode()
    manifest = json.loads(files["manifest.json"])
    manifest["configs"][run] = config
    files["manifest.json"] = dumps_json(manifest).encode()


def _refused(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """Exit 2 with one error line (warnings about the environment may precede it)."""
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.strip().splitlines() if line.startswith("error")]
    assert len(errors) == 1 and not any(line.startswith("Traceback") for line in err.splitlines())
    for needle in needles:
        assert needle in errors[0], err
    return errors[0]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VELOCITY_STORE", str(tmp_path / "store.db"))


@pytest.fixture(scope="module")
def csv_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("made")
    cwd = os.getcwd()
    os.environ["VELOCITY_STORE"] = str(root / "store.db")
    try:
        os.chdir(root)
        _csv(root / "mydata.csv")
        return _sweep(root, "csv:path=mydata.csv")
    finally:
        os.chdir(cwd)


# ----------------------------------------------------------------------------- data files


def test_a_user_file_is_hashed_into_the_run_and_copied_into_the_sweep(csv_sweep: Path) -> None:
    data = (csv_sweep.parent / "mydata.csv").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    config = read_json(csv_sweep / "fedavg" / "config.json")
    assert config["spec"]["data_files"] == [{"path": "mydata.csv", "sha256": sha}]
    manifest = read_json(csv_sweep / "manifest.json")
    assert manifest["data_files"] == [{"name": "mydata.csv", "sha256": sha}]
    assert (csv_sweep / "data" / "mydata.csv").read_bytes() == data


def test_the_data_is_part_of_the_runs_identity(tmp_path: Path) -> None:
    from velocity.spec import RunSpec

    _csv(tmp_path / "a.csv", seed=0)
    first = RunSpec(dataset="csv:path=a.csv")
    _csv(tmp_path / "a.csv", seed=1)
    time.sleep(0.01)
    os.utime(tmp_path / "a.csv")
    second = RunSpec(dataset="csv:path=a.csv")
    assert first.fingerprint != second.fingerprint
    assert first.model_dump()["dataset"] == second.model_dump()["dataset"]


def test_a_data_file_changed_after_the_spec_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from velocity.api import run
    from velocity.errors import InputError
    from velocity.spec import RunSpec

    _csv(tmp_path / "d.csv")
    spec = RunSpec(dataset="csv:path=d.csv", **SHARED)
    _csv(tmp_path / "d.csv", seed=5)
    with pytest.raises(InputError, match=r"d\.csv: has sha256 .* but the run records"):
        run(spec, store=False)


def test_the_travelling_archive_reproduces_from_another_folder(
    csv_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "with-data.zip"
    assert main(["archive", str(csv_sweep), "-o", str(archive)]) == 0
    assert "data/mydata.csv" in _entries(archive)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)  # no mydata.csv here: the archive's copy is what runs read
    assert main(["reproduce", str(archive), "--out", "re", "--check", "--exact"]) == 0
    out = capsys.readouterr().out
    assert "reproduced: 2/2" in out and "read from the archive's copy" in out
    assert (elsewhere / "re" / "data" / "mydata.csv").is_file()
    assert main(["inspect", str(archive), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["data_files"][0]["name"] == "mydata.csv" and info["data_files"][0]["included"]


def test_a_no_data_archive_needs_and_checks_the_data_dir(
    csv_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "no-data.zip"
    assert main(["archive", str(csv_sweep), "-o", str(archive), "--no-data"]) == 0
    files = _entries(archive)
    assert not any(name.startswith("data/") for name in files)
    readme = files["README.md"].decode()
    assert "leaves out (`--no-data`)" in readme and "--data-dir DIR" in readme
    os.chdir(tmp_path)  # a mydata.csv elsewhere on disk must not be used
    (tmp_path / "mydata.csv").write_bytes((csv_sweep.parent / "mydata.csv").read_bytes())
    _refused(["reproduce", str(archive), "--out", "r1"], capsys, "mydata.csv", "--data-dir")
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(
        ["reproduce", str(archive), "--out", "r2", "--data-dir", str(empty)],
        capsys,
        "--data-dir: no mydata.csv in",
    )
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    _csv(wrong / "mydata.csv", seed=9)
    _refused(
        ["reproduce", str(archive), "--out", "r3", "--data-dir", str(wrong)],
        capsys,
        "not the same data",
    )
    _refused(
        ["reproduce", str(archive), "--out", "r4", "--data-dir", str(tmp_path / "nope")],
        capsys,
        "--data-dir: not a folder",
    )
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 5))
    right = tmp_path / "right"
    right.mkdir()
    (right / "mydata.csv").write_bytes((csv_sweep.parent / "mydata.csv").read_bytes())
    args = [
        "reproduce",
        str(archive),
        "--out",
        "ok",
        "--check",
        "--exact",
        "--data-dir",
        str(right),
    ]
    assert main(args) == 0
    assert "read from --data-dir, sha256 checked" in capsys.readouterr().out


def test_an_npz_sweep_travels_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    os.mkdir("inputs")
    np.savez("inputs/my arrays.npz", X=rng.normal(size=(60, 5)), y=np.arange(60) % 3)
    out = _sweep(tmp_path, "npz:path=inputs/my arrays.npz", strategies="fedavg")
    assert (out / "data" / "my_arrays.npz").is_file()  # a name a folder entry may hold
    assert main(["archive", str(out), "-o", "n.zip", "--no-data"]) == 0
    os.rename("inputs", "moved")
    assert (
        main(["reproduce", "n.zip", "--out", "re", "--check", "--exact", "--data-dir", "moved"])
        == 2
    )  # DIR/<name in the archive> is what is looked for
    assert "no my_arrays.npz" in capsys.readouterr().err
    os.rename("moved/my arrays.npz", "moved/my_arrays.npz")
    assert (
        main(["reproduce", "n.zip", "--out", "re2", "--check", "--exact", "--data-dir", "moved"])
        == 0
    )


def test_two_files_with_one_name_in_a_sweep_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder, seed in (("a", 0), ("b", 1)):
        (tmp_path / folder).mkdir()
        _csv(tmp_path / folder / "train.csv", seed=seed)
    Path("exp.toml").write_text(
        '[shared]\nmodel = "logreg"\nnum_clients = 3\nrounds = 1\n'
        '[matrix]\ndataset = ["csv:path=a/train.csv", "csv:path=b/train.csv"]\n'
    )
    _refused(["sweep", "exp.toml", "--out", "o"], capsys, "two different data files are named")
    assert not Path("o").exists()


def test_resume_reads_the_sweeps_own_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _csv(tmp_path / "d.csv")
    out = _sweep(tmp_path, "csv:path=d.csv", strategies="fedavg")
    (out / "fedavg" / "summary.json").unlink()
    (tmp_path / "d.csv").unlink()  # gone from its path: the sweep's copy is there
    assert main(["sweep", "--resume", str(out)]) == 0
    assert (out / "fedavg" / "summary.json").is_file()
    (out / "data" / "d.csv").write_text("edited\n")
    _refused(["sweep", "--resume", str(out)], capsys, "data/d.csv does not have the sha256")


# ----------------------------------------------------------------------------- steering


def _forge(archive: Path, target: Path, edit: Callable[[dict[str, bytes]], None]) -> Path:
    files = {n: d for n, d in _entries(archive).items() if not n.endswith("/")}
    edit(files)
    _rederive(files)
    return _reseal(files, target)


@pytest.mark.parametrize("path", ["/etc/passwd", "outside.csv", "../outside.csv", "OUTSIDE"])
def test_an_archived_spec_never_reads_a_path_outside_the_archive(
    csv_sweep: Path, tmp_path: Path, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "a.zip"
    assert main(["archive", str(csv_sweep), "-o", str(archive), "--no-data"]) == 0
    # A valid CSV is waiting at the path, with exactly the recorded sha256: reading it would
    # make the reproduction pass. It must be refused instead.
    work = tmp_path / "work"
    work.mkdir()
    os.chdir(work)
    target = Path(path) if path != "/etc/passwd" else None
    data = (csv_sweep.parent / "mydata.csv").read_bytes()
    if target is not None:
        target.write_bytes(data)
    sha = hashlib.sha256(data if target is not None else Path(path).read_bytes()).hexdigest()

    def point_outside(files: dict[str, bytes]) -> None:
        for run in ("fedavg", "median"):
            _edit_spec(
                files,
                run,
                lambda s: (
                    s["dataset"].update(path=path),
                    s.update(data_files=[{"path": path, "sha256": sha}]),
                ),
            )
        manifest = json.loads(files["manifest.json"])
        manifest["data_files"] = [{"name": path.split("/")[-1].lstrip("."), "sha256": sha}]
        files["manifest.json"] = dumps_json(manifest).encode()

    forged = _forge(archive, tmp_path / "forged.zip", point_outside)
    assert main(["inspect", str(forged)]) == 0  # self-consistent
    capsys.readouterr()
    before = _tree(tmp_path)
    _refused(
        ["reproduce", str(forged), "--out", "re", "--check"],
        capsys,
        "which the archive does not hold",
    )
    _refused(
        ["reproduce", str(forged), "--out", "re", "--data-dir", str(csv_sweep.parent)],
        capsys,
        "--data-dir: no",
    )
    assert _tree(tmp_path) == before


def test_an_archived_spec_without_a_hash_for_its_file_is_refused(
    csv_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "a.zip"
    assert main(["archive", str(csv_sweep), "-o", str(archive)]) == 0

    def drop_record(files: dict[str, bytes]) -> None:
        for run in ("fedavg", "median"):
            _edit_spec(files, run, lambda s: s.pop("data_files"))

    files = {n: d for n, d in _entries(archive).items() if not n.endswith("/")}
    drop_record(files)
    forged = _reseal(files, tmp_path / "nohash.zip")
    err = _refused(["reproduce", str(forged), "--out", "re"], capsys, "records no sha256")
    assert "mydata.csv" in err
    assert main(["inspect", str(forged)]) == 2


def test_a_saved_hugging_face_folder_is_not_read_by_reproduce(
    csv_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "a.zip"
    assert main(["archive", str(csv_sweep), "-o", str(archive)]) == 0

    def to_hf(files: dict[str, bytes]) -> None:
        for run in ("fedavg", "median"):
            _edit_spec(
                files,
                run,
                lambda s: (
                    s.update(
                        dataset={
                            "type": "hf",
                            "name": "",
                            "path": "/etc",
                            "split": "train",
                            "label": "label",
                            "features": "",
                            "test_fraction": 0.2,
                        }
                    ),
                    s.pop("data_files"),
                ),
            )
        manifest = json.loads(files["manifest.json"])
        manifest["data_files"] = []
        files["manifest.json"] = dumps_json(manifest).encode()
        for name in [n for n in files if n.startswith("data/")]:
            del files[name]

    forged = _forge(archive, tmp_path / "hf.zip", to_hf)
    _refused(["reproduce", str(forged), "--out", "re"], capsys, "Hugging Face dataset saved in")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rounds": 1_000_000_000}, "rounds:"),
        ({"num_clients": 10**12, "clients_per_round": 10**12}, "num_clients:"),
        ({"model": {"type": "mlp", "hidden": "1000000000"}}, "model:"),
        ({"local_epochs": 10**11}, "local_epochs:"),
    ],
)
def test_an_archived_spec_is_resource_bounded_like_user_input(
    csv_sweep: Path,
    tmp_path: Path,
    change: dict[str, Any],
    field: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = tmp_path / "a.zip"
    assert main(["archive", str(csv_sweep), "-o", str(archive)]) == 0
    forged = _forge(
        archive,
        tmp_path / "big.zip",
        lambda files: _edit_spec(files, "median", lambda s: s.update(change)),
    )
    _refused(
        ["reproduce", str(forged), "--out", "re", "--check"],
        capsys,
        "run 'median'",
        field,
        "over the limit",
    )
    assert not (tmp_path / "re").exists()  # refused from the estimate, before anything ran


def _claim_version(files: dict[str, bytes], version: Any) -> None:
    manifest = json.loads(files["manifest.json"])
    if version is None:
        manifest.pop("velocity_version")
    else:
        manifest["velocity_version"] = version
    files["manifest.json"] = dumps_json(manifest).encode()


@pytest.mark.parametrize("version", ["99.0.0", "0.0.1", None, 7])
def test_a_version_claim_turns_no_check_off(
    csv_sweep: Path, tmp_path: Path, version: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "a.zip"
    assert main(["archive", str(csv_sweep), "-o", str(archive)]) == 0
    honest = _forge(archive, tmp_path / "claim.zip", lambda f: _claim_version(f, version))
    assert main(["inspect", str(honest)]) == 0
    out = capsys.readouterr().out
    assert "every record was re-derived and checked as this version writes it" in out
    assert main(["reproduce", str(honest), "--out", "re", "--check", "--exact"]) == 0
    assert "checked as this version writes it" in capsys.readouterr().out

    def forged_markdown(files: dict[str, bytes]) -> None:
        _claim_version(files, version)
        _rederive(files)
        files["comparison.md"] = files["comparison.md"].replace(b"| fedavg |", b"| FEDAVG |")

    files = {n: d for n, d in _entries(archive).items() if not n.endswith("/")}
    forged_markdown(files)
    forged = _reseal(files, tmp_path / "forged.zip")
    assert main(["inspect", str(forged)]) == 2
    assert "comparison.md: line" in capsys.readouterr().err
    _refused(
        ["reproduce", str(forged), "--out", "re2", "--check", "--exact"],
        capsys,
        "inconsistent archive: comparison.md: line",
    )
    assert not (tmp_path / "re2").exists()


# ----------------------------------------------------------------------------- the archive file


def test_the_archive_does_not_depend_on_its_file_name(csv_sweep: Path, tmp_path: Path) -> None:
    assert main(["archive", str(csv_sweep), "-o", str(tmp_path / "a1.zip")]) == 0
    assert main(["archive", str(csv_sweep), "-o", str(tmp_path / "another-name.crate.zip")]) == 0
    first, second = (tmp_path / "a1.zip").read_bytes(), (tmp_path / "another-name.crate.zip")
    assert first == second.read_bytes()
    readme = _entries(tmp_path / "a1.zip")["README.md"].decode()
    assert "a1.zip" not in readme and "velocity reproduce ARCHIVE" in readme


def test_an_existing_archive_is_replaced_only_with_force(
    csv_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "a.zip"
    target.write_bytes(b"precious")
    _refused(["archive", str(csv_sweep), "-o", str(target)], capsys, "exists", "--force")
    assert target.read_bytes() == b"precious"
    assert main(["archive", str(csv_sweep), "-o", str(target), "--force"]) == 0
    assert zipfile.is_zipfile(target)
    default = csv_sweep.with_name(csv_sweep.name + ".crate.zip")
    default.write_bytes(b"x")
    try:
        _refused(["archive", str(csv_sweep)], capsys, "exists")
    finally:
        default.unlink()


def test_the_readme_says_how_to_install_without_an_index(csv_sweep: Path, tmp_path: Path) -> None:
    assert main(["archive", str(csv_sweep), "-o", str(tmp_path / "a.zip")]) == 0
    readme = _entries(tmp_path / "a.zip")["README.md"].decode()
    assert "pip install 'velocity-fl==" in readme
    assert "--no-index --find-links WHEELS" in readme and "--include-code" in readme


@pytest.mark.slow
def test_include_code_carries_a_wheel_that_installs_offline(
    csv_sweep: Path, tmp_path: Path
) -> None:
    from velocity import __version__

    archive = tmp_path / "code.zip"
    assert main(["archive", str(csv_sweep), "-o", str(archive), "--include-code"]) == 0
    again = tmp_path / "again.zip"
    assert main(["archive", str(csv_sweep), "-o", str(again), "--include-code"]) == 0
    assert archive.read_bytes() == again.read_bytes()  # the wheel is deterministic too
    files = _entries(archive)
    wheel = f"code/velocity_fl-{__version__}-py3-none-any.whl"
    assert wheel in files
    readme = files["README.md"].decode()
    assert f"pip install --no-index --no-deps {wheel}" in readme
    local = tmp_path / (wheel.split("/")[-1])
    local.write_bytes(files[wheel])
    site = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_NO_INDEX"] = "1"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(local),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import velocity, sys; print(velocity.__file__, velocity.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(site)},
    ).stdout.split()
    assert probe[0].startswith(str(site)) and probe[1] == __version__
    assert (site / "bin" / "velocity").is_file()  # the console script is made from the wheel
    assert main(["inspect", str(archive)]) == 0


@pytest.mark.slow
def test_reproduce_writes_nothing_under_home(csv_sweep: Path, tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    assert main(["archive", str(csv_sweep), "-o", str(archive)]) == 0
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME")}
    env.update(
        HOME=str(home), VELOCITY_STORE=str(tmp_path / "store.db"), TMPDIR=str(tmp_path / "tmp")
    )
    (tmp_path / "tmp").mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "velocity",
            "reproduce",
            str(archive),
            "--out",
            "re",
            "--check",
            "--exact",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert list(home.iterdir()) == []
    assert any((tmp_path / "tmp").glob("velocity-matplotlib-*"))
