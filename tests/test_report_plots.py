"""What the report's plots show: a line per configuration with its seed band, a target line,
distinct styles, a heatmap scaled to the data over what was swept, and the configuration
labels that tell groups apart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from velocity import report
from velocity.report import (
    PLOT_NAMES,
    build_comparison,
    comparison_markdown,
    distinguishing_fields,
    fields_label,
)
from velocity.spec import RunSpec, spec_from_mapping
from velocity.sweepdir import SweepData, SweepRun

BASE = {"model": "logreg", "rounds": 3, "num_clients": 5}


def _run(spec: RunSpec, accuracies: list[float]) -> SweepRun:
    rounds = [
        {
            "round": i + 1,
            "test_accuracy": a,
            "test_loss": 1.0 - a,
            "train_loss": 0.5,
            "bytes_up": 1000 * (1 + spec.seed),
            "bytes_down": 1000,
        }
        for i, a in enumerate(accuracies)
    ]
    summary = {
        "name": spec.name,
        "fingerprint": spec.fingerprint,
        "status": "complete",
        "error": None,
        "final": dict(rounds[-1]),
        "best": {},
        "totals": {"bytes": sum(r["bytes_up"] + r["bytes_down"] for r in rounds)},
        "rounds_completed": len(rounds),
        "wall_seconds": 0.5,
    }
    return SweepRun(spec.name, spec, {}, summary, rounds)


def _spec(name: str, **fields: object) -> RunSpec:
    return spec_from_mapping({**BASE, "name": name, **fields})


def _sweep(tmp_path: Path, runs: list[SweepRun]) -> dict[str, Any]:
    data = SweepData(out_dir=tmp_path, manifest={"velocity_version": "test"}, runs=runs)
    return build_comparison(data, target_accuracy=0.7)


@pytest.fixture
def attacked(tmp_path: Path) -> dict[str, Any]:
    """fedavg and median, no attack and sign_flip, two seeds each."""
    runs = []
    for strategy in ("fedavg", "median"):
        for attack in ("none", "sign_flip"):
            for seed in (0, 1):
                base = 0.6 if attack == "none" else 0.4
                shift = 0.1 * seed + (0.05 if strategy == "median" else 0.0)
                runs.append(
                    _run(
                        _spec(
                            f"{strategy}__{attack}__s{seed}",
                            strategy=strategy,
                            attack=attack,
                            byzantine=0 if attack == "none" else 1,
                            seed=seed,
                        ),
                        [base - 0.2 + shift, base + shift, base + 0.1 + shift],
                    )
                )
    return _sweep(tmp_path, runs)


@pytest.fixture
def unattacked(tmp_path: Path) -> dict[str, Any]:
    """partition x strategy, one seed each, no attack at all."""
    runs = []
    for i, partition in enumerate(("iid", "dirichlet:alpha=0.1", "dirichlet:alpha=1.0")):
        for j, strategy in enumerate(("fedavg", "fedprox:mu=0.01")):
            accuracy = 0.88 + 0.01 * i + 0.002 * j
            runs.append(
                _run(
                    _spec(f"s{j}-p{i}", strategy=strategy, partition=partition),
                    [accuracy - 0.2, accuracy - 0.1, accuracy],
                )
            )
    return _sweep(tmp_path, runs)


def _mean_lines(ax: Any) -> list[Any]:
    """The configuration lines of an axes (not the target line, nor end-point dots)."""
    return [
        line
        for line in ax.get_lines()
        if len(line.get_xdata()) > 1 and len(set(line.get_ydata())) > 1
    ]


def test_accuracy_plot_has_one_line_per_configuration_with_a_seed_band(
    attacked: dict[str, Any],
) -> None:
    figure = report._curves(attacked, "test_accuracy", "test accuracy", target=0.7)
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["attack: none", "attack: sign_flip"]
    for ax in panels:
        lines = _mean_lines(ax)
        assert len(lines) == 2  # fedavg and median: the seeds are averaged, not drawn
        assert len(ax.collections) == 2  # one min-max band each
        fedavg = lines[0].get_ydata()
        assert fedavg[-1] == pytest.approx(
            (0.7 if ax.get_title() == "attack: none" else 0.5) + 0.05
        )  # mean over seeds 0 and 1
        band = ax.collections[0].get_paths()[0].vertices[:, 1]
        assert min(band) == pytest.approx(fedavg[0] - 0.05)
        assert max(band) == pytest.approx(fedavg[-1] + 0.05)
        target = [line for line in ax.get_lines() if set(line.get_ydata()) == {0.7}]
        assert target, "the target accuracy is a reference line"
    legend = figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["fedavg", "median", "target 0.7"]
    assert all(t.get_fontsize() >= 8 for t in legend.get_texts())
    # The same strategy keeps its style in every attack's panel.
    first, second = (_mean_lines(ax)[0] for ax in panels)
    assert (first.get_color(), first.get_linestyle()) == (
        second.get_color(),
        second.get_linestyle(),
    )


def test_beyond_eight_configurations_styles_stay_distinct() -> None:
    styles = [report._line_style(i) for i in range(40)]
    pairs = {(s["color"], s["linestyle"]) for s in styles[:32]}
    assert len(pairs) == 32
    assert len({(s["color"], s["linestyle"], s["marker"]) for s in styles}) == 40
    assert len({s["color"] for s in styles[:8]}) == 8


def test_heatmap_colours_span_the_data_and_show_the_drop_under_attack(
    attacked: dict[str, Any],
) -> None:
    figure = report._heatmap(attacked)
    accuracy, drop = (ax for ax in figure.axes if ax.images)
    values = [g["test_accuracy_mean"] for g in attacked["groups"]]
    norm = accuracy.images[0].norm
    assert (norm.vmin, norm.vmax) == pytest.approx((min(values), max(values)))
    assert "not 0 to 1" in accuracy.get_title()
    colourbars = [ax.get_ylabel() for ax in figure.axes if not ax.images and ax.get_ylabel()]
    assert any("scaled to the data" in label for label in colourbars)
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["no attack", "sign_flip"]
    assert [t.get_text() for t in accuracy.get_yticklabels()] == ["fedavg", "median"]
    assert accuracy.get_ylabel() == "strategy"
    # The drop panel: attacked columns only, the baseline's accuracy minus the attacked one's.
    assert [t.get_text() for t in drop.get_xticklabels()] == ["sign_flip"]
    assert drop.images[0].get_array()[0][0] == pytest.approx(0.2)
    assert "no-attack" in drop.get_title()


def test_a_sweep_without_attacks_gets_a_heatmap_over_what_it_swept(
    unattacked: dict[str, Any],
) -> None:
    figure = report._heatmap(unattacked)
    (ax,) = (ax for ax in figure.axes if ax.images)
    assert ax.get_xlabel() == "partition" and ax.get_ylabel() == "strategy"
    columns = [t.get_text() for t in ax.get_xticklabels()]
    assert columns == ["iid", "dirichlet:alpha=0.1", "dirichlet:alpha=1.0"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["fedavg", "fedprox:mu=0.01"]
    grid = ax.images[0].get_array()
    assert grid[1][2] == pytest.approx(0.902) and grid[0][0] == pytest.approx(0.88)
    norm = ax.images[0].norm
    assert (norm.vmin, norm.vmax) == pytest.approx((0.88, 0.902))
    assert all("none" not in c for c in columns)


def test_rounds_to_target_and_communication_plots(attacked: dict[str, Any]) -> None:
    assert {"rounds_to_target", "communication"} <= set(PLOT_NAMES)
    figure = report._rounds_to_target(attacked)
    (ax,) = figure.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(labels) == sorted(g["config"] for g in attacked["groups"])
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "not reached (0/2 seeds)" in texts and "(2/2 seeds)" in texts
    assert "0.7" in ax.get_xlabel()

    comm = report._curves(
        attacked, "test_accuracy", "test accuracy", x_axis="mb", target=attacked["target_accuracy"]
    )
    panel = next(ax for ax in comm.axes if ax.get_visible())
    line = _mean_lines(panel)[0]
    # Cumulative MB sent, averaged over seeds: seed 0 sends 2000 B a round, seed 1 3000 B.
    assert list(line.get_xdata()) == pytest.approx([0.0025, 0.005, 0.0075])
    assert "MB sent" in panel.get_xlabel()


def test_every_plot_renders_for_one_configuration_and_for_empty_results(
    tmp_path: Path,
) -> None:
    lone = _sweep(tmp_path, [_run(_spec("only"), [0.5, 0.6, 0.7])])
    for name in PLOT_NAMES:
        assert report.render_plot(name, lone).png.startswith(b"\x89PNG")


def test_rows_are_labelled_with_the_fields_that_tell_them_apart() -> None:
    specs = [
        _spec("a", attack="sign_flip", byzantine=1, rounds=r).canonical() for r in (15, 20, 150)
    ]
    specs.append(_spec("b").canonical())
    fields = distinguishing_fields(specs)
    assert fields[0] == {"attack": "sign_flip", "rounds": "15"}
    assert [fields_label(f) for f in fields] == [
        "sign_flip, rounds=15",
        "sign_flip, rounds=20",
        "sign_flip, rounds=150",
        "no attack, rounds=3",
    ]
    assert len({fields_label(f) for f in fields}) == len(specs)
    # The malicious count of a baseline goes with its attack; it shows only where it varies.
    byzantine = [_spec("c", attack="alie", byzantine=b, num_clients=10).canonical() for b in (1, 2)]
    assert [f["byzantine"] for f in distinguishing_fields(byzantine)] == ["1", "2"]
    # Nothing differs: the strategy, never an empty label.
    assert distinguishing_fields([_spec("d").canonical()]) == [{"strategy": "fedavg"}]


def test_groups_carry_their_fields_and_markdown_shows_them(
    unattacked: dict[str, Any],
) -> None:
    groups = unattacked["groups"]
    assert {tuple(g["fields"]) for g in groups} == {("strategy", "partition")}
    assert {g["config"] for g in groups} >= {"fedavg, iid", "fedprox:mu=0.01, dirichlet:alpha=0.1"}
    text = comparison_markdown(unattacked, {"velocity_version": "test"})
    header = next(line for line in text.splitlines() if line.startswith("| configuration"))
    assert "| strategy | partition | seeds |" in header and "rounds to target" in header
    assert all(not math.isnan(g["mb_sent_mean"]) for g in groups)


def test_markdown_is_the_same_from_the_json_file(attacked: dict[str, Any]) -> None:
    """Archive verification renders comparison.md from comparison.json (sorted keys): the
    field order must survive the round trip."""
    import json

    again = json.loads(json.dumps(attacked, sort_keys=True))
    manifest = {"velocity_version": "test"}
    assert comparison_markdown(again, manifest) == comparison_markdown(attacked, manifest)
    assert again["config_fields"] == ["strategy", "attack"]
