"""Time one round's local training of 100 digits clients (MLP): vectorized vs a per-client loop.

Run: ``make bench`` or ``python benchmarks/bench_round.py``. Both paths train the same clients
with the same schedules (the test suite checks they agree); BLAS is pinned to one thread, as in
every run. Prints the median of several repeats and the speed-up ratio.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

from threadpoolctl import threadpool_limits

from velocity.models import LocalConfig, plan_round, train_clients, train_clients_naive
from velocity.simulation import validate_run
from velocity.spec import spec_from_mapping

REPEATS = 7


def _median_seconds(fn: Callable[[], object]) -> float:
    fn()  # warm-up
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(partition: str, hidden: int, epochs: int) -> tuple[float, float]:
    spec = spec_from_mapping(
        {
            "dataset": "digits",
            "num_clients": 100,
            "partition": partition,
            "model": f"mlp:hidden={hidden}",
            "local_epochs": epochs,
        }
    )
    setup = validate_run(spec)
    cfg = LocalConfig(epochs=epochs, batch_size=spec.batch_size, lr=spec.lr, momentum=spec.momentum)
    plan = lambda: plan_round(  # noqa: E731  (the round's schedules are part of its cost)
        setup.clients, range(100), epochs=epochs, batch_size=spec.batch_size, seed=0, round_index=1
    )
    args = (setup.model, setup.initial_params, setup.data.X_train, setup.data.y_train)
    fast = _median_seconds(lambda: train_clients(*args, plan(), cfg))
    slow = _median_seconds(lambda: train_clients_naive(*args, plan(), cfg))
    return fast, slow


def main() -> None:
    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    print(
        "| clients | partition | model | local epochs | vectorized (ms) "
        "| per-client loop (ms) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|")
    with threadpool_limits(limits=1):
        for partition, hidden, epochs in (
            ("iid", 64, 1),
            ("iid", 64, 5),
            ("dirichlet:alpha=0.3", 64, 1),
            ("iid", 256, 1),
        ):
            fast, slow = bench(partition, hidden, epochs)
            print(
                f"| 100 | {partition} | mlp:hidden={hidden} | {epochs} | {fast * 1e3:.1f} | "
                f"{slow * 1e3:.1f} | {slow / fast:.1f}x |"
            )


if __name__ == "__main__":
    main()
