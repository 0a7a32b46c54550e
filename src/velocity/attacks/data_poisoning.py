"""Data-poisoning attacks: pure functions rewriting the malicious clients' local samples.

Each follows ``velocity.attacks.base.DataAttack``; an attack with its own test metric (the
backdoor's attack success rate) registers an ``evaluate`` function next to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from velocity.attacks.base import data_attack
from velocity.errors import SpecError
from velocity.registry import Param

__all__ = [
    "backdoor",
    "backdoor_success",
    "label_flip",
    "stamp_trigger",
    "targeted_label_flip",
    "targeted_label_flip_metrics",
    "trigger_features",
]

Predict = Callable[[np.ndarray], np.ndarray]


def _check_class(name: str, attack: str, value: int, num_classes: int) -> None:
    if value >= num_classes:
        raise SpecError(
            f"attack '{attack}': parameter '{name}' must be a class in 0..{num_classes - 1} "
            f"of this dataset, got {value}"
        )


def _derangement(num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly drawn permutation without fixed points (rejection: ~e draws expected)."""
    while True:
        perm = rng.permutation(num_classes)
        if not np.any(perm == np.arange(num_classes)):
            return perm


@data_attack(
    "label_flip",
    params=(
        Param(
            "mapping",
            str,
            "reverse",
            "y -> C-1-y, or a seeded derangement of the classes",
            choices=("reverse", "derangement"),
        ),
    ),
    summary="Relabel every malicious sample: y -> C-1-y or by a fixed random derangement",
    paper="Fang et al., USENIX Security 2020 (label flipping l -> C-1-l); Biggio et al., ICML 2012",
)
def label_flip(
    X: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    *,
    shared_rng: np.random.Generator,
    num_classes: int,
    mapping: str,
) -> tuple[np.ndarray, np.ndarray]:
    """All labels mapped through one class permutation, the same for every malicious client
    (the derangement is drawn from ``shared_rng``)."""
    if mapping == "reverse":
        table = np.arange(num_classes)[::-1]
    else:
        table = _derangement(num_classes, shared_rng)
    return X.copy(), table[y].astype(np.int64)


def _targeted_params() -> tuple[Param, ...]:
    return (
        Param("source", int, 5, "class whose samples are relabelled", low=0),
        Param("target", int, 3, "label they receive", low=0),
        Param(
            "ratio",
            float,
            1.0,
            "share of the source samples relabelled",
            low=0,
            high=1,
            low_open=True,
        ),
    )


def targeted_label_flip_metrics(
    predict: Predict, X: np.ndarray, y: np.ndarray, *, source: int, target: int, ratio: float
) -> dict[str, float]:
    """Tolpegin et al.'s measures on the test split: the source class's recall and the share
    of source samples classified as the target."""
    members = y == source
    if not members.any():
        return {"source_recall": float("nan"), "source_as_target": float("nan")}
    predicted = predict(X[members])
    return {
        "source_recall": float(np.mean(predicted == source)),
        "source_as_target": float(np.mean(predicted == target)),
    }


@data_attack(
    "targeted_label_flip",
    params=_targeted_params(),
    evaluate=targeted_label_flip_metrics,
    metrics=("source_recall", "source_as_target"),
    summary="Relabel a share (ratio) of the malicious clients' source-class samples as target",
    paper="Tolpegin et al., Data Poisoning Attacks Against FL Systems, ESORICS 2020",
)
def targeted_label_flip(
    X: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    *,
    shared_rng: np.random.Generator,
    num_classes: int,
    source: int,
    target: int,
    ratio: float,
) -> tuple[np.ndarray, np.ndarray]:
    """round(ratio x #source samples) of this client's source samples, drawn from rng, get
    label ``target``."""
    _check_class("source", "targeted_label_flip", source, num_classes)
    _check_class("target", "targeted_label_flip", target, num_classes)
    if source == target:
        raise SpecError("attack 'targeted_label_flip': source and target must differ")
    members = np.flatnonzero(y == source)
    count = int(np.floor(ratio * len(members) + 0.5))
    chosen = rng.choice(members, count, replace=False) if count else members[:0]
    labels = y.astype(np.int64, copy=True)
    labels[chosen] = target
    return X.copy(), labels


