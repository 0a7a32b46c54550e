"""Ray vs the local process pool: the same 8 short and 8 longer runs, side by side in one process.

For each size, the local executor (``--parallel 2``) and then the Ray executor (a local Ray
instance with 2 CPUs, one run per task) run the same sweep; printed: Ray's start-up and
shut-down, each sweep's wall time and run phase (the start event to the last run done), the
overhead per run (run-phase difference / 8) and whether the metrics are bit-identical. Usage:
    python benchmarks/bench_ray.py [--workers 2] [--short-rounds 3] [--long-rounds 40]
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
from velocity.spec import RunSpec
from velocity.sweeps import run_sweep
from velocity.sweeps.environment import cpu_model
from velocity.sweeps.executors.ray import RayExecutor


def _metrics_text(path: Path) -> str:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    keep = [i for i, column in enumerate(rows[0]) if column not in TIMING_METRICS]
    return "\n".join(",".join(row[i] for i in keep) for row in rows)


def _specs(rounds: int, clients: int, hidden: int) -> list[RunSpec]:
    shared = {"dataset": "digits", "num_clients": clients, "rounds": rounds}
    shared |= {"local_epochs": 2, "model": f"mlp:hidden={hidden}"}
    matrix = {"strategy": ["fedavg", "fedprox:mu=0.01"], "seeds": 4}
    specs = expand_experiment({"shared": shared, "matrix": matrix}, "bench")
    assert len(specs) == 8
    return specs


def _timed_sweep(specs: list[RunSpec], out: Path, **kwargs: Any) -> dict[str, float]:
    marks: dict[str, float] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "start":
            marks["start"] = time.perf_counter()
        elif event["event"] == "run":
            marks["last_run"] = time.perf_counter()

    t0 = time.perf_counter()
    result = run_sweep(specs, out, on_event=on_event, command=["bench"], **kwargs)
    total = time.perf_counter() - t0
    assert result.exit_code == 0, result.results
    return {"total": total, "runs": marks["last_run"] - marks["start"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--short-rounds", type=int, default=3)
    parser.add_argument("--long-rounds", type=int, default=40)
    args = parser.parse_args()
    print(f"host: {platform.platform()}, {cpu_model()}, {os.cpu_count()} cores")
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    sizes = {
        "short": _specs(args.short_rounds, clients=10, hidden=32),
        "longer": _specs(args.long_rounds, clients=50, hidden=128),
    }
    with tempfile.TemporaryDirectory() as tmp:
        # Untimed warm-up: imports, dataset cache and plotting set-up are paid before either.
        _timed_sweep(sizes["short"][:2], Path(tmp) / "warm-up", parallel=args.workers)
        for size, specs in sizes.items():
            base = Path(tmp) / size
            local = _timed_sweep(specs, base / "local", parallel=args.workers)
            t0 = time.perf_counter()
            executor = RayExecutor(args.workers)
            started = time.perf_counter() - t0
            try:
                ray = _timed_sweep(specs, base / "ray", executor=executor)
            finally:
                t1 = time.perf_counter()
                executor.close()
                stopped = time.perf_counter() - t1
            identical = all(
                _metrics_text(base / "local" / s.name / "rounds.csv")
                == _metrics_text(base / "ray" / s.name / "rounds.csv")
                for s in specs
            )
            rounds = specs[0].rounds
            print(f"8 {size} runs ({rounds} rounds, {specs[0].num_clients} clients):")
            print(
                f"  local --parallel {args.workers}: sweep {local['total']:6.2f} s, "
                f"run phase {local['runs']:6.2f} s"
            )
            print(
                f"  ray ({args.workers} CPUs):      sweep {ray['total']:6.2f} s, "
                f"run phase {ray['runs']:6.2f} s; start {started:.2f} s, stop {stopped:.2f} s"
            )
            print(
                f"  ray / local: run phase {ray['runs'] / local['runs']:.2f}x, sweep incl. "
                f"start+stop {(ray['total'] + started + stopped) / local['total']:.2f}x; "
                f"overhead per run {(ray['runs'] - local['runs']) / len(specs) * 1000:+.0f} ms"
            )
            print(f"  metrics bit-identical: {identical}")


if __name__ == "__main__":
    main()
