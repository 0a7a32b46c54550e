"""A sweep made by an older velocity (manifest schema velocity.sweep/1: other shuffles, other
initialization, so other results) is refused with one line naming the version that made it:
as a folder (resume, archive) and as an archive (reproduce), never silently re-run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import velocity.sweepdir as sweepdir
import velocity.sweeps.runner as runner
from velocity.cli import main

SPEC = '[shared]\ndataset = "wine"\nmodel = "logreg"\nnum_clients = 3\nrounds = 1\n'


def _old_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A sweep folder and its archive as velocity 0.1.0 wrote them (schema velocity.sweep/1)."""
    (tmp_path / "s.toml").write_text(SPEC + '[[runs]]\nname = "a"\n')
    with monkeypatch.context() as old:
        old.setattr(sweepdir, "SWEEP_SCHEMA", "velocity.sweep/1")
        old.setattr(runner, "SWEEP_SCHEMA", "velocity.sweep/1")
        old.setattr(sweepdir, "OLDER_SWEEP_SCHEMAS", {})
        old.setattr(runner, "__version__", "0.1.0", raising=False)
        out, archive = tmp_path / "sw", tmp_path / "sw.zip"
        assert main(["sweep", str(tmp_path / "s.toml"), "--out", str(out)]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["schema"] == "velocity.sweep/1"
        manifest["velocity_version"] = "0.1.0"
        (out / "manifest.json").write_text(json.dumps(manifest))
        assert main(["archive", str(out), "-o", str(archive)]) == 0
    return out, archive


def test_an_older_sweep_is_refused_with_the_version_that_reproduces_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out, archive = _old_sweep(tmp_path, monkeypatch)
    capsys.readouterr()
    for command in (
        ["reproduce", str(archive), "--check", "--out", str(tmp_path / "again")],
        ["sweep", "--resume", str(out)],
        ["archive", str(out), "-o", str(tmp_path / "new.zip")],
    ):
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "made by velocity 0.1.0 (velocity.sweep/1" in err
        assert "pip install 'velocity-fl==0.1.0'" in err and "Traceback" not in err
    assert not (tmp_path / "again").exists() and not (tmp_path / "new.zip").exists()


def test_this_velocity_writes_the_current_schema(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SPEC + '[[runs]]\nname = "a"\n')
    assert main(["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "sw")]) == 0
    manifest = json.loads((tmp_path / "sw" / "manifest.json").read_text())
    assert manifest["schema"] == sweepdir.SWEEP_SCHEMA == "velocity.sweep/2"
    assert "velocity.sweep/1" in sweepdir.OLDER_SWEEP_SCHEMAS
