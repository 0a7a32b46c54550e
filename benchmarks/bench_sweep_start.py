"""How long a sweep takes to start, and what checking every run against its data adds to it.

``run_sweep`` checks every run against its data (``simulation.validate_runs``) before it writes
anything. This measures, side by side and interleaved, the time from calling ``run_sweep`` to its
``start`` event (folder locked, runs checked, manifest and every config written) with that check
and with it switched off, on the 288-run attack arena; plus the check alone, and what checking
each run on its own (one dataset load per run) would cost. Usage:
    python benchmarks/bench_sweep_start.py [--experiment examples/attack_arena.toml] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import velocity.sweeps.runner as runner
from velocity.experiment import load_experiment
from velocity.simulation import validate_run, validate_runs
from velocity.sweeps.environment import cpu_model


class _Started(Exception):
    """Stops the sweep at its start event: only the start is measured."""


def _time_to_start(specs: list[Any], out: Path) -> float:
    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "start":
            raise _Started

    t0 = time.perf_counter()
    try:
        runner.run_sweep(specs, out, parallel=2, on_event=on_event)
    except _Started:
        return time.perf_counter() - t0
    raise AssertionError("the sweep did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", default="examples/attack_arena.toml")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    specs = load_experiment(args.experiment)
    print(f"host: {platform.platform()}, {cpu_model()}, {os.cpu_count()} cores")
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"{len(specs)} runs from {args.experiment}")
    validate_runs(specs[:1])  # warm the imports and the dataset files' page cache

    checked_fn = runner._validate_against_data
    starts: dict[str, list[float]] = {"with the check": [], "without": []}
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in range(args.repeat):
            for label in starts:  # interleaved: drift on the machine hits both alike
                runner._validate_against_data = (
                    checked_fn if label == "with the check" else (lambda specs: None)
                )
                starts[label].append(_time_to_start(specs, Path(tmp) / f"{label}-{attempt}"))
    runner._validate_against_data = checked_fn
    t0 = time.perf_counter()
    validate_runs(specs)
    grouped = time.perf_counter() - t0
    t0 = time.perf_counter()
    for spec in specs:
        validate_run(spec)
    one_by_one = time.perf_counter() - t0

    with_check, without = (statistics.median(v) for v in starts.values())
    print(
        f"time to start (median of {args.repeat}): with the check {with_check:.3f} s, "
        f"without {without:.3f} s, ratio {with_check / without:.2f}x"
    )
    print(
        f"the check alone: {grouped:.3f} s ({1000 * grouped / len(specs):.2f} ms a run); "
        f"each run on its own, one dataset load each: {one_by_one:.3f} s"
    )


if __name__ == "__main__":
    main()
