"""Bounded input: how fast oversize inputs are refused, and how much memory a CSV costs.

Part 1 times whole ``velocity`` processes (start-up included) that are refused from an estimate
(median of ``--repeats``) next to ``velocity version``, the cost of starting velocity at all, and
the same refusals in this process once velocity is imported (the refusal's own cost).
Part 2 writes a CSV of ``--rows`` rows (4 numeric features and a string label) and loads it in
a fresh process with the streaming loader (``velocity.data.load_dataset``) and with the reader
it replaced (the standard ``csv`` module into Python lists, then numpy), reporting each one's
peak memory above the process's baseline as a multiple of the file size. Usage:
    python benchmarks/bench_inputs.py [--rows 2000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFUSALS = [
    ("model: mlp hidden=1e9", ["run", "--model", "mlp:hidden=1000000000", "--rounds", "1"]),
    (
        "num_clients: synthetic 1e11",
        [
            "run",
            "--dataset",
            "synthetic",
            "--partition",
            "natural",
            "--num-clients",
            "1" + "0" * 11,
        ],
    ),
    ("rounds: 1e9", ["run", "--rounds", "1000000000"]),
    ("seeds: 1e8", ["sweep", "--seeds", "100000000", "--out", "never"]),
]


def _time(args: list[str], env: dict[str, str], cwd: str) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "velocity", *args], env=env, cwd=cwd, capture_output=True, text=True
    )
    return time.perf_counter() - start, done.returncode, done.stderr.strip()


def _register_old_reader() -> None:
    """The CSV reader the streaming one replaced, verbatim: csv.reader into Python lists."""
    import csv
    from typing import Any

    import numpy as np

    from velocity.data import DATASETS, RawData
    from velocity.registry import Param

    @DATASETS.register("csv_old", params=(Param("path", str), Param("test_fraction", float, 0.2)))
    def _load(*, path: str, **_: Any) -> RawData:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        header, body = rows[0], rows[1:]
        col = header.index("label")
        y = np.array([r[col] for r in body])
        X = np.array([[float(v) for j, v in enumerate(r) if j != col] for r in body])
        _, codes = np.unique(y, return_inverse=True)
        return RawData(X=X, y=codes.astype(np.int64))


def _in_process(args: list[str], repeats: int) -> float:
    """Median seconds of ``velocity.cli.main(args)`` in this (warm) process, stderr discarded."""
    import contextlib
    import io

    from velocity.cli import main

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            main(list(args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _child(mode: str, path: str) -> None:
    """Load ``path`` into a run's dataset; print the peak memory above the baseline (bytes)."""
    from velocity.data import load_dataset

    if mode == "old":
        _register_old_reader()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    load_dataset(f"{'csv' if mode == 'new' else 'csv_old'}:path={path}", seed=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(peak - base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "VELOCITY_STORE": str(Path(scratch) / "store.db")}
        env.pop("VELOCITY_MAX_MEMORY", None)
        print("\n| input | exit | process s | in-process ms | message |")
        print("|---|---:|---:|---:|---|")
        os.environ["VELOCITY_STORE"] = env["VELOCITY_STORE"]
        cwd = os.getcwd()
        os.chdir(scratch)
        try:
            for label, command in [("(velocity version)", ["version"]), *REFUSALS]:
                times, code, message = [], 0, ""
                for _ in range(args.repeats):
                    seconds, code, message = _time(command, env, scratch)
                    times.append(seconds)
                warm = _in_process(command, args.repeats) * 1000
                shown = message.splitlines()[-1][:80] if message else ""
                print(
                    f"| {label} | {code} | {statistics.median(times):.2f} | {warm:.1f} | {shown} |"
                )
        finally:
            os.chdir(cwd)

        path = Path(scratch) / "big.csv"
        with path.open("w", encoding="utf-8") as handle:
            handle.write("f1,f2,f3,f4,label\n")
            for i in range(args.rows):
                handle.write(f"{i % 97 / 7:.5f},{i % 13},{(i * 7919) % 1000 / 3:.4f},")
                handle.write(f"{i % 5 - 2},class{i % 10}\n")
        size = path.stat().st_size
        print(f"\nCSV: {args.rows} rows, {size / 2**20:.1f} MiB")
        print(
            "| loader | peak memory above baseline | x file size | seconds |\n|---|---:|---:|---:|"
        )
        for mode, label in (("new", "streaming (numpy.loadtxt blocks)"), ("old", "csv module")):
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(path)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            seconds = time.perf_counter() - start
            peak = int(out.strip())
            print(f"| {label} | {peak / 2**20:.0f} MiB | {peak / size:.1f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
