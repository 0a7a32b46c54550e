"""sweep -> archive -> reproduce end to end, on one real sweep built once per session: the crate's
content and validity, byte-for-byte determinism, and tampered, damaged or incomplete archives."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from velocity import __version__
from velocity.archives import load_archived_sweep, read_crate, verify_crate
from velocity.archives.crate import iso_utc
from velocity.artifacts import (
    decode_floats,
    dumps_json,
    parse_csv_value,
    read_json,
    read_rounds_csv,
)
from velocity.cli import main
from velocity.errors import ArchiveError
from velocity.records import summarize_rounds
from velocity.report import build_comparison, comparison_markdown
from velocity.spec import spec_from_mapping
from velocity.sweepdir import read_sweep
from velocity.sweeps import run_sweep

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "jsonld"
BASE = {"dataset": "digits", "model": "logreg", "num_clients": 5, "rounds": 2, "seed": 3}
RUNS = {
    "fedavg": {"strategy": "fedavg"},
    "fedprox": {"strategy": "fedprox"},
    "krum": {"strategy": "krum:f=1"},
    "median-signflip": {"strategy": "median", "attack": "sign_flip", "byzantine": 1},
    "diverged": {"model": "mlp:hidden=8", "lr": 1e6, "momentum": 0.0},
    "failed": {"strategy": "krum:f=3"},  # Krum needs n >= 2f+3 = 9 clients per round: 5 given
}
EXPECTED_STATUS = {name: "complete" for name in RUNS} | {"diverged": "diverged", "failed": "failed"}
AUTHOR = ["--author", "Ada Lovelace", "--affiliation", "Analytical Engine Lab"]
AUTHOR += ["--affiliation-url", "https://example.org/lab"]


@pytest.fixture(scope="session")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    specs = [spec_from_mapping({**BASE, **fields, "name": name}) for name, fields in RUNS.items()]
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    result = run_sweep(specs, out, parallel=2)
    assert {name: r.status for name, r in result.results.items()} == EXPECTED_STATUS
    return out


@pytest.fixture(scope="session")
def archive(sweep_dir: Path) -> Path:
    target = sweep_dir.parent / "archives" / "sweep.crate.zip"
    target.parent.mkdir()
    assert main(["archive", str(sweep_dir), "-o", str(target), *AUTHOR]) == 0
    return target


# ----------------------------------------------------------------------------- helpers


def _entries(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as handle:
        return {i.filename: handle.read(i) for i in handle.infolist()}


def _metadata(files: dict[str, bytes]) -> dict[str, Any]:
    return json.loads(files["ro-crate-metadata.json"])


def _rewrite(
    archive: Path,
    target: Path,
    edit: Callable[[dict[str, bytes]], None],
    *,
    reseal: bool = False,
) -> Path:
    """A copy of ``archive`` with ``edit`` applied to its entries; ``reseal`` recomputes every
    checksum and size in the metadata (a careful forger) and drops entities of removed files."""
    files = _entries(archive)
    edit(files)
    if reseal:
        metadata = _metadata(files)
        graph = []
        for entity in metadata["@graph"]:
            name = entity["@id"]
            if entity.get("@type") == "File":
                if name not in files:
                    continue
                entity["sha256"] = hashlib.sha256(files[name]).hexdigest()
                entity["contentSize"] = str(len(files[name]))
            if entity.get("@type") == "Dataset" and name != "./" and name not in files:
                continue
            graph.append(entity)
        metadata["@graph"] = graph
        files["ro-crate-metadata.json"] = json.dumps(metadata, indent=2).encode()
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as handle:
        for name, data in files.items():
            handle.writestr(name, data)
    return target


def _edit_json(files: dict[str, bytes], name: str, change: Callable[[Any], None]) -> None:
    payload = json.loads(files[name])
    change(payload)
    files[name] = dumps_json(payload).encode()


def _edit_csv_value(
    files: dict[str, bytes], name: str, round_index: int, column: str, value: str
) -> str:
    lines = files[name].decode().splitlines()
    header = lines[0].split(",")
    cells = lines[round_index].split(",")
    old = cells[header.index(column)]
    cells[header.index(column)] = value
    lines[round_index] = ",".join(cells)
    files[name] = ("\n".join(lines) + "\n").encode()
    return old


def _rounds_of(data: bytes) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(data.decode(), newline=""))
    return [{k: parse_csv_value(v) for k, v in row.items()} for row in reader]


def _write_reports(folder: Path) -> None:
    """Rewrite comparison.json and comparison.md of a sweep folder as the sweep itself would."""
    data = read_sweep(folder)
    comparison = build_comparison(
        data, target_accuracy=read_json(folder / "comparison.json")["target_accuracy"]
    )
    (folder / "comparison.json").write_text(dumps_json(comparison))
    (folder / "comparison.md").write_text(comparison_markdown(comparison, data.manifest))


def _rederive_reports(files: dict[str, bytes]) -> None:
    """A careful forger: re-derive comparison.json and comparison.md from the (edited) runs."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for name, data in files.items():
            if name.endswith("/"):
                continue
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        _write_reports(root)
        for name in ("comparison.json", "comparison.md"):
            files[name] = (root / name).read_bytes()


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _reproduce(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["reproduce", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _expect_refused(
    archive: Path, tmp_path: Path, needle: str, capsys: pytest.CaptureFixture[str]
) -> str:
    out = tmp_path / "out"
    before = _tree(tmp_path)
    code, _, err = _reproduce([str(archive), "--out", str(out), "--check", "--exact"], capsys)
    assert code == 2, err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert _tree(tmp_path) == before  # nothing run, nothing written
    return err


# ----------------------------------------------------------------------------- the round trip


def test_reproduce_check_exact_matches_every_run(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "repro"
    code, stdout, _ = _reproduce([str(archive), "--out", str(out), "--check", "--exact"], capsys)
    assert code == 0, stdout
    report = read_json(out / "reproduction.json")
    assert report["schema"] == "velocity.reproduction/1"
    assert report["verdict"] == "reproduced" and report["comparison"] == "exact"
    verdicts = {r["name"]: (r["verdict"], r["reproduced_status"]) for r in report["runs"]}
    assert verdicts == {name: ("ok", status) for name, status in EXPECTED_STATUS.items()}
    assert report["archive_sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert "reproduced: 6/6 runs matched" in stdout
    # Same machine, same environment: no drift to warn about, nothing read differently.
    assert report["environment_drift"] == [] and report["platform_notes"] == []
    assert report["notes"] == []
    # The re-run is a full sweep of the archived specs, unchanged, inside --out.
    for name in RUNS:
        archived = json.loads(_entries(archive)[f"{name}/config.json"])
        assert read_json(out / name / "config.json")["spec"] == archived["spec"]
    # ...and the metrics really are bit-identical to the archived ones, NaN included.
    diverged = read_rounds_csv(out / "diverged" / "rounds.csv")
    assert repr(diverged[-1]["train_loss"]) == "nan"


def test_archive_holds_a_process_run_crate(archive: Path, sweep_dir: Path) -> None:
    files = _entries(archive)
    names = list(files)
    assert names == sorted(names)
    manifest = read_json(sweep_dir / "manifest.json")
    expected = {p.relative_to(sweep_dir).as_posix() for p in sweep_dir.rglob("*") if p.is_file()}
    added = {"README.md", "environment.txt", "ro-crate-metadata.json"}
    folders = {f"{name}/" for name in RUNS} | {"plots/"}
    assert set(names) == expected | added | folders
    metadata = _metadata(files)
    assert metadata["@context"][0] == "https://w3id.org/ro/crate/1.1/context"
    entities = {e["@id"]: e for e in metadata["@graph"]}
    root = entities["./"]
    assert root["conformsTo"] == {"@id": "https://w3id.org/ro/wfrun/process/0.5"}
    assert root["datePublished"] == iso_utc(manifest["finished_at"])
    assert entities[root["author"]["@id"]]["name"] == "Ada Lovelace"
    assert entities[root["publisher"]["@id"]]["url"] == "https://example.org/lab"
    assert entities[root["license"]["@id"]]["name"] == "CC-BY-4.0"
    app = entities["https://github.com/velocity-fl/velocity"]
    assert app["softwareVersion"] == manifest["velocity_version"]
    for name, data in files.items():
        if name.endswith("/"):
            assert entities[name]["@type"] == "Dataset"
        elif name != "ro-crate-metadata.json":
            entity = entities[name]
            assert entity["@type"] == "File" and entity["encodingFormat"]
            assert entity["sha256"] == hashlib.sha256(data).hexdigest()
            assert entity["contentSize"] == str(len(data))
    actions = {e["@id"]: e for e in metadata["@graph"] if e["@type"] == "CreateAction"}
    assert sorted(actions) == sorted(f"#run-{name}" for name in RUNS)
    assert {a["@id"] for a in _as_list(root["mentions"])} == set(actions)
    for name, status in EXPECTED_STATUS.items():
        action = actions[f"#run-{name}"]
        summary = read_json(sweep_dir / name / "summary.json")
        assert action["object"] == {"@id": f"{name}/config.json"}
        assert {r["@id"] for r in _as_list(action["result"])} >= {f"{name}/summary.json"}
        assert action["startTime"] == iso_utc(summary["started_at"])
        assert action["endTime"] == iso_utc(summary["finished_at"])
        assert action["agent"] == root["author"]
        failed = status == "failed"
        assert action["actionStatus"].endswith(
            "FailedActionStatus" if failed else "CompletedActionStatus"
        )
        assert ("error" in action) is failed
    assert (
        actions["#run-failed"]["error"] == read_json(sweep_dir / "failed" / "summary.json")["error"]
    )
    environment = files["environment.txt"].decode().splitlines()
    pins = [line for line in environment if not line.startswith("#")]
    assert pins == [
        f"{k}=={v}" for k, v in sorted(manifest["packages"].items(), key=lambda i: i[0].lower())
    ]
    assert any(line.startswith("# python: ") for line in environment)
    readme = files["README.md"].decode()
    assert "velocity reproduce ARCHIVE --check --exact" in readme
    assert "sweep.crate.zip" not in readme  # the archive's bytes never depend on its name


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_archiving_twice_gives_identical_bytes(archive: Path, sweep_dir: Path) -> None:
    for path in sweep_dir.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))  # file times must not leak in
    again = sweep_dir.parent / "again" / archive.name
    again.parent.mkdir()
    assert main(["archive", str(sweep_dir), "-o", str(again), *AUTHOR]) == 0
    assert again.read_bytes() == archive.read_bytes()


def test_archive_passes_rocrate_validator_offline(archive: Path, tmp_path: Path) -> None:
    pytest.importorskip("rocrate_validator")
    pytest.importorskip("requests_cache")
    import requests
    import urllib3
    from requests_cache import CachedSession
    from rocrate_validator import models, services

    cache_name = str(tmp_path / "http-cache")
    session = CachedSession(cache_name=cache_name, backend="sqlite", expire_after=-1)
    for url, file in [
        ("https://w3id.org/ro/crate/1.1/context", "rocrate-1.1-context.jsonld"),
        ("https://w3id.org/ro/terms/workflow-run/context", "wfrun-context.json"),
    ]:
        body = (FIXTURES / file).read_bytes()
        response = requests.Response()
        response.status_code, response.url, response._content = 200, url, body
        response.headers["Content-Type"] = "application/ld+json"
        response.request = requests.Request("GET", url).prepare()
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(body),
            headers=dict(response.headers),
            status=200,
            preload_content=False,
            request_url=url,
        )
        session.cache.save_response(response)
    session.close()
    for severity in (models.Severity.REQUIRED, models.Severity.RECOMMENDED):
        settings = services.ValidationSettings(
            rocrate_uri=str(archive),
            profile_identifier="process-run-crate-0.5",
            requirement_severity=severity,
            offline=True,
            cache_path=cache_name,
        )
        result = services.validate(settings)
        issues = [f"{i.severity}: {i.message}" for i in result.get_issues()]
        assert result.passed(), issues


def test_inspect_describes_without_running(
    archive: Path, sweep_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(sweep_dir.parent)
    assert main(["inspect", str(archive), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["verified"] is True and info["problem"] is None
    assert {r["name"]: r["status"] for r in info["runs"]} == EXPECTED_STATUS
    manifest = read_json(sweep_dir / "manifest.json")
    assert info["velocity_version"] == manifest["velocity_version"]
    assert info["packages"] == manifest["packages"]
    assert info["date_published"] == iso_utc(manifest["finished_at"])
    assert main(["inspect", str(archive)]) == 0
    text = capsys.readouterr().out
    assert "verified" in text and "median-signflip" in text and "Ada Lovelace" in text
    assert _tree(sweep_dir.parent) == before


# ----------------------------------------------------------------------------- tampering


def test_every_edited_file_is_named_as_tampered(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [n for n in _entries(archive) if not n.endswith("/") and n != "ro-crate-metadata.json"]
    assert len(names) > 20
    for name in names:

        def flip(files: dict[str, bytes], name: str = name) -> None:
            data = bytearray(files[name])
            data[len(data) // 2] ^= 0x01
            files[name] = bytes(data)

        hostile = _rewrite(archive, tmp_path / "in" / "edited.zip", flip)
        err = _expect_refused(hostile, tmp_path / "arena", f"{name}: sha256 mismatch", capsys)
        assert "tampered or corrupt" in err
        assert main(["inspect", str(hostile)]) == 2
        assert "verification FAILED" in capsys.readouterr().err


def test_edited_checksum_in_the_metadata_is_refused(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(files: dict[str, bytes]) -> None:
        def change(metadata: dict[str, Any]) -> None:
            for entity in metadata["@graph"]:
                if entity["@id"] == "krum/rounds.csv":
                    entity["sha256"] = "0" * 64

        _edit_json(files, "ro-crate-metadata.json", change)

    hostile = _rewrite(archive, tmp_path / "in" / "x.zip", edit)
    _expect_refused(hostile, tmp_path / "arena", "krum/rounds.csv: sha256 mismatch", capsys)


def test_added_file_is_refused(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def add(files: dict[str, bytes]) -> None:
        files["fedavg/extra.py"] = b"import os\n"

    hostile = _rewrite(archive, tmp_path / "in" / "x.zip", add)
    _expect_refused(hostile, tmp_path / "arena", "fedavg/extra.py: file not listed", capsys)


def _forge_metrics(files: dict[str, bytes], run: str, value: float) -> float:
    """Change round 2's test_accuracy of ``run`` in rounds.csv, summary.json and comparison.json."""
    old = float(_edit_csv_value(files, f"{run}/rounds.csv", 2, "test_accuracy", repr(value)))

    def summary(payload: dict[str, Any]) -> None:
        payload["final"]["test_accuracy"] = value
        payload["best"] = summarize_rounds(_rounds_of(files[f"{run}/rounds.csv"]))[0]

    def comparison(payload: dict[str, Any]) -> None:
        entry = next(r for r in payload["runs"] if r["name"] == run)
        entry["rounds"][1]["test_accuracy"] = value
        entry["final"]["test_accuracy"] = value

    _edit_json(files, f"{run}/summary.json", summary)
    _edit_json(files, "comparison.json", comparison)
    return old


def test_consistently_forged_metrics_are_a_mismatch(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original: dict[str, float] = {}

    def forge(files: dict[str, bytes]) -> None:
        original["value"] = _forge_metrics(files, "median-signflip", 0.123456)
        _rederive_reports(files)  # best, groups, ranking and comparison.md agree with the forgery

        def older_numpy(manifest: dict[str, Any]) -> None:
            manifest["packages"]["numpy"] = "1.0.0"

        _edit_json(files, "manifest.json", older_numpy)

    forged = _rewrite(archive, tmp_path / "forged.zip", forge, reseal=True)
    assert main(["inspect", str(forged)]) == 0  # self-consistent: only a re-run can tell
    capsys.readouterr()
    out = tmp_path / "out"
    args = [str(forged), "--out", str(out), "--check", "--exact", "--runs", "median-signflip"]
    code, stdout, err = _reproduce([*args, "--json"], capsys)
    assert code == 1
    report = json.loads(stdout)
    assert report == json.loads((out / "reproduction.json").read_text())  # same document
    (run,) = report["runs"]
    assert run["verdict"] == "MISMATCH"
    assert run["first_difference"] == {
        "round": 2,
        "metric": "test_accuracy",
        "archived": 0.123456,
        "reproduced": original["value"],
    }
    assert report["environment_drift"][0]["package"] == "numpy"
    assert report["environment_drift"][0]["archived"] == "1.0.0"
    assert "warning" in err and "numpy: 1.0.0 archived" in err
    # Without --check the same comparison is reported, but it does not decide the exit code.
    code, stdout, _ = _reproduce(
        [str(forged), "--out", str(tmp_path / "o2"), "--runs", "median-signflip", "--exact"], capsys
    )
    assert code == 0 and "MISMATCH" in stdout


@pytest.mark.parametrize("which", ["rounds.csv", "summary.json", "comparison.json"])
def test_records_that_disagree_are_an_inconsistent_archive(
    archive: Path, tmp_path: Path, which: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def forge_one(files: dict[str, bytes]) -> None:
        forged: dict[str, bytes] = dict(files)
        _forge_metrics(forged, "fedavg", 0.5)
        name = "comparison.json" if which == "comparison.json" else f"fedavg/{which}"
        files[name] = forged[name]

    hostile = _rewrite(archive, tmp_path / "in" / "x.zip", forge_one, reseal=True)
    _expect_refused(hostile, tmp_path / "arena", "inconsistent archive", capsys)


def _forge_comparison(files: dict[str, bytes], change: Callable[[Any], None]) -> None:
    """Edit comparison.json and re-render comparison.md from it, so the two agree."""
    _edit_json(files, "comparison.json", change)
    comparison = decode_floats(json.loads(files["comparison.json"]))
    manifest = decode_floats(json.loads(files["manifest.json"]))
    files["comparison.md"] = comparison_markdown(comparison, manifest).encode()


def _run_entry(payload: dict[str, Any], name: str) -> dict[str, Any]:
    entry: dict[str, Any] = next(r for r in payload["runs"] if r["name"] == name)
    return entry


def _forge_best(files: dict[str, bytes]) -> None:
    def better(payload: dict[str, Any]) -> None:
        payload["best"]["test_accuracy"] = 0.999

    _edit_json(files, "fedavg/summary.json", better)
    _forge_comparison(files, lambda c: better(_run_entry(c, "fedavg")))


def _forge_totals(files: dict[str, bytes]) -> None:
    def cheaper(payload: dict[str, Any]) -> None:
        payload["totals"]["bytes_up"] //= 2
        payload["totals"]["bytes"] = payload["totals"]["bytes_up"] + payload["totals"]["bytes_down"]

    _edit_json(files, "krum/summary.json", cheaper)
    _forge_comparison(files, lambda c: cheaper(_run_entry(c, "krum")))


def _forge_groups(files: dict[str, bytes]) -> None:
    def tighter(payload: dict[str, Any]) -> None:
        group = next(g for g in payload["groups"] if g["label"] == "fedprox")
        group["test_accuracy_mean"] += 0.01

    _forge_comparison(files, tighter)


def _forge_drop(files: dict[str, bytes]) -> None:
    _forge_comparison(files, lambda c: _run_entry(c, "median-signflip").update(accuracy_drop=0.01))


def _forge_rounds_to_target(files: dict[str, bytes]) -> None:
    _forge_comparison(files, lambda c: _run_entry(c, "fedavg").update(rounds_to_target=1))


def _forge_ranking(files: dict[str, bytes]) -> None:
    _forge_comparison(files, lambda c: c["ranking"].reverse())


def _forge_markdown(files: dict[str, bytes]) -> None:
    lines = files["comparison.md"].decode().split("\n")
    index = next(i for i, line in enumerate(lines) if "| fedavg |" in line)
    cells = lines[index].split(" | ")
    cells[6] = "0.9999"  # final acc
    lines[index] = " | ".join(cells)
    files["comparison.md"] = "\n".join(lines).encode()


@pytest.mark.parametrize(
    ("forge", "needle"),
    [
        (_forge_best, "fedavg/summary.json: best.test_accuracy is 0.999 but fedavg/rounds.csv"),
        (_forge_totals, "krum/summary.json: totals.bytes_up is"),
        (_forge_groups, "comparison.json: groups['fedprox'].test_accuracy_mean is"),
        (_forge_drop, "comparison.json: runs['median-signflip'].accuracy_drop is 0.01"),
        (_forge_rounds_to_target, "comparison.json: runs['fedavg'].rounds_to_target is 1"),
        (_forge_ranking, "comparison.json: ranking[0] is"),
        (_forge_markdown, "comparison.md: line"),
    ],
)
def test_forged_derived_records_are_an_inconsistent_archive(
    archive: Path,
    tmp_path: Path,
    forge: Callable[[dict[str, bytes]], None],
    needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Resealed: every checksum verifies, only re-deriving the records from rounds.csv tells.
    hostile = _rewrite(archive, tmp_path / "in" / "x.zip", forge, reseal=True)
    err = _expect_refused(hostile, tmp_path / "arena", "inconsistent archive", capsys)
    assert needle in err, err
    assert main(["inspect", str(hostile), "--json"]) == 2  # inspect says it does not verify
    info = json.loads(capsys.readouterr().out)
    assert info["verified"] is False and needle in info["problem"]


def test_an_archive_claiming_another_velocity_is_checked_with_the_strictest_rules(
    archive: Path, tmp_path: Path
) -> None:
    def claims_another_version(files: dict[str, bytes]) -> None:
        _edit_json(files, "manifest.json", lambda m: m.update(velocity_version="99.0.0"))
        _rederive_reports(files)

    other = _rewrite(archive, tmp_path / "other.zip", claims_another_version, reseal=True)
    crate = read_crate(other)
    verify_crate(crate)
    sweep = load_archived_sweep(crate)
    assert sweep.notes == [
        f"archived by velocity '99.0.0', this is {__version__}: every record was re-derived "
        "and checked as this version writes it"
    ]

    # The claim turns no check off: relabelled strategies or an edited comparison.md are caught.
    def relabelled(files: dict[str, bytes]) -> None:
        claims_another_version(files)
        _edit_json(files, "comparison.json", lambda c: _run_entry(c, "krum").update(strategy="K"))

    def forged_markdown(files: dict[str, bytes]) -> None:
        claims_another_version(files)
        files["comparison.md"] += b"\nrendered by another velocity\n"

    for forge, needle in (
        (relabelled, r"runs\['krum'\]\.strategy is 'K'"),
        (forged_markdown, r"comparison\.md: line"),
        (lambda f: (claims_another_version(f), _forge_groups(f)), r"test_accuracy_mean is"),
    ):
        crate = read_crate(_rewrite(archive, tmp_path / "forged.zip", forge, reseal=True))
        verify_crate(crate)
        with pytest.raises(ArchiveError, match=needle):
            load_archived_sweep(crate)


def test_changed_config_is_caught(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def stale(files: dict[str, bytes]) -> None:
        _edit_json(files, "krum/config.json", lambda c: c["spec"].update(lr=0.5))

    hostile = _rewrite(archive, tmp_path / "in" / "stale.zip", stale, reseal=True)
    _expect_refused(hostile, tmp_path / "arena", "differs from the config manifest.json", capsys)


def _change_krum_lr(files: dict[str, bytes], *, in_manifest: bool) -> None:
    config = json.loads(files["krum/config.json"])
    config["spec"]["lr"] = 0.5
    fingerprint = spec_from_mapping(config["spec"]).fingerprint
    config["fingerprint"] = fingerprint
    files["krum/config.json"] = dumps_json(config).encode()
    _edit_json(files, "krum/summary.json", lambda s: s.update(fingerprint=fingerprint))
    if in_manifest:
        _edit_json(files, "manifest.json", lambda m: m["configs"].update(krum=config))
    _rederive_reports(files)


def test_consistently_changed_config_is_a_mismatch(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Changed in config.json only: the manifest's own copy of the config tells.
    half = _rewrite(
        archive, tmp_path / "half.zip", lambda f: _change_krum_lr(f, in_manifest=False), reseal=True
    )
    _expect_refused(half, tmp_path / "arena", "differs from the config manifest.json", capsys)
    # Changed everywhere: the archive is consistent, and its results are not what it runs to.
    forged = _rewrite(
        archive,
        tmp_path / "forged.zip",
        lambda f: _change_krum_lr(f, in_manifest=True),
        reseal=True,
    )
    out = tmp_path / "out"
    code, stdout, _ = _reproduce(
        [str(forged), "--out", str(out), "--check", "--runs", "krum"], capsys
    )
    assert code == 1, stdout
    (run,) = read_json(out / "reproduction.json")["runs"]
    assert run["verdict"] == "MISMATCH" and run["first_difference"]["round"] == 1
    assert "MISMATCH" in stdout


def test_removed_run_is_refused(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def remove(files: dict[str, bytes]) -> None:
        for name in [n for n in files if n.startswith("fedprox/")]:
            del files[name]

    naive = _rewrite(archive, tmp_path / "in" / "naive.zip", remove)
    err = _expect_refused(naive, tmp_path / "arena", "but missing from the archive", capsys)
    assert "fedprox/" in err
    careful = _rewrite(archive, tmp_path / "in" / "careful.zip", remove, reseal=True)
    _expect_refused(
        careful,
        tmp_path / "arena",
        "inconsistent archive: comparison.json has results for 'fedprox'",
        capsys,
    )


def test_unknown_run_selection_is_refused(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, _, err = _reproduce([str(archive), "--out", str(out), "--runs", "fedavg", "nope"], capsys)
    assert code == 2 and "no run 'nope' in the archive; it holds: fedavg, fedprox" in err
    assert not out.exists()


# ----------------------------------------------------------------------------- incomplete sweeps


def test_incomplete_sweep_is_refused_unless_allowed(
    sweep_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(sweep_dir, partial)
    (partial / "fedprox" / "summary.json").unlink()
    (partial / "fedprox" / "rounds.csv").unlink()
    manifest = read_json(partial / "manifest.json")
    manifest["complete"] = False
    (partial / "manifest.json").write_text(dumps_json(manifest))
    _write_reports(partial)  # as an interrupted sweep leaves them: fedprox 'incomplete'
    assert '"status": "incomplete"' in (partial / "comparison.json").read_text()

    target = tmp_path / "partial.crate.zip"
    assert main(["archive", str(partial), "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert "not a complete sweep (runs without summary.json: fedprox)" in err
    assert "--allow-incomplete" in err and not target.exists()

    assert main(["archive", str(partial), "-o", str(target), "--allow-incomplete", "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["missing_runs"] == ["fedprox"]
    files = _entries(target)
    assert "no results for runs fedprox" in _metadata(files)["@graph"][1]["description"]
    assert "`fedprox` | missing" in files["README.md"].decode()
    assert main(["inspect", str(target), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["missing_runs"] == ["fedprox"]

    out = tmp_path / "out"
    code, stdout, _ = _reproduce(
        [str(target), "--out", str(out), "--check", "--runs", "fedprox"], capsys
    )
    assert code == 1
    (run,) = read_json(out / "reproduction.json")["runs"]
    assert run["verdict"] == "MISSING" and run["reproduced_status"] == "complete"
    assert "MISSING" in stdout


def test_archive_refuses_a_folder_that_is_not_a_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["archive", str(tmp_path)]) == 2
    assert "not a sweep folder (no manifest.json)" in capsys.readouterr().err
    assert main(["archive", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_archive_options_are_validated(
    sweep_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            ["archive", str(sweep_dir), "-o", str(tmp_path / "x.zip"), "--license", "not a license"]
        )
        == 2
    )
    assert "--license takes an SPDX identifier" in capsys.readouterr().err
    assert main(["archive", str(sweep_dir), "-o", str(sweep_dir / "inside.zip")]) == 2
    assert "cannot be written inside the sweep folder" in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists() and not (sweep_dir / "inside.zip").exists()


def test_archive_refuses_a_missing_output_folder(
    sweep_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no" / "such" / "x.zip"
    assert main(["archive", str(sweep_dir), "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'no' / 'such'}: no such folder for the archive" in err
    assert len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []  # no folder created, nothing written
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    assert main(["archive", str(sweep_dir), "-o", str(not_a_folder / "x.zip")]) == 2
    assert "no such folder for the archive" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
