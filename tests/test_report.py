"""Comparison report: accuracy drop, ranking, reproducible plots, a self-contained report.html."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from velocity.artifacts import read_json
from velocity.report import (
    PLOT_NAMES,
    attack_label,
    baseline_fingerprint,
    build_comparison,
    comparison_markdown,
    render_plots,
    rounds_to_target,
    strategy_label,
    write_reports,
)
from velocity.spec import RunSpec, spec_from_mapping
from velocity.sweepdir import SweepData, SweepRun

BASE = {"model": "logreg", "rounds": 3, "num_clients": 5}


def _run(spec: RunSpec, accuracies: list[float], status: str = "complete") -> SweepRun:
    rounds = [
        {
            "round": i + 1,
            "test_accuracy": a,
            "test_loss": 1.0 - a if math.isfinite(a) else a,
            "train_loss": 0.5,
            "bytes_up": 100,
            "bytes_down": 100,
        }
        for i, a in enumerate(accuracies)
    ]
    summary = {
        "name": spec.name,
        "fingerprint": spec.fingerprint,
        "status": status,
        "error": "RunError: boom" if status == "failed" else None,
        "final": dict(rounds[-1]) if rounds else {},
        "best": {},
        "totals": {"bytes": 200 * len(rounds)},
        "rounds_completed": len(rounds),
        "wall_seconds": 0.5,
        "started_at": "2025-01-01T00:00:00.000Z",
        "finished_at": "2025-01-01T00:00:01.000Z",
    }
    return SweepRun(spec.name, spec, {}, summary, rounds)


def _spec(name: str, **fields: object) -> RunSpec:
    return spec_from_mapping({**BASE, "name": name, **fields})


@pytest.fixture
def data(tmp_path: Path) -> SweepData:
    runs = [
        _run(_spec("fedavg__none__s0"), [0.5, 0.8, 0.9]),
        _run(_spec("fedavg__none__s1", seed=1), [0.6, 0.85, 0.95]),
        _run(_spec("fedavg__sign_flip__s0", attack="sign_flip", byzantine=1), [0.3, 0.5, 0.6]),
        _run(
            _spec("fedavg__sign_flip__s1", attack="sign_flip", byzantine=1, seed=1),
            [0.4, 0.5, 0.55],
        ),
        _run(
            _spec("median__sign_flip__s0", strategy="median", attack="sign_flip", byzantine=1),
            [0.6, 0.7, 0.8],
        ),
        _run(_spec("diverged", lr=9.0), [0.3, math.nan], status="diverged"),
        _run(_spec("broken", strategy="krum:f=3"), [], status="failed"),
    ]
    manifest = {
        "velocity_version": "test",
        "started_at": "2025-01-01T00:00:00.000Z",
        "host": {"cpu_model": "cpu", "cores": 2},
    }
    return SweepData(out_dir=tmp_path / "sweep", manifest=manifest, runs=runs)


def test_accuracy_drop_is_baseline_minus_own_with_the_same_seed(data: SweepData) -> None:
    comparison = build_comparison(data)
    runs = {r["name"]: r for r in comparison["runs"]}
    assert runs["fedavg__sign_flip__s0"]["baseline"] == "fedavg__none__s0"
    assert runs["fedavg__sign_flip__s0"]["accuracy_drop"] == 0.9 - 0.6
    assert runs["fedavg__sign_flip__s1"]["baseline"] == "fedavg__none__s1"
    assert runs["fedavg__sign_flip__s1"]["accuracy_drop"] == 0.95 - 0.55
    # No no-attack median run in the sweep: no drop rather than a wrong one.
    assert runs["median__sign_flip__s0"]["baseline"] is None
    assert runs["median__sign_flip__s0"]["accuracy_drop"] is None


def test_baseline_fingerprint_matches_the_real_no_attack_spec() -> None:
    attacked = _spec("a", attack="sign_flip", byzantine=1, seed=4)
    clean = _spec("b", seed=4)
    assert baseline_fingerprint(attacked.canonical()) == clean.fingerprint
    assert baseline_fingerprint(attacked.canonical()) != _spec("c", seed=5).fingerprint


def test_ranking_puts_failed_and_nan_runs_last(data: SweepData) -> None:
    ranking = build_comparison(data)["ranking"]
    assert ranking[0] == "fedavg__none__s1"
    assert ranking[-2:] == ["broken", "diverged"]


def test_groups_average_over_seeds(data: SweepData) -> None:
    groups = {g["label"]: g for g in build_comparison(data)["groups"]}
    group = groups["fedavg__none"]
    assert group["seeds"] == [0, 1]
    assert group["test_accuracy_mean"] == pytest.approx(0.925)
    assert group["test_accuracy_std"] == pytest.approx(np.std([0.9, 0.95], ddof=1))


def test_rounds_to_target_and_labels() -> None:
    rounds = [
        {"round": 1, "test_accuracy": 0.5},
        {"round": 2, "test_accuracy": None},
        {"round": 3, "test_accuracy": 0.91},
    ]
    assert rounds_to_target(rounds, 0.9) == 3
    assert rounds_to_target(rounds, 0.95) is None
    assert strategy_label(_spec("x").canonical()) == "fedavg"
    assert strategy_label(_spec("x", strategy="fedprox:mu=0.1").canonical()) == "fedprox:mu=0.1"
    assert strategy_label(_spec("x", strategy="krum:f=2", num_clients=9).canonical()) == "krum:f=2"
    assert attack_label(_spec("x").canonical()) == "none"
    assert attack_label(_spec("x", attack="sign_flip", byzantine=1).canonical()) == "sign_flip"


def test_markdown_has_the_ranked_table_and_errors(data: SweepData) -> None:
    comparison = build_comparison(data)
    text = comparison_markdown(comparison, data.manifest)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| rank | run | strategy | attack |")
    assert "| 1 | fedavg__none__s1 |" in text
    assert "0.3000" in text  # fedavg sign_flip seed 0 drop
    assert "`broken` (failed): RunError: boom" in text


def test_plots_are_reproducible_byte_for_byte(data: SweepData) -> None:
    comparison = build_comparison(data)
    first, second = render_plots(comparison), render_plots(comparison)
    assert [p.name for p in first] == list(PLOT_NAMES)
    for a, b in zip(first, second, strict=True):
        assert a.png == b.png and a.svg == b.svg
        assert a.png.startswith(b"\x89PNG")
        assert a.svg.lstrip().startswith("<?xml") and "<dc:date>" not in a.svg


def test_write_reports_writes_every_file_and_a_self_contained_page(data: SweepData) -> None:
    write_reports(data)
    out = data.out_dir
    for name in PLOT_NAMES:
        assert (out / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert (out / "plots" / f"{name}.svg").is_file()
    assert read_json(out / "comparison.json")["schema"] == "velocity.comparison/1"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == len(PLOT_NAMES)
    assert not re.search(r"(src|href)=\"(?!data:|#)", page)  # in-page anchors only
    assert "<script" not in page and "<link" not in page and "http" not in page.lower()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def _headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--log-level=0",
    ]
    return subprocess.run(
        [binary, *flags, *args], capture_output=True, text=True, timeout=180, check=False
    )


def _colourful_pixels(screenshot: Path) -> int:
    import matplotlib.image

    pixels = matplotlib.image.imread(str(screenshot))[..., :3]
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)
    return int((spread > 0.25).sum())


LAPTOP = (1366, 768)
"""The most common laptop screen, in CSS pixels."""

_LAYOUT_PROBE = """<script>addEventListener("load", () => {
  const rects = [...document.querySelectorAll("figure img")].map((img) => {
    const r = img.getBoundingClientRect();
    return [img.closest("figure").id, r.left, r.top + scrollY, r.width, r.height];
  });
  const out = document.createElement("pre");
  out.id = "layout";
  out.textContent = JSON.stringify({rects, scrollWidth: document.documentElement.scrollWidth,
    innerWidth, height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});</script>"""


def _layout(binary: str, page: Path, profile: Path) -> dict[str, Any]:
    """Where the page puts its plots at laptop width: the page itself plus a script that only
    measures (it runs after layout and adds its answer at the very end), read from the DOM."""
    probe = page.with_name("probe.html")
    probe.write_text(
        page.read_text(encoding="utf-8").replace("</body>", _LAYOUT_PROBE + "</body>"),
        encoding="utf-8",
    )
    dom = _headless(
        binary,
        profile,
        f"--window-size={LAPTOP[0]},{LAPTOP[1]}",
        "--hide-scrollbars",
        "--dump-dom",
        probe.as_uri(),
    )
    found = re.search(r'<pre id="layout">(.*?)</pre>', dom.stdout)
    assert found, dom.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def _ink_share(pixels: Any, rect: Sequence[float]) -> float:
    """Share of the pixels in ``rect`` (left, top, width, height) that are not white."""
    left, top, width, height = (round(v) for v in rect)
    region = pixels[top : top + height, left : left + width, :3]
    assert region.size, rect
    return float((region.min(axis=-1) < 0.9).mean())


@pytest.mark.slow
def test_report_opens_in_headless_chromium_without_errors_and_shows_plots(
    data: SweepData, tmp_path: Path
) -> None:
    import matplotlib.image

    binary = _chromium()
    if binary is None:
        pytest.skip("chromium not installed (CI installs Debian's chromium package)")
    write_reports(data)
    page = data.out_dir / "report.html"
    dom = _headless(binary, tmp_path / "profile1", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    assert dom.stdout.count('src="data:image/png;base64,') == len(PLOT_NAMES)

    # At laptop width nothing spills sideways, and every plot fits the window.
    layout = _layout(binary, page, tmp_path / "profile2")
    assert layout["scrollWidth"] <= layout["innerWidth"] == LAPTOP[0]
    rects = {name: rect for name, *rect in layout["rects"]}
    assert list(rects) == [f"plot-{name}" for name in PLOT_NAMES]
    for name, (left, _, width, height) in rects.items():
        assert left >= 0 and left + width <= LAPTOP[0] and height > 100, (name, width, height)

    def screenshot(target: Path, profile: str) -> Path:
        shot = tmp_path / f"{profile}.png"
        _headless(
            binary,
            tmp_path / profile,
            f"--window-size={LAPTOP[0]},{layout['height']}",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            target.as_uri(),
        )
        return shot

    shot = screenshot(page, "profile3")
    pixels = matplotlib.image.imread(str(shot))
    shares = {name: _ink_share(pixels, rect) for name, rect in rects.items()}
    # Every plot region shows a plot (lines, text, filled cells), not a blank box.
    assert all(share > 0.02 for share in shares.values()), shares

    # Control: the same page with blank images of the same sizes (the same layout) must fail
    # the check, or the check is void.
    blanks = iter(_blank_png(data.out_dir / "plots" / f"{name}.png") for name in PLOT_NAMES)
    blank = tmp_path / "blank.html"
    blank.write_text(
        re.sub(
            r"base64,[A-Za-z0-9+/=]+",
            lambda _: "base64," + next(blanks),
            page.read_text(encoding="utf-8"),
        ),
        encoding="utf-8",
    )
    blank_pixels = matplotlib.image.imread(str(screenshot(blank, "profile4")))
    blank_shares = [_ink_share(blank_pixels, rect) for rect in rects.values()]
    assert max(blank_shares) < 0.005 < 0.02 < min(shares.values()), (blank_shares, shares)
    assert _colourful_pixels(shot) > 20_000


def _blank_png(plot: Path) -> str:
    """A white PNG of the plot's size, base64."""
    import base64
    import io

    import matplotlib.image

    height, width = matplotlib.image.imread(str(plot)).shape[:2]
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, np.ones((height, width, 3)), format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
