"""Sweep throughput: the same 8 runs with ``--parallel 1`` and ``--parallel 2``, side by side.

Prints both wall times (whole sweep, and the run phase alone: first submit to last run done),
the speed-up, and checks that both sweeps produced bit-identical metrics. Usage:
    python benchmarks/bench_sweep.py [--rounds 40] [--clients 50] [--hidden 128] [--workers 1,2]

The fixed costs of a sweep (spawning workers, writing the report and plots) are paid once, so the
speed-up of the whole sweep depends on how long its runs are; the default runs take a few seconds
each, like the example sweeps, and ``--clients 10`` shows the small-run case.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from velocity.experiment import expand_experiment
from velocity.records import TIMING_METRICS
from velocity.sweeps import run_sweep
from velocity.sweeps.environment import cpu_model


def _metrics_text(path: Path) -> str:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    keep = [i for i, column in enumerate(rows[0]) if column not in TIMING_METRICS]
    return "\n".join(",".join(row[i] for i in keep) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    specs = expand_experiment(
        {
            "shared": {
                "dataset": "digits",
                "num_clients": args.clients,
                "rounds": args.rounds,
                "local_epochs": 2,
                "model": f"mlp:hidden={args.hidden}",
            },
            "matrix": {"strategy": ["fedavg", "fedprox:mu=0.01"], "seeds": 4},
        },
        "bench",
    )
    assert len(specs) == 8
    print(f"host: {platform.platform()}, {cpu_model()}, {os.cpu_count()} cores")
    # Other processes on the machine distort a parallel speed-up: report the load with it.
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(
        f"8 runs: digits, {args.clients} clients, {args.rounds} rounds, 2 local epochs, "
        f"mlp:hidden={args.hidden}"
    )
    timings: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (int(w) for w in args.workers.split(",")):
            marks: dict[str, float] = {}

            def on_event(event: dict[str, Any], marks: dict[str, float] = marks) -> None:
                if event["event"] == "start":
                    marks["start"] = time.perf_counter()
                elif event["event"] == "run":
                    marks["last_run"] = time.perf_counter()

            t0 = time.perf_counter()
            result = run_sweep(
                specs, Path(tmp) / f"p{workers}", parallel=workers, on_event=on_event
            )
            total = time.perf_counter() - t0
            assert result.exit_code == 0, result.results
            timings[workers] = {"total": total, "runs": marks["last_run"] - marks["start"]}
            print(
                f"--parallel {workers}: sweep {total:6.2f} s, "
                f"run phase {timings[workers]['runs']:6.2f} s"
            )
        first, *others = sorted(timings)
        for workers in others:
            speedup_total = timings[first]["total"] / timings[workers]["total"]
            speedup_runs = timings[first]["runs"] / timings[workers]["runs"]
            print(
                f"speed-up {first} -> {workers} workers: sweep {speedup_total:.2f}x, "
                f"run phase {speedup_runs:.2f}x"
            )
            identical = all(
                _metrics_text(Path(tmp) / f"p{first}" / s.name / "rounds.csv")
                == _metrics_text(Path(tmp) / f"p{workers}" / s.name / "rounds.csv")
                for s in specs
            )
            print(f"metrics bit-identical across worker counts: {identical}")


if __name__ == "__main__":
    main()
