"""What simulating a realistic federation costs: whole runs on digits, side by side.

Run: ``python benchmarks/bench_federation.py``. Each row is the same 20-round run (50 clients,
10 a round, MLP) with one federation feature on: the ideal federation (no ``system`` table),
stragglers + availability + dropouts + simulated time, top-k and QSGD compression, and the
asynchronous protocols (FedBuff, K = 5; FedAsync), which train clients in small dispatches
instead of one cohort. Median wall seconds of 3 repeats, BLAS on one thread as in every run,
and the ratio to the ideal federation.
"""

from __future__ import annotations

import platform
import statistics
import time

from velocity.simulation import run_simulation, validate_run
from velocity.spec import RunSpec

REPEATS = 3
BASE = dict(dataset="digits", num_clients=50, clients_per_round=10, rounds=20, model="mlp")
CASES: list[tuple[str, dict[str, object]]] = [
    ("ideal (no system table)", {}),
    (
        "stragglers=0.5, availability=0.8, dropout=0.1, speed_sigma=1.5",
        {"system": "stragglers=0.5,availability=0.8,dropout=0.1,speed_sigma=1.5"},
    ),
    (
        "compression topk:fraction=0.01, error feedback",
        {"compression": "topk:fraction=0.01,error_feedback=true"},
    ),
    ("compression qsgd:levels=16", {"compression": "qsgd:levels=16"}),
    (
        "fedbuff:buffer=5 (10 training at once), speed_sigma=1.5",
        {"system": "speed_sigma=1.5", "asynchronous": "fedbuff:buffer=5"},
    ),
    (
        "fedasync (10 training at once), speed_sigma=1.5",
        {"system": "speed_sigma=1.5", "asynchronous": "fedasync"},
    ),
]


def _median_seconds(spec: RunSpec) -> float:
    setup = validate_run(spec)
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        result = run_simulation(spec, setup=setup)
        times.append(time.perf_counter() - t0)
        assert result.status == "complete", result.error
    return statistics.median(times)


def main() -> None:
    print(f"# {platform.machine()} {platform.python_version()}, {REPEATS} repeats")
    print("| run | seconds | vs ideal |")
    print("|---|---|---|")
    base = None
    for label, extra in CASES:
        seconds = _median_seconds(RunSpec(**BASE, **extra))  # type: ignore[arg-type]
        base = base or seconds
        print(f"| {label} | {seconds:.2f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
