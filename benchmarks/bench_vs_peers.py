"""velocity against a plain sequential NumPy loop and Flower's simulation, same task, same data.

The task (issue 17): multinomial logistic regression from zeros, SGD lr 0.1, batch 16, one
local epoch, IID clients, every client in every round, FedAvg weighted by sample counts; the
data is velocity's own split and partition of digits scaled by 1/16 (``digits:scale=unit``, the
peers' preprocessing), or Synthetic(1, 1) with its natural clients, standardized, for the
10,000-client row (digits has 1,437 training samples). Every contender runs in a fresh process,
process start to exit, the contenders alternating, and reports its final test accuracy; a row
whose accuracies differ by more than 0.01 from velocity's is marked INVALID (a speed ratio at
unequal accuracy is no result). Two velocity runs must give the same final-parameter hash.

Run: ``python benchmarks/bench_vs_peers.py [--sizes 10x20,100x20,1000x5,10000x5]
[--repeats 3] [--peers plain,flower] [--time-limit 120]``; Flower needs the ``bench`` extra
(``pip install 'velocity-fl[bench]'``) and is skipped, saying so, when missing or past the
time limit. Peak RSS is the contender's main process (``getrusage``; Ray's actors are not in it).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

LR, BATCH = 0.1, 16
_RUSAGE = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)


def _dataset(clients: int) -> tuple[str, str]:
    return ("digits:scale=unit", "iid") if clients <= 1000 else ("synthetic", "natural")


def _task(clients: int) -> tuple[Any, list[np.ndarray]]:
    """The split data and the clients' index arrays, as velocity prepares them (seed 0)."""
    from velocity.data import load_dataset, partition
    from velocity.seeds import child_rng

    dataset, part = _dataset(clients)
    data = load_dataset(dataset, seed=0, num_clients=clients)
    parts = partition(part, data.y_train, clients, child_rng(0, "partition"), data.groups_train)
    return data, parts


