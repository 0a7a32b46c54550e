"""A run at 100, 1,438 and 10,000 clients: preparation, round time per client update, peak RSS.

Each size runs in a fresh process (``--worker``) so its peak RSS (``getrusage``) is its own:
digits with IID clients for 100 and 1,438 (one training sample per client at 1,438),
Synthetic(1, 1) with its 10,000 natural clients (about 2.3 M training samples) for 10,000;
multinomial logistic regression, SGD lr 0.1, batch 16, one local epoch, every client every
round, FedAvg. Run: ``python benchmarks/bench_scale.py [--sizes 100,1438,10000] [--rounds 5]``.
Only public functions that every velocity version has are used, so the same script measures an
older tree too (``PYTHONPATH=<old tree>/src python benchmarks/bench_scale.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def worker(clients: int, rounds: int) -> dict[str, float]:
    t0 = time.perf_counter()
    from velocity.simulation import run_simulation, validate_run
    from velocity.spec import RunSpec

    dataset, part = ("digits", "iid") if clients <= 1438 else ("synthetic", "natural")
    spec = RunSpec(
        name="scale",
        dataset=dataset,
        partition=part,
        num_clients=clients,
        rounds=rounds,
        local_epochs=1,
        batch_size=16,
        lr=0.1,
        model="logreg",
        strategy="fedavg",
        seed=0,
    )
    t1 = time.perf_counter()
    setup = validate_run(spec)
    t2 = time.perf_counter()
    result = run_simulation(spec, setup=setup)
    round_seconds = sum(r["round_seconds"] for r in result.rounds)
    return {
        "import_s": t1 - t0,
        "prepare_s": t2 - t1,
        "rounds_s": round_seconds,
        "ms_per_update": 1e3 * round_seconds / (clients * rounds),
        "accuracy": result.final_metrics()["test_accuracy"],
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "total_s": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=int)
    parser.add_argument("--sizes", default="100,1438,10000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.rounds)))
        return
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        "| clients | rounds | prepare s | rounds s | ms per client update | peak RSS MB "
        "| accuracy | process s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        command = [sys.executable, __file__, "--worker", str(size), "--rounds", str(args.rounds)]
        t0 = time.perf_counter()
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        wall = time.perf_counter() - t0
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"| {size} | {args.rounds} | {r['prepare_s']:.2f} | {r['rounds_s']:.2f} | "
            f"{r['ms_per_update']:.4f} | {r['peak_mb']:.0f} | {r['accuracy']:.3f} | {wall:.1f} |"
        )


if __name__ == "__main__":
    main()