def _trigger_text(value: Any) -> str:
    """Normalize a trigger: 'tail', 'head', or feature indices '60+61+62' (sorted, unique)."""
    text = str(value).strip().lower()
    if text in ("tail", "head"):
        return text
    parts = [p for p in text.replace(" ", "").split("+") if p]
    indices = sorted({int(p) for p in parts})
    if not indices or indices[0] < 0:
        raise ValueError("feature indices must be integers >= 0")
    return "+".join(str(i) for i in indices)


def trigger_features(trigger: str, size: int, num_features: int) -> np.ndarray:
    """The feature indices the trigger stamps: the last/first ``size`` features, or a list."""
    if trigger == "tail":
        indices = np.arange(num_features - size, num_features)
    elif trigger == "head":
        indices = np.arange(size)
    else:
        indices = np.array([int(p) for p in trigger.split("+")], dtype=np.int64)
    if indices.min() < 0 or indices.max() >= num_features:
        raise SpecError(
            f"attack 'backdoor': trigger '{trigger}' (size {size}) needs features outside "
            f"0..{num_features - 1} of this dataset"
        )
    return indices


def stamp_trigger(X: np.ndarray, features: np.ndarray, value: float) -> np.ndarray:
    """A copy of ``X`` with the trigger features set to ``value``."""
    out = X.copy()
    out[:, features] = value
    return out


def _backdoor_params() -> tuple[Param, ...]:
    return (
        Param("target", int, 0, "label the trigger should produce", low=0),
        Param(
            "trigger",
            str,
            "tail",
            "stamped features: 'tail' or 'head' (size features) or indices like 60+61+62+63",
            convert=_trigger_text,
            allowed_text="'tail', 'head' or feature indices joined by '+'",
        ),
        Param("size", int, 4, "number of features a 'tail'/'head' trigger covers", low=1),
        Param("value", float, 3.0, "value written into the trigger features (standardized units)"),
        Param(
            "fraction",
            float,
            0.2,
            "share of each malicious client's samples poisoned",
            low=0,
            high=1,
            low_open=True,
        ),
    )


def backdoor_success(
    predict: Predict,
    X: np.ndarray,
    y: np.ndarray,
    *,
    target: int,
    trigger: str,
    size: int,
    value: float,
    fraction: float,
) -> dict[str, float]:
    """Attack success rate: the share of triggered non-target test samples predicted as target."""
    others = y != target
    if not others.any():
        return {"attack_success_rate": float("nan")}
    stamped = stamp_trigger(X[others], trigger_features(trigger, size, X.shape[1]), value)
    return {"attack_success_rate": float(np.mean(predict(stamped) == target))}


@data_attack(
    "backdoor",
    params=_backdoor_params(),
    evaluate=backdoor_success,
    metrics=("attack_success_rate",),
    summary="Stamp a fixed trigger into a share of the malicious samples and relabel them "
    "as target (records attack_success_rate)",
    paper="Bagdasaryan et al., How To Backdoor Federated Learning, AISTATS 2020; Gu et al., "
    "BadNets, 2017",
)
def backdoor(
    X: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    *,
    shared_rng: np.random.Generator,
    num_classes: int,
    target: int,
    trigger: str,
    size: int,
    value: float,
    fraction: float,
) -> tuple[np.ndarray, np.ndarray]:
    """round(fraction x k) of this client's k samples (at least one when k > 0), drawn from
    rng, get the trigger and label ``target``."""
    _check_class("target", "backdoor", target, num_classes)
    features = trigger_features(trigger, size, X.shape[1])
    # fraction > 0, so every malicious client with data poisons something.
    count = max(int(np.floor(fraction * len(y) + 0.5)), 1) if len(y) else 0
    chosen = rng.choice(len(y), count, replace=False)
    X_out = X.copy()
    X_out[np.ix_(chosen, features)] = value
    labels = y.astype(np.int64, copy=True)
    labels[chosen] = target
    return X_out, labels
