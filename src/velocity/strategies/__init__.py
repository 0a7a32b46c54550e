"""Aggregation strategies: pre-aggregators > aggregator > server optimizer, composed from specs.

Public entry points: ``aggregate(spec, updates, weights=None)``; the decorators ``aggregator``,
``pre_aggregator`` and ``server_optimizer`` that register a stage (the built-ins use them too);
the round loop uses ``build_strategy(spec, seed)``.
"""

from velocity.strategies.aggregators import AGGREGATORS, aggregator
from velocity.strategies.compose import (
    PRESETS,
    Preset,
    Strategy,
    aggregate,
    build_strategy,
    canonical_strategy,
)
from velocity.strategies.pre_aggregators import PRE_AGGREGATORS, pre_aggregator
from velocity.strategies.server import SERVER_OPTIMIZERS, server_optimizer

__all__ = [
    "AGGREGATORS",
    "PRESETS",
    "PRE_AGGREGATORS",
    "SERVER_OPTIMIZERS",
    "Preset",
    "Strategy",
    "aggregate",
    "aggregator",
    "build_strategy",
    "canonical_strategy",
    "pre_aggregator",
    "server_optimizer",
]
