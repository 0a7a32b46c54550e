"""Aggregators: pure functions ``(updates (n, d) float32, weights (n,)) -> (d,) float32``.

They never modify their inputs. Each is registered in ``AGGREGATORS`` with its parameters, paper
and per-round cost; ``velocity strategies`` lists them.
"""

from __future__ import annotations

import numpy as np

from velocity.registry import Registry

__all__ = ["AGGREGATORS", "mean"]

AGGREGATORS: Registry = Registry("aggregator")


@AGGREGATORS.register(
    "mean",
    summary="Sample-weighted mean (FedAvg), accumulated in float64.",
    paper="McMahan et al., AISTATS 2017",
    cost="O(n d)",
    aliases=("fedavg_mean", "avg"),
)
def mean(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sample-weighted mean of the rows of ``updates``."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    # w @ updates promotes to float64 row by row inside BLAS-free dot: accurate and one pass.
    return (w @ updates.astype(np.float64, copy=False)).astype(np.float32)
