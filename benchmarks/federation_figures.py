"""Tables and plots of the two headline federation experiments in docs/federation.md.

    python benchmarks/federation_figures.py stragglers out/fedprox-stragglers [--plot FILE.png]
    python benchmarks/federation_figures.py time out/fedbuff-time [--target 0.9] [--plot FILE.png]

``stragglers``: final test accuracy (mean +- std over seeds) of each strategy at each straggler
level (examples/fedprox_stragglers.toml). ``time``: simulated seconds and server steps to reach
``--target`` accuracy, and final accuracy, of each run group (examples/fedbuff_time.toml).
Reads the sweep folder's run folders (config.json, rounds.csv) only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


def _runs(folder: Path) -> list[tuple[dict[str, Any], list[dict[str, str]]]]:
    out = []
    for run in sorted(p for p in folder.iterdir() if (p / "rounds.csv").is_file()):
        spec = json.loads((run / "config.json").read_text())
        spec = spec.get("spec", spec)
        with (run / "rounds.csv").open() as handle:
            out.append((spec | {"_name": run.name}, list(csv.DictReader(handle))))
    return out


def _float(value: str | None) -> float | None:
    try:
        x = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return x if x is not None and math.isfinite(x) else None


def _final_accuracy(rows: list[dict[str, str]]) -> float:
    values = [a for a in (_float(r.get("test_accuracy")) for r in rows) if a is not None]
    return values[-1]


def _mean_std(values: list[float]) -> str:
    if not values:
        return "not reached"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"


def _group(name: str) -> str:
    return name.rsplit("__s", 1)[0]


def stragglers(folder: Path, plot: Path | None) -> None:
    table: dict[tuple[str, float], list[float]] = defaultdict(list)
    curves: dict[tuple[str, float], list[list[tuple[int, float]]]] = defaultdict(list)
    for spec, rows in _runs(folder):
        strategy = _group(spec["_name"]).split("__")[0]
        level = float(spec.get("system", {}).get("stragglers", 0.0))
        table[strategy, level].append(_final_accuracy(rows))
        curves[strategy, level].append(
            [
                (int(r["round"]), a)
                for r in rows
                if (a := _float(r.get("test_accuracy"))) is not None
            ]
        )
    strategies = sorted({s for s, _ in table})
    levels = sorted({lv for _, lv in table})
    print("| strategy | " + " | ".join(f"{lv:.0%} stragglers" for lv in levels) + " |")
    print("|---|" + "---|" * len(levels))
    for s in strategies:
        cells = [_mean_std(table[s, lv]) for lv in levels]
        print(f"| {s} | " + " | ".join(cells) + " |")
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels), 3.2), sharey=True)
        for ax, lv in zip(axes, levels, strict=True):
            for s in strategies:
                runs = curves[s, lv]
                xs = [x for x, _ in runs[0]]
                ys = [statistics.fmean(run[i][1] for run in runs) for i in range(len(xs))]
                ax.plot(xs, ys, label=s)
            ax.set_title(f"{lv:.0%} stragglers")
            ax.set_xlabel("round")
        axes[0].set_ylabel("test accuracy (mean of seeds)")
        axes[-1].legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=110)


def time_to_accuracy(folder: Path, target: float, plot: Path | None) -> None:
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    curves: dict[str, list[list[tuple[float, float]]]] = defaultdict(list)
    for spec, rows in _runs(folder):
        group = _group(spec["_name"])
        points = [
            (float(r["sim_time"]), a, int(r["round"]))
            for r in rows
            if (a := _float(r.get("test_accuracy"))) is not None
        ]
        hit = next((p for p in points if p[1] >= target), None)
        if hit is not None:
            groups[group]["time"].append(hit[0])
            groups[group]["steps"].append(hit[2])
        groups[group]["final"].append(points[-1][1])
        groups[group]["total"].append(points[-1][0])
        curves[group].append([(t, a) for t, a, _ in points])
    print(
        f"| run | simulated s to {target:.0%} | server steps to {target:.0%} | "
        "final accuracy | total simulated s |"
    )
    print("|---|---|---|---|---|")
    for group, v in sorted(groups.items()):
        reached = f" ({len(v['time'])}/{len(v['final'])} seeds)"
        print(
            f"| {group} | {_mean_std(v['time'])}{reached} | {_mean_std(v['steps'])} | "
            f"{_mean_std(v['final'])} | {_mean_std(v['total'])} |"
        )
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        for i, (group, runs) in enumerate(sorted(curves.items())):
            for j, run in enumerate(runs):
                ax.plot(
                    *zip(*run, strict=True),
                    color=f"C{i}",
                    alpha=0.7,
                    label=group if j == 0 else None,
                )
        ax.axhline(target, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("simulated seconds")
        ax.set_ylabel("test accuracy")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figure", choices=("stragglers", "time"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    if args.figure == "stragglers":
        stragglers(args.folder, args.plot)
    else:
        time_to_accuracy(args.folder, args.target, args.plot)


if __name__ == "__main__":
    main()
