"""Leaderboard: statistics against scipy and Holm's definition, grouping over seeds, the CLI."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from scipy import stats

from velocity.cli import main
from velocity.cli.store import LEADERBOARD_METRIC_NAMES
from velocity.errors import InputError
from velocity.leaderboards import (
    LEADERBOARD_METRICS,
    build_leaderboard,
    format_leaderboard,
    holm_adjust,
    latex_escape,
    mean_confidence_interval,
    parse_where,
    welch_t_test,
)
from velocity.spec import spec_from_mapping
from velocity.store import RunRecord, open_store, run_start

BASE = {"model": "logreg", "rounds": 3, "num_clients": 5}


@pytest.fixture(autouse=True)
def _private_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOCITY_STORE", str(tmp_path / "runs.db"))


def test_holm_adjustment_follows_its_definition() -> None:
    # Sorted 0.01, 0.03, 0.04 -> 3 * 0.01, 2 * 0.03, max(previous, 1 * 0.04).
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]
    assert holm_adjust([]) == []
    # Non-decreasing in the raw p-values' order, and never below them.
    raw = [0.001, 0.2, 0.012, 0.04, 0.0300001]
    adjusted = holm_adjust(raw)
    by_raw = [a for _, a in sorted(zip(raw, adjusted, strict=True))]
    assert by_raw == sorted(by_raw)
    assert all(a >= p for p, a in zip(raw, adjusted, strict=True))


def test_the_help_text_lists_exactly_the_leaderboard_metrics() -> None:
    assert tuple(LEADERBOARD_METRICS) == LEADERBOARD_METRIC_NAMES


def test_welch_matches_scipy_and_handles_degenerate_samples() -> None:
    a, b = [0.91, 0.93, 0.92, 0.95], [0.85, 0.9, 0.86]
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert welch_t_test(a, b) == pytest.approx(expected, rel=1e-9)
    assert welch_t_test([0.9], b) is None
    assert welch_t_test([0.5, 0.5], [0.5, 0.5]) == 1.0
    assert welch_t_test([0.5, 0.5], [0.4, 0.4]) == 0.0


def test_confidence_interval_matches_scipy() -> None:
    values = [0.9, 0.92, 0.87, 0.95]
    mean, std, low, high = mean_confidence_interval(values)
    interval = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    assert (low, high) == pytest.approx(interval, rel=1e-10)
    assert std == pytest.approx(stats.tstd(values))
    assert mean_confidence_interval([0.5]) == (0.5, None, None, None)


def _record(
    name: str,
    seed: int,
    accuracy: float,
    *,
    status: str = "complete",
    finished: str = "2025-01-01T00:01:00.000Z",
    **fields: object,
) -> RunRecord:
    spec = spec_from_mapping({**BASE, "name": name, "seed": seed, **fields})
    rounds = [
        {"round": 1, "test_accuracy": accuracy - 0.1, "bytes_up": 10, "bytes_down": 10},
        {"round": 2, "test_accuracy": accuracy, "bytes_up": 10, "bytes_down": 10},
    ]
    return RunRecord(
        run_id=f"{name}-{seed}-{finished}",
        name=name,
        source="/s",
        fingerprint=spec.fingerprint,
        fingerprint_without_seed=spec.fingerprint_without_seed,
        seed=seed,
        spec=spec.canonical(),
        status=status,
        started_at="2025-01-01T00:00:00.000Z",
        finished_at=finished,
        wall_seconds=1.0 + seed,
        final={"test_accuracy": accuracy},
        totals={"bytes": 40},
        rounds=rounds,
    )


def _records() -> list[RunRecord]:
    good = [0.95, 0.96, 0.94, 0.95]
    close = [0.95, 0.94, 0.96, 0.95]
    poor = [0.70, 0.72, 0.69, 0.71]
    records = []
    for seed in range(4):
        records.append(_record(f"good__s{seed}", seed, good[seed], lr=0.1))
        records.append(_record(f"close__s{seed}", seed, close[seed], lr=0.09))
        records.append(_record(f"poor__s{seed}", seed, poor[seed], lr=0.01))
    return records


def test_groups_over_seeds_rank_and_mark_significance() -> None:
    board = build_leaderboard(_records(), "accuracy")
    labels = [row.label for row in board.rows]
    assert labels == ["close", "good", "poor"] or labels == ["good", "close", "poor"]
    best, tie, worse = board.rows
    assert best.best and best.runs == 4 and best.mean == pytest.approx(0.95)
    assert best.ci_low is not None and best.ci_low < best.mean < (best.ci_high or 0)
    assert tie.significant is False and tie.p_value == pytest.approx(1.0)
    assert worse.significant is True and (worse.p_value or 1) < 1e-6
    assert worse.rank == 3
    # Two comparisons with the best: Holm doubles the smallest raw p-value.
    assert worse.p_adjusted == pytest.approx(2 * (worse.p_value or 0))
    assert board.to_dict()["correction"] == "Holm"


def test_holm_turns_two_marginal_differences_into_ties() -> None:
    # Each of b and c alone differs from the best at p just under 0.05; compared together they
    # do not, once the family-wise error is controlled.
    best = [0.90, 0.91, 0.92, 0.93]
    marginal = [0.885, 0.895, 0.905, 0.915]
    records = []
    for seed in range(4):
        records.append(_record(f"a__s{seed}", seed, best[seed], lr=0.1))
        records.append(_record(f"b__s{seed}", seed, marginal[seed] - 0.0104, lr=0.09))
        records.append(_record(f"c__s{seed}", seed, marginal[seed] - 0.0105, lr=0.08))
    board = build_leaderboard(records, "accuracy")
    _, b, c = board.rows
    assert (b.p_value or 1) < 0.05 and (c.p_value or 1) < 0.05
    assert (b.p_adjusted or 0) >= 0.05 and b.significant is False and c.significant is False


def test_failed_runs_and_duplicates_do_not_count() -> None:
    records = _records()
    records.append(_record("poor__s0", 0, 0.1, status="failed", lr=0.01))
    # The same run stored again later (a re-run): it replaces, never doubles, the sample.
    records.append(_record("poor__s0", 0, 0.70, lr=0.01, finished="2025-02-01T00:00:00.000Z"))
    poor = next(r for r in build_leaderboard(records).rows if r.label == "poor")
    assert poor.runs == 4 and sorted(poor.values) == sorted([0.70, 0.72, 0.69, 0.71])


def test_other_metrics_rank_in_their_direction() -> None:
    records = _records()
    wall = build_leaderboard(records, "wall-clock")
    assert not wall.higher_is_better and wall.rows[0].mean == pytest.approx(2.5)
    reach = build_leaderboard(records, "rounds-to-target", target=0.9)
    assert [r.extra["reached"] for r in reach.rows][-1] == "0/4"
    assert reach.rows[0].mean == 2.0
    comm = build_leaderboard(records, "comm-cost")
    assert comm.rows[0].mean == pytest.approx(40 / 1e6)
    pareto = build_leaderboard(records, "pareto")
    assert pareto.rows[0].extra["pareto_front"] == 1
    assert pareto.rows[-1].label == "poor" and pareto.rows[-1].extra["pareto_front"] > 1


def test_robustness_is_the_drop_against_the_same_seed_baseline() -> None:
    records = [_record(f"clean__s{s}", s, 0.9 + s / 100) for s in range(3)]
    records += [
        _record(f"attacked__s{s}", s, 0.6, attack="sign_flip", byzantine=1) for s in range(3)
    ]
    board = build_leaderboard(records, "robustness")
    assert [row.label for row in board.rows] == ["attacked"]
    assert board.rows[0].values == pytest.approx([0.3, 0.31, 0.32])
    filtered = build_leaderboard(records, "accuracy", attack="sign_flip")
    assert [row.label for row in filtered.rows] == ["attacked"]
    assert [r.label for r in build_leaderboard(records, attack="none").rows] == ["clean"]
    assert build_leaderboard(records, dataset="wine").rows == []


def test_bad_metric_or_target_is_an_input_error() -> None:
    with pytest.raises(InputError, match="--metric must be one of"):
        build_leaderboard([], "speed")
    with pytest.raises(InputError, match="--target"):
        build_leaderboard([], "rounds-to-target", target=1.5)


def test_cli_leaderboard_reads_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_store() as store:
        for record in _records():
            spec = spec_from_mapping(record.spec)
            run_id = store.start_run(run_start(spec, "/s", record.started_at))
            store.finish_run(
                run_id,
                status="complete",
                error=None,
                finished_at=record.finished_at or "",
                wall_seconds=1.0,
                final=record.final,
                best={},
                totals=record.totals,
                rounds=record.rounds or [],
            )
    assert main(["leaderboard", "--metric", "accuracy", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["metric"] == "accuracy" and len(payload["rows"]) == 3
    assert payload["rows"][-1]["significant"] is True
    assert main(["leaderboard", "--metric", "rounds-to-target", "--target", "0.9", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [row["extra"]["reached"] for row in rows] == ["4/4", "4/4", "0/4"]
    assert main(["leaderboard", "--metric", "pareto"]) == 0
    assert "leaderboard: pareto" in capsys.readouterr().out
    assert main(["leaderboard", "--metric", "speed"]) == 2
    assert "--metric must be one of" in capsys.readouterr().err
    assert main(["show", "good__s0", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "good__s0" and shown["status"] == "complete"
    assert main(["show", "nothing-like-this"]) == 2


def test_reading_commands_never_create_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.db"
    assert main(["runs", "--store", str(missing)]) == 2
    assert "no run store here yet" in capsys.readouterr().err
    assert not missing.exists()


def _round_variants() -> list[RunRecord]:
    """Three fedavg-under-sign_flip configurations that differ only in their rounds, and a
    no-attack one: before, all three rows read 'fedavg__sign_flip'."""
    records = []
    for rounds, accuracies in ((15, (0.60, 0.62)), (20, (0.70, 0.71)), (150, (0.90, 0.91))):
        for seed, accuracy in enumerate(accuracies):
            records.append(
                _record(
                    f"fedavg__sign_flip__s{seed}",
                    seed,
                    accuracy,
                    rounds=rounds,
                    attack="sign_flip",
                    byzantine=1,
                )
            )
    records += [_record(f"fedavg__none__s{s}", s, 0.93 + 0.01 * s, rounds=20) for s in (0, 1)]
    return records


def test_rows_are_labelled_by_the_fields_that_tell_them_apart() -> None:
    board = build_leaderboard(_round_variants(), "accuracy")
    assert board.config_fields == ["attack", "rounds"]
    assert [(r.fields["attack"], r.fields["rounds"]) for r in board.rows] == [
        ("none", "20"),
        ("sign_flip", "150"),
        ("sign_flip", "20"),
        ("sign_flip", "15"),
    ]
    labels = [tuple(r.fields.values()) for r in board.rows]
    assert len(set(labels)) == len(labels)
    payload = board.to_dict()
    assert payload["config_fields"] == ["attack", "rounds"]
    assert payload["rows"][0]["fields"] == {"attack": "none", "rounds": "20"}


def test_where_filters_on_any_field_and_names_unknown_ones() -> None:
    records = _round_variants()
    board = build_leaderboard(records, "accuracy", where=parse_where(["attack=sign_flip"]))
    assert [r.fields for r in board.rows] == [{"rounds": "150"}, {"rounds": "20"}, {"rounds": "15"}]
    both = parse_where(["rounds=15", "rounds=150.0", "attack=sign_flip"])
    assert [r.fields["rounds"] for r in build_leaderboard(records, where=both).rows] == [
        "150",
        "15",
    ]
    assert build_leaderboard(records, where={"strategy": "mean"}).rows  # the aggregator's type
    assert not build_leaderboard(records, where={"strategy": "krum"}).rows
    with pytest.raises(InputError, match="unknown field 'rouds'; did you mean 'rounds'"):
        parse_where(["rouds=3"])
    with pytest.raises(InputError, match="--where takes field=value"):
        parse_where(["rounds"])


def _table_rows(latex: str) -> list[str]:
    body = latex.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    return [line for line in body.splitlines() if line.strip()]


def test_latex_is_a_booktabs_table_with_the_best_in_bold() -> None:
    board = build_leaderboard(_round_variants() + _records(), "accuracy")
    latex = format_leaderboard(board, "latex")
    assert latex.count("{") == latex.count("}")
    depth = 0
    for char in latex.replace("\\{", "").replace("\\}", ""):
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0
    assert latex.count("\\begin{") == latex.count("\\end{") == 2
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert latex.count(rule) == 1
    rows = _table_rows(latex)
    assert len(rows) == len(board.rows)  # one row per group
    columns = latex.split("\\begin{tabular}{", 1)[1].split("}", 1)[0]
    for row in rows:
        assert row.endswith("\\\\") and row.count(" & ") == len(columns) - 1
    assert "\\textbf{" in rows[0] and all("\\textbf{" not in r for r in rows[1:])
    assert any("$^{*}$" in r for r in rows)  # the significantly worse are starred
    assert "sign\\_flip" in latex and "sign_flip" not in latex.replace("sign\\_flip", "")
    assert "Holm" in latex and "Welch" in latex


def test_latex_escapes_every_special_character() -> None:
    assert latex_escape("a_b & c% $d$ #e {f} ~g ^h \\i > j") == (
        "a\\_b \\& c\\% \\$d\\$ \\#e \\{f\\} \\textasciitilde{}g \\textasciicircum{}h "
        "\\textbackslash{}i \\textgreater{} j"
    )


def test_markdown_csv_and_json_formats() -> None:
    board = build_leaderboard(_round_variants(), "accuracy")
    markdown = format_leaderboard(board, "md")
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert table[0] == "| # | attack | rounds | n | mean ± std | 95% CI | vs best |"
    assert len(table) == 2 + len(board.rows) and "**0.9350 ± 0.0071**" in table[2]
    assert "Holm" in markdown
    rows = list(csv.DictReader(io.StringIO(format_leaderboard(board, "csv"))))
    assert [r["rounds"] for r in rows] == ["20", "150", "20", "15"]
    assert float(rows[1]["mean"]) == pytest.approx(0.905) and rows[0]["best"] == "true"
    payload = json.loads(format_leaderboard(board, "json"))
    assert payload["correction"] == "Holm" and len(payload["rows"]) == 4


def test_cli_leaderboard_formats_where_and_distinguishable_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from velocity.cli._app import out_console

    with open_store() as store:
        for record in _round_variants():
            spec = spec_from_mapping(record.spec)
            # The same run names, from three sweeps of different lengths.
            source = f"/sweep-{spec.rounds}"
            run_id = store.start_run(run_start(spec, source, record.started_at))
            store.finish_run(
                run_id,
                status="complete",
                error=None,
                finished_at=record.finished_at or "",
                wall_seconds=1.0,
                final=record.final,
                best={},
                totals=record.totals,
                rounds=record.rounds or [],
            )
    monkeypatch.setattr(out_console, "_width", 80)
    assert main(["leaderboard"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and all(len(line) <= 80 for line in out.splitlines())
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert [row.split("│")[3].strip() for row in rows] == ["20", "150", "20", "15"]
    assert "Holm's correction" in " ".join(out.split())
    assert main(["leaderboard", "--where", "rounds=15", "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["leaderboard", "--format", "latex", "--where", "attack=sign_flip"]) == 0
    assert len(_table_rows(capsys.readouterr().out)) == 3
    assert main(["leaderboard", "--format", "xml"]) == 2
    assert "--format must be one of table, md, csv, json, latex" in capsys.readouterr().err
    assert main(["leaderboard", "--json", "--format", "md"]) == 2
    assert main(["leaderboard", "--where", "rouds=3"]) == 2
    assert "did you mean 'rounds'" in capsys.readouterr().err
