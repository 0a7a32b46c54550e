"""Sweep comparison: comparison.json/.md, a self-contained report.html and PNG/SVG plots.

Everything is computed from the sweep directory's own artifacts, so a report can be rebuilt from
files alone; plots are byte-for-byte reproducible (fixed SVG hash salt, no dates).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import stat
import statistics
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocity.artifacts import write_bytes_atomic, write_json_atomic, write_text_atomic
from velocity.attacks import ATTACKS
from velocity.records import rounds_to_target
from velocity.registry import format_component
from velocity.strategies import AGGREGATORS, PRE_AGGREGATORS, SERVER_OPTIMIZERS
from velocity.sweepdir import SweepData

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "COMPARISON_NUMBERS",
    "COMPARISON_SCHEMA",
    "PLOT_NAMES",
    "attack_label",
    "baseline_fingerprint",
    "build_comparison",
    "comparison_markdown",
    "group_label",
    "render_plots",
    "report_html",
    "strategy_label",
    "use_private_matplotlib_dir",
    "write_reports",
]

COMPARISON_SCHEMA = "velocity.comparison/1"
COMPARISON_NUMBERS: tuple[tuple[str, ...], ...] = (
    ("target_accuracy",),
    *(
        ("runs", "*", key)
        for key in ("final", "best", "totals", "rounds", "wall_seconds", "accuracy_drop")
    ),
    *(
        ("groups", "*", f"{metric}_{stat}")
        for metric in ("test_accuracy", "test_loss", "accuracy_drop")
        for stat in ("mean", "std")
    ),
)
"""Where comparison.json holds numbers: the only places its "NaN"/"Infinity" strings are
floats (elsewhere they are names: a run may be called "NaN")."""
PLOT_NAMES = ("accuracy", "loss", "heatmap", "seeds")
"""Every sweep gets these plots, each as ``plots/<name>.png`` and ``plots/<name>.svg``."""

_SVG_HASH_SALT = "velocity"


# ----------------------------------------------------------------------------- labels


def _component_label(registry: Any, table: Mapping[str, Any]) -> str:
    name = str(table.get("type", "?"))
    try:
        defaults = registry.get(name).defaults()
    except Exception:  # a component from a newer velocity: show every parameter
        defaults = {}
    params = {k: v for k, v in table.items() if k != "type" and defaults.get(k, object()) != v}
    return format_component(name, params)


def strategy_label(spec: Mapping[str, Any]) -> str:
    """Short strategy name of a canonical spec: ``fedavg``, ``fedprox:mu=0.01``, ``nnm > krum``."""
    table = spec.get("strategy") or {}
    pre = [_component_label(PRE_AGGREGATORS, p) for p in table.get("pre", [])]
    aggregator = table.get("aggregator") or {"type": "?"}
    server = table.get("server") or {}
    default_server = SERVER_OPTIMIZERS.canonical("sgd")
    mu = float(spec.get("mu") or 0.0)
    if not pre and aggregator == {"type": "mean"} and server == default_server:
        return f"fedprox:mu={mu!r}" if mu > 0 else "fedavg"
    parts = [*pre, _component_label(AGGREGATORS, aggregator)]
    if server != default_server:
        parts.append(_component_label(SERVER_OPTIMIZERS, server))
    label = " > ".join(parts)
    return f"{label} (mu={mu!r})" if mu > 0 else label


def attack_label(spec: Mapping[str, Any]) -> str:
    """``none`` or the attacks with their non-default parameters, joined by ``+``."""
    attacks = spec.get("attacks") or []
    if not attacks:
        return "none"
    return "+".join(_component_label(ATTACKS, a) for a in attacks)


def _dataset_label(spec: Mapping[str, Any]) -> str:
    return str((spec.get("dataset") or {}).get("type", "?"))


def group_label(name: str, seed: int) -> str:
    """A run's configuration label across seeds: its name without the ``__s<seed>`` suffix."""
    suffix = f"__s{seed}"
    return name[: -len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else name


def _fingerprint(data: Mapping[str, Any]) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def baseline_fingerprint(spec: Mapping[str, Any]) -> str:
    """Fingerprint of the matching no-attack run: same spec, ``attacks=[]``, ``byzantine=0``."""
    data = {k: v for k, v in spec.items() if k != "name"}
    data["attacks"] = []
    data["byzantine"] = 0
    return _fingerprint(data)


# ----------------------------------------------------------------------------- numbers


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


# ----------------------------------------------------------------------------- comparison


def build_comparison(data: SweepData, *, target_accuracy: float = 0.9) -> dict[str, Any]:
    """comparison.json content: every run's spec, status, final metrics, full trajectory, the
    accuracy drop against its no-attack baseline, and seed groups with mean and std."""
    runs: list[dict[str, Any]] = []
    for run in data.runs:
        if run.spec is None:
            raise ValueError(f"run {run.name!r} has no config: no comparison can be built")
        spec = run.spec.canonical()
        # Results that disagree with their files are not results: the run shows as incomplete.
        summary = (run.summary or {}) if run.complete else {}
        rounds = (run.rounds or []) if run.complete else []
        runs.append(
            {
                "name": run.name,
                "fingerprint": run.spec.fingerprint,
                "fingerprint_without_seed": run.spec.fingerprint_without_seed,
                "spec": spec,
                "seed": run.spec.seed,
                "status": summary.get("status", "incomplete"),
                "error": summary.get("error"),
                "final": summary.get("final", {}),
                "best": summary.get("best", {}),
                "totals": summary.get("totals", {}),
                "rounds_completed": summary.get("rounds_completed", 0),
                "wall_seconds": summary.get("wall_seconds"),
                "rounds": rounds,
                "rounds_to_target": rounds_to_target(rounds, target_accuracy),
                "strategy": strategy_label(spec),
                "attack": attack_label(spec),
                "dataset": _dataset_label(spec),
                "group": group_label(run.name, run.spec.seed),
                "baseline": None,
                "accuracy_drop": None,
            }
        )
    by_fingerprint = {r["fingerprint"]: r for r in runs}
    for entry in runs:
        if not entry["spec"]["attacks"]:
            continue
        baseline = by_fingerprint.get(baseline_fingerprint(entry["spec"]))
        if baseline is None:
            continue
        entry["baseline"] = baseline["name"]
        base_acc = _finite(baseline["final"].get("test_accuracy"))
        own_acc = _finite(entry["final"].get("test_accuracy"))
        if base_acc is not None and own_acc is not None:
            entry["accuracy_drop"] = base_acc - own_acc
    return {
        "schema": COMPARISON_SCHEMA,
        "target_accuracy": target_accuracy,
        "runs": runs,
        "ranking": [r["name"] for r in _ranked(runs)],
        "groups": _groups(runs),
    }


def _rank_key(entry: Mapping[str, Any]) -> tuple[int, float, str]:
    """Complete runs by final accuracy, then diverged runs (whatever accuracy they last
    showed), then runs without a finite accuracy (failed, incomplete)."""
    accuracy = _finite(entry["final"].get("test_accuracy"))
    if accuracy is None or entry["status"] not in ("complete", "diverged"):
        tier = 2
    else:
        tier = 0 if entry["status"] == "complete" else 1
    return (tier, -(accuracy or 0.0), entry["name"])


def _ranked(runs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(runs, key=_rank_key)


def _groups(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for entry in runs:
        grouped.setdefault(entry["fingerprint_without_seed"], []).append(entry)
    groups = []
    for key, members in grouped.items():
        accuracies = [
            a for m in members if (a := _finite(m["final"].get("test_accuracy"))) is not None
        ]
        losses = [a for m in members if (a := _finite(m["final"].get("test_loss"))) is not None]
        drops = [d for m in members if (d := _finite(m["accuracy_drop"])) is not None]
        acc_mean, acc_std = _mean_std(accuracies)
        loss_mean, loss_std = _mean_std(losses)
        drop_mean, drop_std = _mean_std(drops)
        groups.append(
            {
                "diverged": sum(m["status"] == "diverged" for m in members),
                "fingerprint_without_seed": key,
                "label": members[0]["group"],
                "strategy": members[0]["strategy"],
                "attack": members[0]["attack"],
                "runs": [m["name"] for m in members],
                "seeds": [m["seed"] for m in members],
                "test_accuracy_mean": acc_mean,
                "test_accuracy_std": acc_std,
                "test_loss_mean": loss_mean,
                "test_loss_std": loss_std,
                "accuracy_drop_mean": drop_mean,
                "accuracy_drop_std": drop_std,
            }
        )
    # A configuration that diverged on some seed ranks after every one that never did.
    groups.sort(
        key=lambda g: (
            g["test_accuracy_mean"] is None,
            g["diverged"] > 0,
            -(g["test_accuracy_mean"] or 0),
        )
    )
    return groups


# ----------------------------------------------------------------------------- markdown


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}f}"
    return str(value)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_TABLE_HEADER = (
    "rank",
    "run",
    "strategy",
    "attack",
    "seed",
    "status",
    "final acc",
    "final loss",
    "acc drop",
    "rounds to target",
    "wall s",
    "MB sent",
)


def _table_rows(comparison: Mapping[str, Any]) -> list[list[str]]:
    by_name = {r["name"]: r for r in comparison["runs"]}
    rows = []
    for rank, name in enumerate(comparison["ranking"], start=1):
        entry = by_name[name]
        total_bytes = entry["totals"].get("bytes")
        rows.append(
            [
                str(rank),
                name,
                entry["strategy"],
                entry["attack"],
                str(entry["seed"]),
                entry["status"],
                _fmt(entry["final"].get("test_accuracy")),
                _fmt(entry["final"].get("test_loss")),
                _fmt(entry["accuracy_drop"]),
                _fmt(entry["rounds_to_target"]),
                _fmt(entry["wall_seconds"], 2),
                _fmt(total_bytes / 1e6 if total_bytes is not None else None, 2),
            ]
        )
    return rows


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return _fmt(mean) + (f" ± {std:.4f}" if std is not None else "")


def _group_rows(comparison: Mapping[str, Any]) -> list[list[str]]:
    return [
        [
            g["label"],
            g["strategy"],
            g["attack"],
            str(len(g["runs"])) + (f" ({g['diverged']} diverged)" if g.get("diverged") else ""),
            _pm(g["test_accuracy_mean"], g["test_accuracy_std"]),
            _pm(g["test_loss_mean"], g["test_loss_std"]),
            _pm(g["accuracy_drop_mean"], g["accuracy_drop_std"]),
        ]
        for g in comparison["groups"]
    ]


_GROUP_HEADER = (
    "configuration",
    "strategy",
    "attack",
    "seeds",
    "final acc",
    "final loss",
    "acc drop",
)


def comparison_markdown(comparison: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    """comparison.md: ranked run table, seed groups (mean ± std) and the errors of failed runs."""
    target = comparison["target_accuracy"]
    lines = [
        "# Sweep comparison",
        "",
        f"{len(comparison['runs'])} runs; velocity {manifest.get('velocity_version', '?')}; "
        f"started {manifest.get('started_at', '?')}. Ranked by final test accuracy; "
        "diverged runs after every complete one, runs without results last. "
        f"*acc drop*: final accuracy of the matching no-attack run (same spec, no attack, "
        f"same seed) minus the run's own. *rounds to target*: first round with test accuracy "
        f">= {target:g}.",
        "",
        "| " + " | ".join(_TABLE_HEADER) + " |",
        "|"
        + "|".join(
            "---:" if h not in ("run", "strategy", "attack", "status") else "---"
            for h in _TABLE_HEADER
        )
        + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in _table_rows(comparison)]
    lines += ["", "## Over seeds (mean ± std)", ""]
    lines += [
        "| " + " | ".join(_GROUP_HEADER) + " |",
        "|" + "|".join("---" for _ in _GROUP_HEADER) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in _group_rows(comparison)]
    failed = [r for r in comparison["runs"] if r["error"]]
    if failed:
        lines += ["", "## Errors", ""]
        lines += [f"- `{r['name']}` ({r['status']}): {_md_cell(str(r['error']))}" for r in failed]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    png: bytes
    svg: str


def _series(rounds: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for record in rounds:
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            xs.append(int(record["round"]))
            ys.append(float(value))
    return xs, ys


def _palette(count: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _grid(count: int) -> tuple[int, int]:
    cols = min(3, max(count, 1))
    return math.ceil(max(count, 1) / cols), cols


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # Agg, chosen explicitly: no GUI backend, no global pyplot state
    return figure


def _attack_free_key(entry: Mapping[str, Any]) -> str:
    spec = {
        k: v for k, v in entry["spec"].items() if k not in ("name", "seed", "attacks", "byzantine")
    }
    return json.dumps(spec, sort_keys=True)


def _curves(comparison: Mapping[str, Any], key: str, ylabel: str) -> Figure:
    from matplotlib.ticker import MaxNLocator

    runs = comparison["runs"]
    attacks = sorted({r["attack"] for r in runs}, key=lambda a: (a != "none", a))
    # Runs that differ only in their attack share a colour across the per-attack panels.
    families = list(dict.fromkeys(_attack_free_key(r) for r in runs))
    colors = dict(zip(families, _palette(len(families)), strict=True))
    rows, cols = _grid(len(attacks))
    figure = _new_figure(4.2 * cols + 2.2, 3.2 * rows)
    axes = figure.subplots(rows, cols, squeeze=False)
    for index, attack in enumerate(attacks):
        ax = axes[index // cols][index % cols]
        labelled: set[str] = set()
        for entry in runs:
            if entry["attack"] != attack:
                continue
            xs, ys = _series(entry["rounds"], key)
            if not xs:
                continue
            label = entry["group"] if entry["group"] not in labelled else None
            labelled.add(entry["group"])
            ax.plot(
                xs,
                ys,
                color=colors[_attack_free_key(entry)],
                linewidth=1.2,
                label=label,
                marker="o" if len(xs) == 1 else None,
            )
        ax.set_title(f"attack: {attack}", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if labelled:
            ax.legend(fontsize=6, loc="best")
    for index in range(len(attacks), rows * cols):
        axes[index // cols][index % cols].set_visible(False)
    figure.suptitle(f"{ylabel} vs round, per run, by attack", fontsize=10)
    return figure


def _heatmap(comparison: Mapping[str, Any]) -> Figure:
    runs = comparison["runs"]
    strategies = list(dict.fromkeys(r["strategy"] for r in runs))
    attacks = sorted({r["attack"] for r in runs}, key=lambda a: (a != "none", a))
    cells: dict[tuple[str, str], list[float]] = {}
    for entry in runs:
        accuracy = _finite(entry["final"].get("test_accuracy"))
        if accuracy is not None:
            cells.setdefault((entry["strategy"], entry["attack"]), []).append(accuracy)
    grid = [
        [
            math.fsum(cells[(s, a)]) / len(cells[(s, a)]) if (s, a) in cells else math.nan
            for a in attacks
        ]
        for s in strategies
    ]
    figure = _new_figure(2.2 + 1.3 * len(attacks), 1.6 + 0.5 * len(strategies))
    ax = figure.subplots()
    image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(attacks)), attacks, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(strategies)), strategies, fontsize=8)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            text = "n/a" if math.isnan(value) else f"{value:.3f}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if math.isnan(value) or value < 0.6 else "black",
            )
    ax.set_xlabel("attack")
    ax.set_ylabel("strategy")
    ax.set_title("final test accuracy (mean over seeds and other swept fields)", fontsize=9)
    figure.colorbar(image, ax=ax, label="accuracy")
    return figure


def _seed_bands(comparison: Mapping[str, Any]) -> Figure:
    runs = comparison["runs"]
    figure = _new_figure(8.0, 4.5)
    ax = figure.subplots()
    groups = comparison["groups"]
    colors = _palette(len(groups))
    for color, group in zip(colors, groups, strict=True):
        per_round: dict[int, list[float]] = {}
        for entry in runs:
            if entry["name"] in group["runs"]:
                for x, y in zip(*_series(entry["rounds"], "test_accuracy"), strict=True):
                    if math.isfinite(y):
                        per_round.setdefault(x, []).append(y)
        if not per_round:
            continue
        xs = sorted(per_round)
        means = [math.fsum(per_round[x]) / len(per_round[x]) for x in xs]
        stds = [statistics.stdev(per_round[x]) if len(per_round[x]) > 1 else 0.0 for x in xs]
        ax.plot(
            xs,
            means,
            color=color,
            linewidth=1.4,
            label=f"{group['label']} (n={len(group['runs'])})",
        )
        ax.fill_between(
            xs,
            [m - s for m, s in zip(means, stds, strict=True)],
            [m + s for m, s in zip(means, stds, strict=True)],
            color=color,
            alpha=0.2,
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title("test accuracy, mean ± std over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=6, loc="best")
    return figure


def _encode(figure: Figure) -> tuple[bytes, str]:
    import matplotlib

    # Text stays text in SVG (small, fast, searchable); the salt makes element ids reproducible.
    with matplotlib.rc_context({"svg.hashsalt": _SVG_HASH_SALT, "svg.fonttype": "none"}):
        png, svg = io.BytesIO(), io.StringIO()
        figure.savefig(png, format="png", metadata={"Software": None})
        figure.set_layout_engine("none")  # keep the layout just computed: no second solve
        figure.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return png.getvalue(), svg.getvalue()


def use_private_matplotlib_dir() -> None:
    """matplotlib keeps its configuration and font cache in ``$MPLCONFIGDIR``, else under
    ``$HOME``; unless the user chose a folder, point it at this user's own folder in the temp
    directory (created 0700; a fresh temp folder if that one is not safely ours), so drawing a
    report writes nothing under ``$HOME``. Call it before matplotlib is first imported."""
    if os.environ.get("MPLCONFIGDIR"):
        return
    uid = os.getuid() if hasattr(os, "getuid") else None
    folder = Path(tempfile.gettempdir()) / f"velocity-matplotlib-{uid if uid is not None else 'u'}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
        ours = stat.S_ISDIR(info.st_mode) and not info.st_mode & 0o022
        if uid is not None:
            ours = ours and info.st_uid == uid
    except OSError:
        ours = False
    if not ours:
        folder = Path(tempfile.mkdtemp(prefix="velocity-matplotlib-"))
    os.environ["MPLCONFIGDIR"] = str(folder)


def render_plot(name: str, comparison: Mapping[str, Any]) -> Plot:
    """One of the sweep's plots (a name of PLOT_NAMES) as PNG bytes and SVG text."""
    use_private_matplotlib_dir()
    if name == "accuracy":
        title, figure = (
            "Test accuracy per round",
            _curves(comparison, "test_accuracy", "test accuracy"),
        )
    elif name == "loss":
        title, figure = "Test loss per round", _curves(comparison, "test_loss", "test loss")
    elif name == "heatmap":
        title, figure = "Strategy x attack: final accuracy", _heatmap(comparison)
    else:
        title, figure = "Mean ± std over seeds", _seed_bands(comparison)
    png, svg = _encode(figure)
    return Plot(name=name, title=title, png=png, svg=svg)


def render_plots(
    comparison: Mapping[str, Any], map_fn: Callable[..., Iterable[Plot]] = map
) -> list[Plot]:
    """The sweep's plots (see PLOT_NAMES); ``map_fn`` may be a process pool's ``map``, as each
    plot is rendered independently (the bytes do not depend on where)."""
    return list(map_fn(render_plot, PLOT_NAMES, [comparison] * len(PLOT_NAMES)))


# ----------------------------------------------------------------------------- html

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f2f2f2; }
td.text { text-align: left; }
.failed { color: #b00020; }
.diverged { color: #b36b00; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
.meta { color: #555; font-size: 0.85rem; }
"""


def _html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    text_cols: set[int],
    status_col: int | None = None,
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        css = f' class="{html.escape(row[status_col])}"' if status_col is not None else ""
        cells = "".join(
            f'<td class="text">{html.escape(c)}</td>'
            if i in text_cols
            else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def report_html(
    comparison: Mapping[str, Any], manifest: Mapping[str, Any], plots: Sequence[Plot]
) -> str:
    """One self-contained page: tables and plots inlined as base64 PNG; no scripts, no network."""
    host = manifest.get("host") or {}
    meta = (
        f"{len(comparison['runs'])} runs · velocity {manifest.get('velocity_version', '?')} · "
        f"started {manifest.get('started_at', '?')} · {host.get('cpu_model', '?')}, "
        f"{host.get('cores', '?')} cores"
    )
    figures = "\n".join(
        f'<figure id="plot-{p.name}"><figcaption>{html.escape(p.title)}</figcaption>'
        f'<img alt="{html.escape(p.title)}" '
        f'src="data:image/png;base64,{base64.b64encode(p.png).decode("ascii")}"></figure>'
        for p in plots
    )
    errors = [r for r in comparison["runs"] if r["error"]]
    error_html = ""
    if errors:
        items = "".join(
            f"<li><code>{html.escape(r['name'])}</code> ({html.escape(r['status'])}): "
            f"{html.escape(str(r['error']))}</li>"
            for r in errors
        )
        error_html = f"<h2>Errors</h2><ul>{items}</ul>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>velocity sweep report</title><style>{_CSS}</style></head><body>"
        f'<h1>Sweep report</h1><p class="meta">{html.escape(meta)}</p>'
        f"<h2>Runs, ranked by final test accuracy</h2>"
        f'<p class="meta">acc drop: accuracy of the matching no-attack run minus the run\'s own; '
        f"rounds to target: first round with accuracy &ge; "
        f"{comparison['target_accuracy']:g}.</p>"
        + _html_table(_TABLE_HEADER, _table_rows(comparison), {1, 2, 3, 5}, status_col=5)
        + "<h2>Over seeds (mean ± std)</h2>"
        + _html_table(_GROUP_HEADER, _group_rows(comparison), {0, 1, 2})
        + f"<h2>Plots</h2>{figures}{error_html}</body></html>\n"
    )


def write_reports(
    data: SweepData,
    *,
    target_accuracy: float = 0.9,
    map_fn: Callable[..., Iterable[Plot]] = map,
) -> dict[str, Any]:
    """Write comparison.json, comparison.md, report.html and plots/ into the sweep folder
    (``map_fn``: how to render the plots, e.g. a process pool's ``map``)."""
    out_dir = Path(data.out_dir)
    comparison = build_comparison(data, target_accuracy=target_accuracy)
    use_private_matplotlib_dir()
    plots = render_plots(comparison, map_fn)
    for plot in plots:
        write_bytes_atomic(out_dir / "plots" / f"{plot.name}.png", plot.png)
        write_text_atomic(out_dir / "plots" / f"{plot.name}.svg", plot.svg)
    write_json_atomic(out_dir / "comparison.json", comparison)
    write_text_atomic(out_dir / "comparison.md", comparison_markdown(comparison, data.manifest))
    write_text_atomic(out_dir / "report.html", report_html(comparison, data.manifest, plots))
    return comparison
