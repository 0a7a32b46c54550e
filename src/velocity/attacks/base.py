"""The attack registry and the two attack interfaces every entry follows.

Model-poisoning attacks rewrite the malicious rows of a round's update matrix; data-poisoning
attacks rewrite the malicious clients' local samples before training. Both are pure functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from velocity.registry import Entry, Param, Registry

__all__ = [
    "ATTACKS",
    "DataAttack",
    "ModelAttack",
    "data_attack",
    "describe_attacks",
    "model_attack",
]

ModelAttack = Callable[..., tuple[np.ndarray, dict[str, Any]]]
"""``(updates (n, d) float32, weights (n,), malicious (n,) bool, rng, **params)
-> (malicious updates (k, d) float32 with k >= malicious.sum(), info)``.

``updates`` are the round's genuine updates (every sampled client trained honestly, malicious
ones included); the first ``malicious.sum()`` returned rows replace the malicious rows in order,
any further rows are appended as fabricated (sybil) clients. ``info`` holds scalars worth
recording (e.g. Fang's lambda); its keys are declared in the entry's ``records``.
"""

DataAttack = Callable[..., tuple[np.ndarray, np.ndarray]]
"""``(X (k, f) float32, y (k,) int64, rng, *, shared_rng, num_classes, **params) -> (X', y')``:
one malicious client's k samples, poisoned (called once per malicious client). ``rng`` is that
client's own stream (which samples it poisons); ``shared_rng`` is the same stream for every
client, for choices the attackers share (label_flip's derangement). Returns new arrays of the
same shapes and dtypes."""

ATTACKS: Registry[Callable[..., Any]] = Registry("attack")


def model_attack(
    name: str,
    *,
    omniscient: bool,
    paper: str,
    summary: str,
    params: tuple[Param, ...] = (),
    records: tuple[str, ...] = (),
    client_records: tuple[str, ...] = (),
    cost: str = "O(n d)",
    aliases: tuple[str, ...] = (),
) -> Callable[[ModelAttack], ModelAttack]:
    """Register a model-poisoning attack.

    ``omniscient`` says whether it reads the honest clients' rows (a non-omniscient attack may
    read only the malicious rows and the round's weights; the contract tests check this).
    ``client_records`` are ``records`` holding a row index that the round log maps to a client id.
    """
    return ATTACKS.register(
        name,
        params=params,
        summary=summary,
        paper=paper,
        cost=cost,
        aliases=aliases,
        kind="model",
        omniscient=omniscient,
        records=records,
        client_records=client_records,
    )


def data_attack(
    name: str,
    *,
    paper: str,
    summary: str,
    params: tuple[Param, ...] = (),
    evaluate: Callable[..., dict[str, float]] | None = None,
    metrics: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
) -> Callable[[DataAttack], DataAttack]:
    """Register a data-poisoning attack; ``evaluate(predict, X_test, y_test, **params)`` returns
    the attack's own test metrics (keys declared in ``metrics``)."""
    return ATTACKS.register(
        name,
        params=params,
        summary=summary,
        paper=paper,
        cost="O(k f)",
        aliases=aliases,
        kind="data",
        omniscient=False,
        evaluate=evaluate,
        metrics=metrics,
    )


def _param_text(entry: Entry[Any]) -> dict[str, Any]:
    return {p.name: p.default for p in entry.params}


def describe_attacks() -> list[dict[str, Any]]:
    """One row per registered attack: name, kind, omniscient, parameters, records, paper."""
    rows = []
    for entry in ATTACKS:
        rows.append(
            {
                "name": entry.name,
                "kind": entry.extra["kind"],
                "omniscient": bool(entry.extra["omniscient"]),
                "parameters": _param_text(entry),
                "parameter_docs": {p.name: f"{p.doc} ({p.allowed()})" for p in entry.params},
                "records": list(entry.extra.get("records", ()))
                + list(entry.extra.get("metrics", ())),
                "summary": entry.summary,
                "paper": entry.paper,
            }
        )
    return rows
