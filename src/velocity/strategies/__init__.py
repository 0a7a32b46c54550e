"""Aggregation strategies: pre-aggregators > aggregator > server optimizer, composed from specs.

Public entry point: ``aggregate(spec, updates, weights=None)``; the round loop uses
``build_strategy(spec, seed)``.
"""

from velocity.strategies.aggregators import AGGREGATORS
from velocity.strategies.compose import (
    PRESETS,
    Preset,
    Strategy,
    aggregate,
    build_strategy,
    canonical_strategy,
)
from velocity.strategies.pre_aggregators import PRE_AGGREGATORS
from velocity.strategies.server import SERVER_OPTIMIZERS

__all__ = [
    "AGGREGATORS",
    "PRESETS",
    "PRE_AGGREGATORS",
    "SERVER_OPTIMIZERS",
    "Preset",
    "Strategy",
    "aggregate",
    "build_strategy",
    "canonical_strategy",
]
