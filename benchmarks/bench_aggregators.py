"""Benchmark of every aggregator against a plain read of the update matrix.

Run: ``.venv/bin/python benchmarks/bench_aggregators.py [--repeat 15] [--markdown]``. Prints, per
shape, each aggregator's best-of-``repeat`` time (rounds timed round-robin) and its ratio to
``updates.sum()`` on the same matrix, BLAS limited to one thread as in runs.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from velocity.strategies import AGGREGATORS

SHAPES = ((10, 1_000_000), (100, 100_000))
# Parameters for the benchmark; f chosen so that every rule's precondition holds at both shapes.
PARAMS: dict[str, dict[str, object]] = {
    "trimmed_mean": {"beta": 0.1},
    "krum": {"f": 2},
    "multi_krum": {"f": 2},
    "bulyan": {"f": 1},
    "geometric_median": {"max_iter": 10, "tol": 0.0},
    "dnc": {"f": 2},
}
TARGETS = {
    "mean": 1.5,
    "median": 15,
    "trimmed_mean": 15,
    "krum": 10,
    "multi_krum": 10,
    "bulyan": 20,
    "geometric_median": 25,
}
# perf_counter is wall time; process_time is this process's CPU time, steadier on a machine that
# other processes share (it does not see memory-bandwidth contention, so it flatters a little).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = "wall"
REFERENCE_MS = {"mean": 4.8, "median": 87, "trimmed_mean": 99, "krum": 74, "bulyan": 147}


Case = tuple[str, str]  # (shape, aggregator)


def best_times(
    fns: dict[Case, Callable[[], object]], reads: dict[str, Callable[[], object]], repeat: int
) -> tuple[dict[Case, float], dict[str, float]]:
    """Best-of-``repeat`` seconds of each case, and per shape the best of its plain read, timed
    just before each call of that shape's cases.

    The cases of every shape are timed round-robin. On a shared VM the machine alternates between
    quiet and slow phases lasting seconds (a compute-bound SYRK slows by up to 1.6x in some while
    a memory-bound read barely changes); with rounds spread over the whole run every case gets the
    same chance of a quiet phase, which back-to-back repetitions of one case, or one shape's
    cases timed after the other's, would not.
    """
    clock = CLOCKS[CLOCK]
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    best_read = dict.fromkeys(reads, float("inf"))
    for _ in range(repeat):
        for (shape, name), fn in fns.items():
            start = clock()
            reads[shape]()
            middle = clock()
            fn()
            end = clock()
            best_read[shape] = min(best_read[shape], middle - start)
            best[shape, name] = min(best[shape, name], end - middle)
    return best, best_read


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(repeat: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    fns: dict[Case, Callable[[], object]] = {}
    reads: dict[str, Callable[[], object]] = {}
    for n, d in SHAPES:
        updates = rng.standard_normal((n, d), dtype=np.float32)
        weights = rng.integers(10, 1000, size=n).astype(np.float64)
        shape = f"{n} x {d:,}"
        reads[shape] = updates.sum
        for entry in AGGREGATORS:
            params = dict(PARAMS.get(entry.name, {}))
            if entry.extra.get("seeded"):
                params["rng"] = np.random.default_rng(0)
            if entry.extra.get("stateful"):
                params["state"] = {}
            fns[shape, entry.name] = lambda e=entry, p=params, u=updates, w=weights: e.obj(
                u, w, **p
            )
    best, best_read = best_times(fns, reads, repeat)
    rows: list[dict[str, object]] = []
    for shape, read in best_read.items():
        # The denominator is the fastest read seen for this shape (the most conservative ratio).
        print(f"\n{shape} float32\n  read (updates.sum()) {read * 1e3:.2f} ms")
        for (case_shape, name), seconds in best.items():
            if case_shape != shape:
                continue
            ratio = seconds / read
            target = TARGETS.get(name)
            verdict = "" if target is None else ("ok" if ratio <= target else f"MISS (> {target}x)")
            print(f"  {name:<18} {seconds * 1e3:9.2f} ms  {ratio:7.2f}x read  {verdict}")
            rows.append(
                {
                    "shape": shape,
                    "name": name,
                    "ms": seconds * 1e3,
                    "ratio": ratio,
                    "target": target,
                    "read_ms": read * 1e3,
                }
            )
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    lines = [
        "| shape | aggregator | time (ms) | read (ms) | x read | target | reference (10 x 1M) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        target = row["target"]
        ref = REFERENCE_MS.get(str(row["name"])) if str(row["shape"]).startswith("10 ") else None
        lines.append(
            f"| {row['shape']} | {row['name']} | {row['ms']:.1f} | {row['read_ms']:.2f} | "
            f"{row['ratio']:.2f} | "
            f"{'' if target is None else f'<= {target}x'} | "
            f"{'' if ref is None else f'{ref} ms'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15, help="timed repetitions (best is kept)")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="timer to use")
    args = parser.parse_args()
    global CLOCK
    CLOCK = args.clock
    print(f"CPU: {cpu_model()}; numpy {np.__version__}; BLAS threads: 1; clock: {CLOCK}")
    with threadpool_limits(limits=1, user_api="blas"):
        rows = run(args.repeat)
    if args.markdown:
        print()
        print(markdown(rows))


if __name__ == "__main__":
    main()
