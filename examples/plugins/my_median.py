"""A plug-in aggregator: the coordinate-wise median, shifted by eps.

Loaded by velocity when a spec names this file in ``plugins``; it registers with the same public
decorator velocity's own aggregators use. See docs/plugins.md.
"""

import numpy as np

from velocity import Param
from velocity.strategies import aggregator


@aggregator(
    "my_median",
    params=(Param("eps", float, 0.0, "shift added to every coordinate", low=0),),
    summary="Coordinate-wise median plus eps",
    paper="mine",
    cost="O(n d log n)",
)
def my_median(updates: np.ndarray, weights: np.ndarray, *, eps: float) -> np.ndarray:
    return (np.median(updates, axis=0) + eps).astype(np.float32)
