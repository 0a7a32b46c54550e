"""What ``velocity strategies`` lists: every privacy stage, pre-aggregator, aggregator and server
optimizer with its parameters, defaults, paper and per-round cost, plus the named presets.
"""

from __future__ import annotations

from typing import Any

from velocity.privacy import PRIVACY_STAGES
from velocity.registry import REQUIRED, Param, Registry
from velocity.strategies.aggregators import AGGREGATORS
from velocity.strategies.compose import PRESETS, canonical_strategy
from velocity.strategies.pre_aggregators import PRE_AGGREGATORS
from velocity.strategies.server import SERVER_OPTIMIZERS

__all__ = ["describe_strategies"]

_FAMILIES: tuple[tuple[str, Registry], ...] = (
    ("privacy", PRIVACY_STAGES),
    ("pre-aggregator", PRE_AGGREGATORS),
    ("aggregator", AGGREGATORS),
    ("server optimizer", SERVER_OPTIMIZERS),
)


def _param(p: Param) -> dict[str, Any]:
    return {
        "name": p.name,
        "type": p.type.__name__,
        "default": None if p.default is REQUIRED else p.default,
        "required": p.default is REQUIRED,
        "allowed": p.allowed(),
        "doc": p.doc,
    }


def describe_strategies() -> dict[str, list[dict[str, Any]]]:
    """``{"entries": [...], "presets": [...]}``, JSON-able, in a stable order."""
    entries = []
    for family, registry in _FAMILIES:
        for entry in registry:
            entries.append(
                {
                    "family": family,
                    "name": entry.name,
                    "summary": entry.summary,
                    "params": [_param(p) for p in entry.params],
                    "paper": entry.paper,
                    "cost": entry.cost,
                    "seeded": bool(entry.extra.get("seeded")),
                    "stateful": bool(entry.extra.get("stateful")),
                }
            )
    presets = []
    for name, preset in PRESETS.items():
        table, mu = canonical_strategy(name)
        presets.append(
            {
                "name": name,
                "summary": preset.summary,
                "paper": preset.paper,
                "strategy": table,
                "client_mu": mu,
            }
        )
    return {"entries": entries, "presets": presets}
