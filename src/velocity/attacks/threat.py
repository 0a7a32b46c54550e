"""The threat model of one run: which clients are malicious and what their attacks do.

``bind_attacks`` resolves attack specs; ``draw_malicious_clients`` draws the fixed malicious set
from the seed tree. The round loop calls ``poison_data`` once, ``poison_updates`` each round and
``evaluate`` on evaluated rounds. Everything here takes arrays and plain values, never a run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from velocity.attacks.base import ATTACKS
from velocity.errors import RunError
from velocity.registry import Entry
from velocity.seeds import child_rng

__all__ = ["BoundAttack", "ThreatModel", "bind_attacks", "draw_malicious_clients"]


def draw_malicious_clients(seed: int, num_clients: int, count: int) -> np.ndarray:
    """The sorted ids of the run's ``count`` malicious clients (fixed for the whole run)."""
    rng = child_rng(seed, "byzantine")
    return np.sort(rng.choice(num_clients, count, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class BoundAttack:
    """One attack of the run: its registry entry, validated parameters, position and label."""

    entry: Entry[Callable[..., Any]]
    params: dict[str, Any]
    position: int
    label: str

    @property
    def kind(self) -> str:
        return str(self.entry.extra["kind"])

    def columns(self) -> list[str]:
        """The round-record columns this attack fills (declared, so every round has them)."""
        return [f"{self.label}_{key}" for key in self.entry.extra.get("records", ())]


def _labels(names: Sequence[str]) -> list[str]:
    """Record prefixes: the attack name, numbered when the same attack appears twice."""
    return [
        name if names.count(name) == 1 else f"{name}{names[:i].count(name) + 1}"
        for i, name in enumerate(names)
    ]


@dataclass
class ThreatModel:
    """Malicious clients of a run and its bound attacks (model poisoning applied in order)."""

    seed: int
    malicious_clients: np.ndarray
    client_indices: list[np.ndarray]
    attacks: list[BoundAttack]
    num_classes: int
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray]

    @property
    def model_attacks(self) -> list[BoundAttack]:
        return [a for a in self.attacks if a.kind == "model"]

    @property
    def data_attacks(self) -> list[BoundAttack]:
        return [a for a in self.attacks if a.kind == "data"]

    def malicious_samples(self) -> np.ndarray:
        """Training-set indices owned by malicious clients (partitions are disjoint)."""
        parts = [self.client_indices[int(k)] for k in self.malicious_clients]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def poison_data(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the training arrays with the malicious clients' samples poisoned.

        Each malicious client poisons its own samples (a ``fraction`` is a share of each
        client's data) with its own seed-tree stream; the loop runs once per run, over the
        malicious clients only.
        """
        if not self.data_attacks:
            return X, y
        X_out, y_out = X.copy(), y.copy()
        for client in self.malicious_clients.tolist():
            rows = self.client_indices[client]
            X_part, y_part = X[rows], y[rows]
            for attack in self.data_attacks:
                X_part, y_part = attack.entry.obj(
                    X_part,
                    y_part,
                    child_rng(self.seed, "attack", "data", client, attack.position),
                    shared_rng=child_rng(self.seed, "attack", "data", "shared", attack.position),
                    num_classes=self.num_classes,
                    **attack.params,
                )
            X_out[rows] = X_part
            y_out[rows] = y_part
        return X_out, y_out

    def poison_updates(
        self, updates: np.ndarray, weights: np.ndarray, ids: np.ndarray, round_index: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Replace the malicious rows (and append sybils); returns updates, weights and the
        round's attack record (``malicious``, ``num_malicious``, then per-attack columns; test
        metrics of data attacks start empty so rounds without evaluation have them too)."""
        ids = np.asarray(ids)
        malicious = np.isin(ids, self.malicious_clients)
        m = int(malicious.sum())
        record: dict[str, Any] = {
            "num_malicious": m,
            # A JSON list, "[4]" or "[3, 7]": always a string, also once read back from CSV.
            "malicious": json.dumps([int(k) for k in ids[malicious]]),
        }
        for attack in self.data_attacks:  # filled by ``evaluate`` on evaluated rounds
            record.update(dict.fromkeys(attack.entry.extra.get("metrics", ())))
        row_ids = ids.astype(np.int64)
        for attack in self.model_attacks:
            record.update(dict.fromkeys(attack.columns()))
            if m == 0:
                continue
            rng = child_rng(self.seed, "attack", attack.position, round_index)
            out, info = attack.entry.obj(updates, weights, malicious, rng, **attack.params)
            updates, weights, malicious, row_ids = _merge(
                attack, updates, weights, malicious, row_ids, out
            )
            for key in attack.entry.extra.get("records", ()):
                value = info.get(key)
                if key in attack.entry.extra.get("client_records", ()) and value is not None:
                    value = int(row_ids[int(value)])
                record[f"{attack.label}_{key}"] = value
        return updates, weights, record

    def evaluate(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """The data attacks' own test metrics (e.g. ``attack_success_rate``); {} if none."""
        metrics: dict[str, float] = {}

        def predict(inputs: np.ndarray) -> np.ndarray:
            return self.predict(params, inputs)

        for attack in self.data_attacks:
            evaluate = attack.entry.extra.get("evaluate")
            if evaluate is not None:
                metrics.update(evaluate(predict, X, y, **attack.params))
        return metrics


def _merge(
    attack: BoundAttack,
    updates: np.ndarray,
    weights: np.ndarray,
    malicious: np.ndarray,
    row_ids: np.ndarray,
    out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Write an attack's rows into the round: replace the malicious rows, append the rest."""
    m, d = int(malicious.sum()), updates.shape[1]
    out = np.asarray(out)
    if out.ndim != 2 or out.shape[1] != d or out.shape[0] < m:
        raise RunError(
            f"attack '{attack.entry.name}' returned shape {out.shape}; expected ({m} or more, {d})"
        )
    poisoned = updates.copy()
    poisoned[malicious] = out[:m]
    extra = out.shape[0] - m
    if extra == 0:
        return poisoned, weights, malicious, row_ids
    first = int(np.flatnonzero(malicious)[0])
    return (
        np.concatenate([poisoned, out[m:].astype(np.float32)]),
        np.concatenate([weights, np.full(extra, weights[first], dtype=np.float64)]),
        np.concatenate([malicious, np.ones(extra, dtype=bool)]),
        np.concatenate([row_ids, np.full(extra, row_ids[first])]),
    )


def bind_attacks(tables: Sequence[Mapping[str, Any]]) -> list[BoundAttack]:
    """Resolve attack specs (canonical tables) in order, labelled for the round records."""
    resolved = [ATTACKS.resolve(table) for table in tables]
    labels = _labels([entry.name for entry, _ in resolved])
    return [
        BoundAttack(entry=entry, params=params, position=i, label=labels[i])
        for i, (entry, params) in enumerate(resolved)
    ]