def _local_sgd(W: np.ndarray, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One epoch of mini-batch SGD on softmax regression; ``W`` is ``(features + 1, classes)``
    (the last row is the bias)."""
    W = W.copy()
    order = rng.permutation(len(y))
    for start in range(0, len(y), BATCH):
        batch = order[start : start + BATCH]
        xb, yb = X[batch], y[batch]
        logits = xb @ W[:-1] + W[-1]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(yb)), yb] -= 1
        p /= len(yb)
        W[:-1] -= np.float32(LR) * (xb.T @ p)
        W[-1] -= np.float32(LR) * p.sum(axis=0)
    return W


def _accuracy(W: np.ndarray, data: Any) -> float:
    return float(np.mean((data.X_test @ W[:-1] + W[-1]).argmax(axis=1) == data.y_test))


def worker_velocity(clients: int, rounds: int) -> dict[str, Any]:
    from velocity.simulation import run_simulation
    from velocity.spec import RunSpec

    dataset, part = _dataset(clients)
    spec = RunSpec(
        name="peer",
        dataset=dataset,
        partition=part,
        num_clients=clients,
        rounds=rounds,
        local_epochs=1,
        batch_size=BATCH,
        lr=LR,
        model="logreg",
        strategy="fedavg",
        seed=0,
    )
    result = run_simulation(spec)
    assert result.final_params is not None
    round_seconds = sum(r["round_seconds"] for r in result.rounds)
    return {
        "accuracy": result.final_metrics()["test_accuracy"],
        "hash": hashlib.sha256(result.final_params.tobytes()).hexdigest()[:16],
        "ms_per_client_update": 1e3 * round_seconds / (clients * rounds),
    }


def worker_plain(clients: int, rounds: int) -> dict[str, Any]:
    data, parts = _task(clients)
    X, y = data.X_train, data.y_train
    W = np.zeros((data.num_features + 1, data.num_classes), dtype=np.float32)
    rng = np.random.default_rng(0)
    for _ in range(rounds):
        total = np.zeros_like(W, dtype=np.float64)
        for idx in parts:  # one client after another
            total += len(idx) * _local_sgd(W, X[idx], y[idx], rng)
        W = (total / len(y)).astype(np.float32)
    return {"accuracy": _accuracy(W, data)}


def worker_flower(clients: int, rounds: int) -> dict[str, Any]:
    import logging

    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    logging.disable(logging.WARNING)
    data, parts = _task(clients)
    X, y = data.X_train, data.y_train
    shape = (data.num_features + 1, data.num_classes)
    final: dict[str, float] = {}

    class Client(NumPyClient):  # type: ignore[misc]
        def __init__(self, k: int) -> None:
            self.k = k

        def fit(self, parameters: list, config: dict) -> tuple[list, int, dict]:
            idx = parts[self.k]
            rng = np.random.default_rng(self.k)
            return [_local_sgd(parameters[0], X[idx], y[idx], rng)], len(idx), {}

    def client_fn(context: Context) -> Any:
        return Client(int(context.node_config["partition-id"])).to_client()

    def evaluate(server_round: int, parameters: list, config: dict) -> tuple[float, dict]:
        final["accuracy"] = _accuracy(parameters[0], data)
        return 0.0, {"accuracy": final["accuracy"]}

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=clients,
            min_available_clients=clients,
            initial_parameters=ndarrays_to_parameters([np.zeros(shape, dtype=np.float32)]),
            evaluate_fn=evaluate,
        )
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    return {"accuracy": final.get("accuracy", float("nan"))}


WORKERS = {"velocity": worker_velocity, "plain": worker_plain, "flower": worker_flower}


def _python_for(peer: str) -> str:
    # A peer may live in its own environment (its pins need not match velocity's dev tools).
    if peer == "flower":
        return os.environ.get("BENCH_PEER_PYTHON", sys.executable)
    return sys.executable


def _measure(peer: str, clients: int, rounds: int, limit: float) -> dict[str, Any]:
    """One contender in a fresh process: wall seconds, peak RSS (MB) and what it reported."""
    command = [_python_for(peer), __file__, "--worker", peer, f"{clients}x{rounds}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"over the {limit:g} s limit"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}"}
    report = json.loads(out.strip().splitlines()[-1])
    return {"wall": wall, **report}


def _available(peer: str) -> bool:
    if peer != "flower":
        return True
    probe = [_python_for(peer), "-c", "import flwr.simulation, ray"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def _range(values: list[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}-{fmt.format(hi)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("PEER", "SIZE"))
    parser.add_argument("--sizes", default="10x20,100x20,1000x5,10000x5")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peers", default="plain,flower")
    parser.add_argument("--time-limit", type=float, default=120.0)
    args = parser.parse_args()
    if args.worker:
        peer, size = args.worker
        clients, rounds = (int(v) for v in size.split("x"))
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):  # every contender on one BLAS thread, as velocity runs
            report = WORKERS[peer](clients, rounds)
        # The worker's own peak and its waited-for children's (Ray's actors are not counted).
        peak = max(resource.getrusage(who).ru_maxrss for who in _RUSAGE)
        print(json.dumps({**report, "rss_mb": peak / 1024}))
        return
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, python "
        f"{platform.python_version()}, load average at start {os.getloadavg()[0]:.2f}"
    )
    peers = [p for p in args.peers.split(",") if p]
    for peer in peers:
        if not _available(peer):
            print(f"{peer}: not installed (pip install 'velocity-fl[bench]'): skipped")
    peers = [p for p in peers if _available(p)]
    print(
        "| clients x rounds | contender | wall s | peak RSS MB | accuracy | velocity accuracy "
        "| velocity faster by | valid |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        clients, rounds = (int(v) for v in size.split("x"))
        runs: dict[str, list[dict[str, Any]]] = {p: [] for p in ["velocity", *peers]}
        skipped: set[str] = set()
        for _ in range(args.repeats):
            for peer in runs:  # alternating: one of each per repetition
                if peer in skipped:
                    continue
                result = _measure(peer, clients, rounds, args.time_limit)
                if "error" in result:
                    skipped.add(peer)
                    print(f"{peer} at {size}: {result['error']}: skipped")
                    continue
                runs[peer].append(result)
        mine = runs["velocity"]
        if not mine:
            continue
        hashes = {r["hash"] for r in mine}
        acc = mine[0]["accuracy"]
        walls = [r["wall"] for r in mine]
        per_update = _range([r["ms_per_client_update"] for r in mine], "{:.4f}")
        same = "same hash" if len(hashes) == 1 else "HASHES DIFFER"
        rss = _range([r["rss_mb"] for r in mine], "{:.0f}")
        print(
            f"| {size} | velocity | {_range(walls)} | {rss}"
            f" | {acc:.3f} | - | {per_update} ms/client update | {same} |"
        )
        for peer in peers:
            theirs = runs[peer]
            if not theirs:
                continue
            ratios = [t["wall"] / v for t, v in zip(theirs, walls, strict=False)]
            accuracy = theirs[0]["accuracy"]
            valid = "yes" if abs(accuracy - acc) <= 0.01 else "INVALID (accuracy differs)"
            print(
                f"| {size} | {peer} | {_range([t['wall'] for t in theirs])} | "
                f"{_range([t['rss_mb'] for t in theirs], '{:.0f}')} | {accuracy:.3f} | {acc:.3f} | "
                f"{_range(ratios, '{:.1f}x')} | {valid} |"
            )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    if importlib.util.find_spec("velocity") is None:
        sys.exit("velocity is not installed: pip install -e .")
    main()
