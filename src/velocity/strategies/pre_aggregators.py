"""Pre-aggregators: pure functions ``(updates (n, d), weights (n,)) -> (n, d)`` run before the
aggregator (nearest-neighbour mixing, clipping, bucketing). They never modify their inputs.
"""

from __future__ import annotations

from velocity.registry import Registry

__all__ = ["PRE_AGGREGATORS"]

PRE_AGGREGATORS: Registry = Registry("pre-aggregator")
