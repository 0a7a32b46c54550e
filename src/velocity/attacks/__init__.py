"""Attacks: Byzantine model poisoning (on the update matrix) and data poisoning (on local data)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from velocity.registry import Registry

__all__ = ["ATTACKS", "canonical_attack"]

ATTACKS: Registry = Registry("attack")


def canonical_attack(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """Defaults-filled table form of an attack spec (``"sign_flip:scale=10"``)."""
    return ATTACKS.canonical(spec)
