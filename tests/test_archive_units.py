"""Reading untrusted archives and comparing results, without a sweep: hostile zips built by hand,
the value comparison rules, verdicts, environment drift and option parsing."""

from __future__ import annotations

import io
import json
import math
import stat
import zipfile
from pathlib import Path

import pytest

from velocity.archives import (
    ArchiveLimits,
    compare_rounds,
    compare_run,
    environment_drift,
    member_name_problem,
    read_crate,
    verify_crate,
)
from velocity.archives.crate import iso_utc, write_deterministic_zip
from velocity.cli import main
from velocity.cli.archive import parse_run_names
from velocity.errors import ArchiveError, InputError
from velocity.records import run_name_problem
from velocity.sweepdir import SweepRun, values_match

PROBE = "velocity-zip-slip-probe.txt"


def _zip_bytes(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return buffer.getvalue()


def _metadata_for(
    files: dict[str, bytes], extra_ids: tuple[str, ...] = (), folders: tuple[str, ...] = ()
) -> bytes:
    import hashlib

    graph = [
        {"@id": "ro-crate-metadata.json", "@type": "CreativeWork", "about": {"@id": "./"}},
        {"@id": "./", "@type": "Dataset", "hasPart": [{"@id": n} for n in [*files, *extra_ids]]},
    ]
    graph += [{"@id": folder, "@type": "Dataset"} for folder in folders]
    for name, data in files.items():
        graph.append(
            {
                "@id": name,
                "@type": "File",
                "contentSize": str(len(data)),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return json.dumps({"@context": [], "@graph": graph}).encode()


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _reproduce_rejects(
    tmp_path: Path, data: bytes, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`velocity reproduce` on ``data`` exits 2 naming ``needle`` and writes nothing anywhere."""
    archive = tmp_path / "in" / "hostile.crate.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(data)
    out = tmp_path / "arena" / "out"
    out.parent.mkdir(parents=True, exist_ok=True)
    before = _snapshot(tmp_path)
    code = main(["reproduce", str(archive), "--out", str(out), "--check"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert _snapshot(tmp_path) == before
    assert not (tmp_path.parent / PROBE).exists() and not Path("/tmp", PROBE).exists()
    # `inspect` refuses it the same way, and runs nothing.
    assert main(["inspect", str(archive)]) == 2
    capsys.readouterr()


# ----------------------------------------------------------------------------- entry names


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../" + PROBE, "'..' in path"),
        ("runs/../../" + PROBE, "'..' in path"),
        ("/tmp/" + PROBE, "absolute path"),
        ("runs\\..\\" + PROBE, "backslash in name"),
        ("C:/" + PROBE, "drive letter in name"),
        ("c:" + PROBE, "drive letter in name"),
        ("a\x00b.txt", "NUL byte in name"),
        ("a//b.txt", "empty or '.' path component"),
        ("./b.txt", "empty or '.' path component"),
        ("a/\x07.txt", "control character in name"),
        ("", "empty name"),
        ("x" * 600, "name longer than 512 characters"),
    ],
)
def test_unsafe_member_names_are_named(name: str, problem: str) -> None:
    assert member_name_problem(name) == problem


@pytest.mark.parametrize("name", ["fedavg/rounds.csv", "plots/", "a.b=c+d-e_f/x.json", "README.md"])
def test_safe_member_names_pass(name: str) -> None:
    assert member_name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    ["../" + PROBE, "/tmp/" + PROBE, "dir\\..\\..\\" + PROBE, "C:/" + PROBE, "ok/../../" + PROBE],
)
def test_zip_slip_archives_are_refused(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _zip_bytes([("ro-crate-metadata.json", b"{}"), (name, b"pwned")])
    _reproduce_rejects(tmp_path, data, "unsafe entry name", capsys)


def test_nul_byte_in_an_entry_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # zipfile cuts names at a NUL when writing, so patch the bytes of an equally long name.
    data = _zip_bytes([("ro-crate-metadata.json", b"{}"), ("evilX.txt", b"x")])
    data = data.replace(b"evilX.txt", b"evil\x00.txt")
    _reproduce_rejects(tmp_path, data, "NUL byte in name", capsys)


def test_duplicate_entries_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = _zip_bytes([("ro-crate-metadata.json", b"{}"), ("a.txt", b"1"), ("a.txt", b"2")])
    _reproduce_rejects(tmp_path, data, "duplicate entry 'a.txt'", capsys)


def test_case_insensitive_duplicates_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(
        _zip_bytes([("ro-crate-metadata.json", b"{}"), ("A.txt", b"1"), ("a.txt", b"2")])
    )
    with pytest.raises(ArchiveError, match="duplicate entry"):
        read_crate(path)


def _special_entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def test_symlink_entry_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = _special_entry("fedavg/rounds.csv", stat.S_IFLNK | 0o777)
    data = _zip_bytes([("ro-crate-metadata.json", b"{}"), (link, b"/etc/passwd")])
    _reproduce_rejects(tmp_path, data, "is a symbolic link", capsys)


def test_device_entry_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    device = _special_entry("dev/zero", stat.S_IFCHR | 0o666)
    data = _zip_bytes([("ro-crate-metadata.json", b"{}"), (device, b"")])
    _reproduce_rejects(tmp_path, data, "device or special file", capsys)


def test_zip_bomb_is_refused_by_its_compression_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = bytes(8 * 1024 * 1024)  # 8 MiB of zeros deflate to ~8 KiB, about 1000:1
    data = _zip_bytes([("ro-crate-metadata.json", b"{}"), ("bomb.csv", bomb)])
    assert len(data) < 100_000
    _reproduce_rejects(tmp_path, data, "zip bomb", capsys)


def test_declared_sizes_over_the_limits_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(_zip_bytes([("ro-crate-metadata.json", b"{}"), ("big.txt", b"y" * 5000)]))
    with pytest.raises(ArchiveError, match="declares 5000 bytes, over the limit of 1000"):
        read_crate(path, ArchiveLimits(max_entry_bytes=1000))
    with pytest.raises(ArchiveError, match="in total, over the limit of 3000"):
        read_crate(path, ArchiveLimits(max_total_bytes=3000))
    with pytest.raises(ArchiveError, match="2 entries, over the limit of 1"):
        read_crate(path, ArchiveLimits(max_entries=1))


def test_entry_that_lies_about_its_size_is_refused_while_streaming(tmp_path: Path) -> None:
    # Declare 10 bytes for an entry that inflates to 100000: reading must stop, never trust it.
    payload = bytes(range(256)) * 400
    data = bytearray(_zip_bytes([("ro-crate-metadata.json", b"{}"), ("liar.bin", payload)]))
    real = len(payload).to_bytes(4, "little")
    for offset in [i for i in range(len(data) - 4) if data[i : i + 4] == real]:
        data[offset : offset + 4] = (10).to_bytes(4, "little")
    path = tmp_path / "liar.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=r"liar\.bin|not a readable zip"):
        read_crate(path)


def test_non_zip_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _reproduce_rejects(
        tmp_path, b"%PDF-1.4 definitely not a zip\n" * 10, "not a readable zip", capsys
    )


def test_zero_byte_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _reproduce_rejects(tmp_path, b"", "not a readable zip", capsys)


def test_empty_zip_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _reproduce_rejects(tmp_path, _zip_bytes([]), "the archive is empty", capsys)


def test_zip_without_crate_metadata_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _reproduce_rejects(tmp_path, _zip_bytes([("a.txt", b"x")]), "no ro-crate-metadata.json", capsys)


def test_missing_archive_is_an_input_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["inspect", str(tmp_path / "nope.zip")]) == 2
    assert "archive not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bad_id", "needle"),
    [
        ("../" + PROBE, "'..' in path"),
        ("/etc/passwd", "absolute path"),
        ("file:///etc/passwd", "URI scheme 'file' is not allowed"),
        ("%2e%2e/" + PROBE, "'..' in path"),
        ("sub/%2E%2E/%2E%2E/x", "'..' in path"),
    ],
)
def test_metadata_ids_escaping_the_crate_are_refused(
    tmp_path: Path, bad_id: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {"a.txt": b"x"}
    metadata = _metadata_for(files, extra_ids=(bad_id,))
    data = _zip_bytes([("ro-crate-metadata.json", metadata), ("a.txt", b"x")])
    _reproduce_rejects(tmp_path, data, "escapes the crate or is unsafe", capsys)
    with pytest.raises(ArchiveError, match=needle.replace("'", ".")):
        path = tmp_path / "ids.zip"
        path.write_bytes(data)
        read_crate(path)


def test_verification_names_the_edited_unlisted_and_missing_files(tmp_path: Path) -> None:
    files = {"a.txt": b"hello", "sub/b.csv": b"x,y\n1,2\n"}
    path = tmp_path / "c.zip"

    def verify(contents: dict[str, bytes], folders: tuple[str, ...] = ("sub/",)) -> int:
        metadata = _metadata_for(files, folders=folders)
        write_deterministic_zip(
            {**contents, "ro-crate-metadata.json": metadata}, path, (2024, 1, 1, 0, 0, 0)
        )
        return verify_crate(read_crate(path))

    assert verify(files) == 2
    with pytest.raises(ArchiveError, match="sub/: folder not listed"):
        verify(files, folders=())
    with pytest.raises(ArchiveError, match=r"a\.txt: sha256 mismatch \(tampered or corrupt"):
        verify({**files, "a.txt": b"hellO"})
    with pytest.raises(ArchiveError, match=r"a\.txt: size 6 differs from the recorded 5"):
        verify({**files, "a.txt": b"hello!"})
    with pytest.raises(ArchiveError, match=r"extra\.txt: file not listed"):
        verify({**files, "extra.txt": b"?"})
    with pytest.raises(ArchiveError, match=r"sub/b\.csv: listed in .* but missing"):
        verify({"a.txt": files["a.txt"]}, folders=())


def test_deterministic_zip_has_fixed_times_modes_and_folder_entries(tmp_path: Path) -> None:
    contents = {"b/x.json": b"{}", "a.txt": b"a", "b/c/d.csv": b"1"}
    write_deterministic_zip(contents, tmp_path / "1.zip", (2025, 3, 1, 10, 5, 0))
    write_deterministic_zip(
        dict(reversed(contents.items())), tmp_path / "2.zip", (2025, 3, 1, 10, 5, 0)
    )
    assert (tmp_path / "1.zip").read_bytes() == (tmp_path / "2.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "1.zip") as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == ["a.txt", "b/", "b/c/", "b/c/d.csv", "b/x.json"]
    assert {i.date_time for i in infos} == {(2025, 3, 1, 10, 5, 0)}
    modes = {i.filename: stat.S_IMODE(i.external_attr >> 16) for i in infos}
    assert modes == {
        "a.txt": 0o644,
        "b/": 0o755,
        "b/c/": 0o755,
        "b/c/d.csv": 0o644,
        "b/x.json": 0o644,
    }
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_iso_utc_gives_the_process_run_crate_form() -> None:
    assert iso_utc("2025-03-01T10:05:00.123Z") == "2025-03-01T10:05:00.123+00:00"
    assert iso_utc("2025-03-01T12:05:00+02:00") == "2025-03-01T10:05:00+00:00"
    assert iso_utc("yesterday") is None and iso_utc(None) is None


# ----------------------------------------------------------------------------- comparison


@pytest.mark.parametrize(
    ("a", "b", "exact", "expected"),
    [
        (math.nan, math.nan, True, True),
        (math.nan, math.nan, False, True),
        (math.nan, 0.5, False, False),
        (0.5, math.nan, True, False),
        (0.0, -0.0, True, False),
        (0.0, -0.0, False, True),
        (0.1 + 0.2, 0.3, True, False),
        (0.1 + 0.2, 0.3, False, True),
        (1.0, 1.0 + 1e-3, False, False),
        (math.inf, math.inf, True, True),
        (math.inf, -math.inf, False, False),
        (10400, 10400, True, True),
        (10400, 10401, False, False),
        (None, None, True, True),
        (None, 0.0, False, False),
        ("2", "2", True, True),
        ("2", "3", False, False),
    ],
)
def test_values_match_rules(a: object, b: object, exact: bool, expected: bool) -> None:
    assert values_match(a, b, exact=exact, tolerance=1e-6) is expected


def _run(status: str | None, rounds: list[dict[str, object]] | None) -> SweepRun:
    summary = None if status is None else {"status": status, "error": None}
    return SweepRun("r", None, None, summary, rounds)


ROUNDS = [
    {"round": 1, "test_loss": 1.0, "test_accuracy": 0.5, "round_seconds": 0.1},
    {"round": 2, "test_loss": math.nan, "test_accuracy": 0.6, "round_seconds": 0.2},
]


def test_timings_are_never_compared_but_everything_else_is() -> None:
    slower = [{**r, "round_seconds": 99.0, "aggregate_seconds": 5.0} for r in ROUNDS]
    assert (
        compare_run(_run("diverged", ROUNDS), "diverged", slower, exact=True, tolerance=0).verdict
        == "ok"
    )
    edited = [ROUNDS[0], {**ROUNDS[1], "test_accuracy": 0.61}]
    verdict = compare_run(_run("diverged", ROUNDS), "diverged", edited, exact=True, tolerance=0)
    assert verdict.verdict == "MISMATCH"
    assert verdict.first_difference == {
        "round": 2,
        "metric": "test_accuracy",
        "archived": 0.6,
        "reproduced": 0.61,
    }
    assert "round 2 test_accuracy: archived 0.6, now 0.61" in verdict.detail


def test_a_new_or_vanished_metric_is_a_difference() -> None:
    extra = [{**r, "attack_success_rate": 0.0} for r in ROUNDS]
    first, count = compare_rounds(ROUNDS, extra, exact=False, tolerance=1e-6)
    assert first is not None and first["metric"] == "attack_success_rate" and count == 2


def test_a_different_number_of_rounds_is_a_mismatch() -> None:
    verdict = compare_run(_run("complete", ROUNDS), "complete", ROUNDS[:1], exact=True, tolerance=0)
    assert verdict.verdict == "MISMATCH" and "2 rounds archived, 1 now" in verdict.detail


@pytest.mark.parametrize(
    ("archived", "now", "verdict"),
    [
        ("failed", "failed", "ok"),
        ("diverged", "diverged", "ok"),
        ("failed", "complete", "MISMATCH"),
        ("diverged", "complete", "MISMATCH"),
        ("complete", "diverged", "MISMATCH"),
        ("complete", "failed", "FAILED"),
        ("diverged", "failed", "FAILED"),
    ],
)
def test_status_must_come_out_the_same(archived: str, now: str, verdict: str) -> None:
    result = compare_run(_run(archived, ROUNDS), now, ROUNDS, exact=True, tolerance=0)
    assert result.verdict == verdict
    if verdict != "ok":
        assert f"status {archived} archived, {now} now" in result.detail


def _failed(error: str | None) -> SweepRun:
    return SweepRun("r", None, None, {"status": "failed", "error": error}, [])


@pytest.mark.parametrize(
    ("archived", "now", "verdict"),
    [
        ("ValueError: krum needs 9 clients", "ValueError: krum needs nine clients", "ok"),
        ("ValueError: krum needs 9 clients", "KeyError: 'clients'", "MISMATCH"),
        ("SpecError: bad spec", "InputError: bad spec", "MISMATCH"),
        ("ValueError: x", None, "MISMATCH"),
        (None, None, "ok"),
    ],
)
def test_a_run_that_fails_again_must_fail_the_same_way(
    archived: str | None, now: str | None, verdict: str
) -> None:
    result = compare_run(
        _failed(archived), "failed", [], exact=True, tolerance=0, reproduced_error=now
    )
    assert result.verdict == verdict
    if verdict == "MISMATCH":
        # Both errors shown; the wording alone never decides (only the exception type).
        assert f"archived {archived!r}" in result.detail
        assert f"now {'missing' if now is None else repr(now)}" in result.detail
        assert result.differences == 1


def test_missing_on_either_side_is_missing() -> None:
    assert (
        compare_run(_run(None, None), "complete", ROUNDS, exact=True, tolerance=0).verdict
        == "MISSING"
    )
    assert (
        compare_run(_run("complete", ROUNDS), None, None, exact=True, tolerance=0).verdict
        == "MISSING"
    )


def test_environment_drift_lists_velocity_and_numpy_first() -> None:
    archived = {"zeta": "1.0", "numpy": "1.26.4", "velocity-fl": "0.1.0", "alpha": "2", "same": "1"}
    current = {"zeta": "1.1", "numpy": "2.0.0", "velocity-fl": "0.2.0", "beta": "3", "same": "1"}
    drift = environment_drift(
        archived, current, archived_velocity="0.1.0", current_velocity="0.2.0"
    )
    assert [(d.package, d.archived, d.current) for d in drift] == [
        ("velocity", "0.1.0", "0.2.0"),
        ("numpy", "1.26.4", "2.0.0"),
        ("alpha", "2", None),
        ("beta", None, "3"),
        ("zeta", "1.0", "1.1"),
    ]
    assert environment_drift({"Foo_Bar": "1"}, {"foo-bar": "1"}) == []


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("values", "extra", "expected"),
    [
        (None, None, None),
        (["a"], None, ["a"]),
        (["a", "b"], None, ["a", "b"]),
        (["a,b"], None, ["a", "b"]),
        (["a"], ["b", "c"], ["a", "b", "c"]),
        (["a,b"], ["c,d"], ["a", "b", "c", "d"]),
    ],
)
def test_runs_accepts_repeats_commas_and_several_values(
    values: list[str] | None, extra: list[str] | None, expected: list[str] | None
) -> None:
    assert parse_run_names(values, extra) == expected


def test_stray_arguments_without_runs_are_an_error() -> None:
    with pytest.raises(InputError, match="unexpected argument 'b'"):
        parse_run_names(None, ["b"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tolerance", "-1"], "--tolerance must be a finite number >= 0, got -1.0"),
        (["--tolerance", "nan"], "--tolerance must be a finite number >= 0"),
        (["--exact", "--tolerance", "1e-3"], "give either --exact (bitwise) or --tolerance"),
        (["--parallel", "0"], "--parallel must be an integer >= 1, got 0"),
        (["--runs", "../etc"], "--runs: run names use letters, digits"),
    ],
)
def test_options_are_checked_before_the_archive_is_read(
    tmp_path: Path, args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The archive does not even exist: the option error must come first.
    code = main(["reproduce", str(tmp_path / "absent.zip"), "--out", str(tmp_path / "o"), *args])
    assert code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_non_empty_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    assert main(["reproduce", str(tmp_path / "absent.zip"), "--out", str(tmp_path / "o")]) == 2
    assert "output folder exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("fedavg", None),
        ("krum-f2__alie__s1", None),
        ("../x", "run names use letters, digits"),
        ("a/b", "run names use letters, digits"),
        ("..", "run names use letters, digits"),
        ("reproduction.json", "reserved: the sweep folder has an entry"),
        ("Manifest.JSON", "reserved: the sweep folder has an entry"),
        ("plots", "reserved: the sweep folder has an entry"),
        ("CON", "device name on Windows"),
        ("com1.txt", "device name on Windows"),
    ],
)
def test_archived_run_names_must_be_safe_folders(name: str, problem: str | None) -> None:
    found = run_name_problem(name)
    assert found == problem if problem is None else problem in (found or "")
