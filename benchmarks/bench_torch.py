"""The torch backend, timed side by side in one process (CPU unless ``--device cuda``):

1. one round of ``torch_cnn`` on ``digits_images`` for 100 and 1,000 clients, all clients
   trained together with ``torch.func.vmap`` vs the per-client loop (clients per second, ratio);
2. one round of ``torch_mlp`` vs the NumPy ``mlp`` (same hidden width, same plan).

Run: ``python benchmarks/bench_torch.py [--clients 100 1000] [--device cpu|cuda|auto]``.
Each timing is the median of ``--repeat`` rounds after one warm-up round (torch.func's first
call pays a one-off set-up of a few seconds).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
from threadpoolctl import threadpool_limits

from velocity.data import load_dataset, partition
from velocity.models import LocalConfig, build_model, plan_round
from velocity.seeds import child_rng


def _median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _setup(clients: int) -> tuple[object, list[np.ndarray]]:
    data = load_dataset("digits_images", seed=0, num_clients=clients)
    parts = partition("iid", data.y_train, clients, child_rng(0, "partition"), None)
    return data, parts


def _plan(parts: list[np.ndarray], batch_size: int):  # type: ignore[no-untyped-def]
    ids = np.arange(len(parts))
    return plan_round(parts, ids, epochs=1, batch_size=batch_size, seed=0, round_index=1)


def bench_vmap(n: int, device: str, batch_size: int, repeat: int) -> tuple[float, float]:
    """Seconds of one torch_cnn round of ``n`` clients: vmap, then the per-client loop."""
    data, parts = _setup(n)
    plan, cfg = _plan(parts, batch_size), LocalConfig(lr=0.05, momentum=0.9)
    model = build_model(
        "torch_cnn", data.num_features, data.num_classes, input_shape=data.input_shape,
        device=device,
    )  # fmt: skip
    params = model.init(child_rng(0, "init"))
    train = (data.X_train, data.y_train, plan, cfg)
    fast = _median_seconds(partial(model.train_vmap, params, *train), repeat)
    slow = _median_seconds(partial(model.train_loop, params, *train), repeat)
    return fast, slow


def bench_backends(n: int, device: str, batch_size: int, repeat: int) -> dict[str, float]:
    """Seconds of one round of the NumPy mlp and torch_mlp (hidden=64) on the same plan."""
    data, parts = _setup(n)
    plan, cfg = _plan(parts, batch_size), LocalConfig(lr=0.05, momentum=0.9)
    times = {}
    for spec in ("mlp:hidden=64", "torch_mlp:hidden=64"):
        model = build_model(
            spec, data.num_features, data.num_classes, input_shape=data.input_shape,
            device=device if spec.startswith("torch") else "cpu",
        )  # fmt: skip
        params = model.init(child_rng(0, "init"))
        one_round = partial(model.train_round, params, data.X_train, data.y_train, plan, cfg)
        times[spec] = _median_seconds(one_round, repeat)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import torch

    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"numpy {np.__version__}, device {args.device}, one intra-op thread, "
        f"batch {args.batch_size}, 1 local epoch"
    )
    print("| clients | vmap (s) | per-client loop (s) | vmap clients/s | loop clients/s | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.clients:
        fast, slow = bench_vmap(n, args.device, args.batch_size, args.repeat)
        print(
            f"| {n} | {fast:.3f} | {slow:.3f} | {n / fast:.0f} | {n / slow:.0f} "
            f"| {slow / fast:.1f}x |"
        )
    print()
    print("| clients | model | one round (s) | x numpy mlp |")
    print("|---:|---|---:|---:|")
    with threadpool_limits(limits=1):
        for n in args.clients:
            times = bench_backends(n, args.device, args.batch_size, args.repeat)
            for spec, seconds in times.items():
                ratio = seconds / times["mlp:hidden=64"]
                print(f"| {n} | {spec} | {seconds:.3f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
