"""Models and local training backends (NumPy built in; parameters are flat float32 vectors)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from velocity.models.backend import Model
from velocity.models.mlp import INITS, MLP, softmax_cross_entropy
from velocity.models.schedule import RoundPlan, plan_round
from velocity.models.training import (
    TRAIN_MEMORY_BUDGET,
    LocalConfig,
    LocalResult,
    chunk_size_for,
    train_clients,
    train_clients_naive,
)
from velocity.registry import Param, Registry

__all__ = [
    "INITS",
    "MLP",
    "MODELS",
    "TRAIN_MEMORY_BUDGET",
    "LocalConfig",
    "LocalResult",
    "Model",
    "RoundPlan",
    "build_model",
    "chunk_size_for",
    "plan_round",
    "softmax_cross_entropy",
    "train_clients",
    "train_clients_naive",
]

ModelFactory = Callable[..., MLP]
MODELS: Registry[ModelFactory] = Registry("model")


def _hidden_widths(value: Any) -> str:
    """Normalize ``64``, ``"64"``, ``"128-64"`` or ``[128, 64]`` to the string ``"128-64"``."""
    if isinstance(value, bool):
        raise ValueError("expected layer widths")
    parts = value if isinstance(value, list | tuple) else str(value).split("-")
    if any(isinstance(p, bool) or (isinstance(p, float) and not p.is_integer()) for p in parts):
        raise ValueError("widths must be positive integers")
    widths = [int(p) for p in parts]
    if not widths or any(w < 1 for w in widths):
        raise ValueError("widths must be positive integers")
    return "-".join(str(w) for w in widths)


def _init_param(default: str, choices: tuple[str, ...]) -> Param:
    # omit_default: a spec written before the option keeps its canonical form (and identity).
    return Param(
        "init",
        str,
        default,
        "initial weights: " + ", ".join(choices) + f" (default {default}); biases start at 0",
        choices=choices,
        omit_default=True,
    )


@MODELS.register(
    "logreg",
    params=(_init_param("zeros", ("zeros", "glorot_uniform")),),
    summary="Multinomial logistic regression (softmax cross-entropy), from zeros by default",
    aliases=("logistic_regression",),
)
def _logreg(num_features: int, num_classes: int, *, init: str) -> MLP:
    return MLP(num_features, num_classes, (), init_scheme=init)


@MODELS.register(
    "mlp",
    params=(
        Param(
            "hidden",
            str,
            "64",
            "hidden layer widths, e.g. 64 or 128-64",
            convert=_hidden_widths,
            allowed_text="positive layer widths like 64 or 128-64",
        ),
        # Not zeros: ReLU units that start at 0 get no gradient and never leave it.
        _init_param("he_uniform", ("he_uniform", "glorot_uniform")),
    ),
    summary="Multi-layer perceptron with ReLU hidden layers and softmax output",
)
def _mlp(num_features: int, num_classes: int, *, hidden: str, init: str) -> MLP:
    widths = tuple(int(w) for w in hidden.split("-"))
    return MLP(num_features, num_classes, widths, init_scheme=init)


def build_model(spec: str | Mapping[str, Any], num_features: int, num_classes: int) -> MLP:
    """Resolve a model spec (``"logreg"``, ``"mlp:hidden=64"``) for the given data shape."""
    entry, params = MODELS.resolve(spec)
    return entry.obj(num_features, num_classes, **params)
