"""Plug-ins: a researcher's own aggregator or attack, from a file, a module or an installed
package; its source is part of every run's identity, travels with the sweep and its archive,
and reproduce loads exactly the archived copy."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from velocity import Param
from velocity.errors import InputError, SpecError
from velocity.spec import spec_from_mapping
from velocity.strategies import AGGREGATORS, aggregator
from velocity.testing import check_aggregator, check_attack

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugins"
VELOCITY = [sys.executable, "-m", "velocity"]


def _velocity(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*VELOCITY, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def inline() -> Iterator[list[str]]:
    """Names registered inline by a test, removed again afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        AGGREGATORS._remove(name)


def test_the_example_plugin_passes_the_public_contract() -> None:
    code = subprocess.run(
        [
            sys.executable,
            "-c",
            "from velocity.plugins import load_plugin; from velocity.testing import "
            f"check_aggregator; load_plugin({str(EXAMPLE / 'my_median.py')!r}); "
            "check_aggregator('my_median'); print('ok')",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert code.stdout.strip() == "ok", code.stderr


def _register(inline: list[str], name: str, fn: Any, **kwargs: Any) -> None:
    aggregator(name, summary="test rule", **kwargs)(fn)
    inline.append(name)


def test_the_contract_checks_catch_broken_aggregators(inline: list[str]) -> None:
    def mutates(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
        updates[0] = 0.0
        return updates.mean(axis=0).astype(np.float32)

    def float64(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return updates.mean(axis=0, dtype=np.float64)

    def first_row(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return updates[0].copy()

    calls = []

    def unseeded(updates: np.ndarray, weights: np.ndarray, *, rng: Any) -> np.ndarray:
        calls.append(1)  # ignores its rng: a different output on every call
        return updates[len(calls) % len(updates)].copy()

    _register(inline, "t_mutates", mutates)
    _register(inline, "t_float64", float64)
    _register(inline, "t_first_row", first_row)
    _register(inline, "t_first_row_declared", first_row, symmetric=False)
    _register(inline, "t_unseeded", unseeded, seeded=True, symmetric=False)
    with pytest.raises(AssertionError, match="t_mutates: must not modify the updates"):
        check_aggregator("t_mutates")
    with pytest.raises(AssertionError, match="t_float64: must return float32"):
        check_aggregator(float64)  # the function itself works as well as its name
    with pytest.raises(AssertionError, match="declared symmetric but the output depends"):
        check_aggregator("t_first_row")
    check_aggregator("t_first_row_declared")  # order-dependent by declaration: passes
    with pytest.raises(AssertionError, match="same seed must give the same output"):
        check_aggregator("t_unseeded")
    with pytest.raises(AssertionError, match="is not registered"):
        check_aggregator(lambda u, w: u[0])


def test_a_broken_attack_fails_its_contract() -> None:
    from velocity.attacks import ATTACKS, model_attack

    @model_attack("t_peeks", omniscient=False, paper="-", summary="reads honest rows")
    def peeks(updates: np.ndarray, weights: np.ndarray, malicious: np.ndarray, rng: Any) -> Any:
        return np.tile(updates[~malicious].mean(axis=0), (int(malicious.sum()), 1)), {}

    try:
        with pytest.raises(AssertionError, match="non-omniscient but its output depends"):
            check_attack("t_peeks")
    finally:
        ATTACKS._remove("t_peeks")


def test_a_component_defined_inline_is_refused_in_a_spec(inline: list[str]) -> None:
    def shifted(updates: np.ndarray, weights: np.ndarray, *, eps: float) -> np.ndarray:
        return (np.median(updates, axis=0) + eps).astype(np.float32)

    _register(inline, "t_inline", shifted, params=(Param("eps", float, 0.0, "shift"),))
    with pytest.raises(SpecError, match="defined in module 'test_plugins', not in a plug-in"):
        spec_from_mapping({"strategy": "t_inline:eps=0.1"})


def _tree_with_plugin(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(EXAMPLE / "my_median.py", work / "my_median.py")
    shutil.copy(EXAMPLE / "compare.toml", work / "compare.toml")
    return work


def test_the_source_is_part_of_the_identity(tmp_path: Path) -> None:
    work = _tree_with_plugin(tmp_path)
    script = (
        "import json, sys; from velocity.experiment import load_experiment; "
        "specs = load_experiment(sys.argv[1]); "
        "print(json.dumps([[s.name, s.fingerprint, s.plugins] for s in specs]))"
    )

    def fingerprints() -> list[Any]:
        out = subprocess.run(
            [sys.executable, "-c", script, "compare.toml"],
            cwd=work,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout)

    first = fingerprints()
    sha = hashlib.sha256((work / "my_median.py").read_bytes()).hexdigest()
    assert all(p == [{"name": "my_median.py", "sha256": sha}] for _, _, p in first)
    with (work / "my_median.py").open("a") as handle:
        handle.write("\n# an edit\n")
    second = fingerprints()
    assert [n for n, _, _ in first] == [n for n, _, _ in second]
    assert all(a != b for (_, a, _), (_, b, _) in zip(first, second, strict=True))


@pytest.mark.slow
def test_the_example_round_trips_through_archive_and_reproduce(tmp_path: Path) -> None:
    work = _tree_with_plugin(tmp_path)
    sweep = _velocity("sweep", "compare.toml", "--out", "out/cmp", "--parallel", "2", cwd=work)
    assert sweep.returncode == 0, sweep.stderr
    out = work / "out" / "cmp"
    assert (out / "plugins" / "my_median.py").read_bytes() == (work / "my_median.py").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["name"] for p in manifest["plugins"]] == ["my_median.py"]
    assert _velocity("archive", "out/cmp", cwd=work).returncode == 0
    archive = work / "out" / "cmp.crate.zip"
    with zipfile.ZipFile(archive) as handle:
        assert "plugins/my_median.py" in handle.namelist()

    # Reproduced elsewhere, next to a *different* file of the same name: the archived copy is
    # the one loaded, and every metric matches bit for bit.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "my_median.py").write_text("raise SystemExit('the local file was loaded')\n")
    done = _velocity(
        "reproduce", str(archive), "--check", "--exact", "--out", "again", cwd=elsewhere
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "12/12 runs matched" in done.stdout
    notes = json.loads((elsewhere / "again" / "reproduction.json").read_text())["notes"]
    assert any(n.startswith("plug-in my_median.py") and "archive's own copy" in n for n in notes)

    # The archived plug-in edited and every checksum recomputed: refused, nothing run.
    forged = tmp_path / "forged.zip"
    _reseal(archive, forged, "plugins/my_median.py", b"\n# edited\n")
    refused = _velocity("reproduce", str(forged), "--check", "--out", "f", cwd=elsewhere)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "plugins/my_median.py does not have the sha256 manifest.json records" in refused.stderr
    assert "Traceback" not in refused.stderr and not (elsewhere / "f").exists()
    inspect = _velocity("inspect", str(forged), cwd=elsewhere)
    assert inspect.returncode == 2 and "verification FAILED" in inspect.stderr


def _reseal(source: Path, target: Path, name: str, suffix: bytes) -> None:
    """A careful forger: append to one file and recompute its sha256 and size in the metadata."""
    with zipfile.ZipFile(source) as handle:
        files = {i.filename: handle.read(i) for i in handle.infolist()}
    files[name] += suffix
    metadata = json.loads(files["ro-crate-metadata.json"])
    for entity in metadata["@graph"]:
        if entity.get("@id") == name:
            entity["sha256"] = hashlib.sha256(files[name]).hexdigest()
            entity["contentSize"] = str(len(files[name]))
    files["ro-crate-metadata.json"] = json.dumps(metadata).encode()
    with zipfile.ZipFile(target, "w") as handle:
        for entry, data in files.items():
            handle.writestr(entry, data)


def test_a_plugin_may_not_shadow_a_builtin(tmp_path: Path) -> None:
    (tmp_path / "clash.py").write_text(
        "from velocity.strategies import aggregator\n"
        "@aggregator('median', summary='mine')\n"
        "def median(updates, weights):\n    return updates[0]\n"
    )
    done = _velocity(
        "run", "--plugin", "clash.py", "--strategy", "median", "--rounds", "1", cwd=tmp_path
    )
    assert done.returncode == 2
    assert "aggregator 'median' is a built-in registered; choose another name" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("plugin", "needle"),
    [
        ("missing.py", "plug-in file not found"),
        ("broken.py", "is not valid Python"),
        ("raises.py", "failed to load (ZeroDivisionError"),
        ("no.such.module", "plug-in module 'no.such.module'"),
    ],
)
def test_bad_plugins_are_one_line_errors(tmp_path: Path, plugin: str, needle: str) -> None:
    (tmp_path / "broken.py").write_text("def (:\n")
    (tmp_path / "raises.py").write_text("1 / 0\n")
    done = _velocity("run", "--plugin", plugin, "--rounds", "1", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1
    with pytest.raises(InputError):
        spec_from_mapping({"plugins": [str(tmp_path / plugin)]})


def _package(root: Path, *, entry_point: bool) -> Path:
    """An installed-looking package ``fl_aggs`` with an aggregator ``pkg_median``."""
    site = root / "site"
    (site / "fl_aggs").mkdir(parents=True)
    (site / "fl_aggs" / "__init__.py").write_text("")
    (site / "fl_aggs" / "rules.py").write_text(
        "import numpy as np\nfrom velocity.strategies import aggregator\n"
        "@aggregator('pkg_median', summary='median from a package', paper='-')\n"
        "def pkg_median(updates, weights):\n"
        "    return np.median(updates, axis=0).astype(np.float32)\n"
    )
    if entry_point:
        info = site / "fl_aggs-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fl-aggs\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text("[velocity.plugins]\nrules = fl_aggs.rules\n")
    return site


@pytest.mark.parametrize("entry_point", [False, True])
def test_a_module_or_an_installed_package_is_a_plugin(tmp_path: Path, entry_point: bool) -> None:
    site = _package(tmp_path, entry_point=entry_point)
    flags = [] if entry_point else ["--plugin", "fl_aggs.rules"]
    done = _velocity(
        "run",
        *flags,
        "--strategy",
        "pkg_median",
        "--rounds",
        "2",
        "--model",
        "logreg",
        "--json",
        cwd=tmp_path,
        env={"PYTHONPATH": str(site)},
    )
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)
    source = (site / "fl_aggs" / "rules.py").read_bytes()
    expected = {"name": "fl_aggs.rules", "sha256": hashlib.sha256(source).hexdigest()}
    assert record["spec"]["plugins"] == [expected]
    assert record["status"] == "complete"
