"""Attacks: Byzantine model poisoning (on the update matrix) and data poisoning (on local data).

Every attack is a pure function in the ``ATTACKS`` registry; a :class:`ThreatModel` holds a run's
bound attacks and its malicious clients for the round loop (``velocity.simulation`` builds it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from velocity.attacks import data_poisoning, model_poisoning  # noqa: F401  (registers entries)
from velocity.attacks.base import (
    ATTACKS,
    DataAttack,
    ModelAttack,
    data_attack,
    describe_attacks,
    model_attack,
)
from velocity.attacks.threat import (
    BoundAttack,
    ThreatModel,
    bind_attacks,
    draw_malicious_clients,
)

__all__ = [
    "ATTACKS",
    "BoundAttack",
    "DataAttack",
    "ModelAttack",
    "ThreatModel",
    "bind_attacks",
    "canonical_attack",
    "data_attack",
    "describe_attacks",
    "draw_malicious_clients",
    "model_attack",
]


def canonical_attack(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """Defaults-filled table form of an attack spec (``"sign_flip:scale=10"``)."""
    return ATTACKS.canonical(spec)
