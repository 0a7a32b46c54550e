"""The attack arena table: final test accuracy (mean ± std over seeds), strategies x attacks.

Reads the comparison.json of a finished sweep of examples/attack_arena.toml and prints Markdown:

    velocity sweep examples/attack_arena.toml --out out/attack-arena
    python benchmarks/attack_arena.py out/attack-arena
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["arena_table", "main"]


def _cell(group: dict[str, Any]) -> str:
    mean, std = group.get("test_accuracy_mean"), group.get("test_accuracy_std")
    if mean is None or not math.isfinite(mean):
        return "failed"
    text = f"{mean:.3f}"
    if std is not None and math.isfinite(std):
        text += f" ± {std:.3f}"
    return text


def arena_table(comparison: dict[str, Any]) -> str:
    """Markdown pivot of the comparison's seed groups: one row per strategy, one column per
    attack ('none' first), in the order the sweep expanded them."""
    strategies: list[str] = []
    attacks: list[str] = []
    for run in comparison["runs"]:  # expansion order: matrix order, baselines first
        if run["strategy"] not in strategies:
            strategies.append(run["strategy"])
        if run["attack"] not in attacks:
            attacks.append(run["attack"])
    if "none" in attacks:
        attacks.remove("none")
        attacks.insert(0, "none")
    cells = {(g["strategy"], g["attack"]): g for g in comparison["groups"]}
    seeds = max((len(g["seeds"]) for g in comparison["groups"]), default=0)
    lines = [
        f"| strategy \\ attack ({seeds} seeds) | " + " | ".join(f"`{a}`" for a in attacks) + " |",
        "|---|" + "---:|" * len(attacks),
    ]
    for strategy in strategies:
        row = [_cell(cells[(strategy, a)]) if (strategy, a) in cells else "-" for a in attacks]
        lines.append(f"| `{strategy}` | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="output folder of the arena sweep")
    args = parser.parse_args(argv)
    path = args.sweep_dir / "comparison.json"
    if not path.is_file():
        print(f"error: {path}: not found (run the sweep first)", file=sys.stderr)
        return 2
    print(arena_table(json.loads(path.read_text(encoding="utf-8"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
