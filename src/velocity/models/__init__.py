"""Models and local training backends (NumPy built in; parameters are flat float32 vectors)."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

from velocity.errors import InputError
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
    "model_plugin_refs",
    "plan_round",
    "softmax_cross_entropy",
    "train_clients",
    "train_clients_naive",
]

ModelFactory = Callable[..., Model]
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


def _torch_builder(name: str, model_name: str) -> Callable[..., Model]:
    """``velocity.models.torch_backend.builders.<name>``, imported when a torch model is built
    (InputError with the install hint without torch); the registry never imports torch."""

    def build(*args: Any, **kwargs: Any) -> Model:
        from velocity.models.torch_backend import require_torch

        require_torch(f"model {model_name!r}")
        builders = importlib.import_module("velocity.models.torch_backend.builders")
        return getattr(builders, name)(*args, **kwargs)

    return build


_TORCH = {"backend": "torch"}

for _name, _builder, _params, _summary in (
    (
        "torch_mlp",
        "build_mlp",
        (
            Param(
                "hidden",
                str,
                "64",
                "hidden layer widths, e.g. 64 or 128-64",
                convert=_hidden_widths,
                allowed_text="positive layer widths like 64 or 128-64",
            ),
        ),
        "PyTorch MLP (ReLU); same initial weights as the NumPy mlp for the same seed",
    ),
    (
        "torch_cnn",
        "build_cnn",
        (
            Param("channels", int, 16, "channels of the first conv layer (the second: 2x)", low=1),
            Param("hidden", int, 64, "width of the hidden dense layer", low=1),
        ),
        "PyTorch CNN: 2 conv (3x3, ReLU, max-pool) + 2 dense layers, 1 or 3 channels, any size",
    ),
    (
        "torch_resnet",
        "build_resnet",
        (
            Param("width", int, 16, "channels of the first stage (then 2x, 4x)", low=1),
            Param("blocks", int, 1, "basic blocks per stage (3 stages)", low=1),
        ),
        "PyTorch small ResNet with GroupNorm (3 stages, global pooling)",
    ),
    (
        "torch_module",
        "build_user_module",
        (
            Param("path", str, "", "a .py file next to the spec defining the factory"),
            Param("module", str, "", "or an importable module defining it (pkg.models)"),
            Param("factory", str, "make_model", "factory(input_shape, num_classes) -> nn.Module"),
            Param(
                "buffers",
                str,
                "average",
                "BatchNorm-style buffers: averaged with the parameters, or kept per client",
                choices=("average", "local"),
            ),
        ),
        "Your own torch.nn.Module from factory(input_shape, num_classes) (hashed like plug-ins)",
    ),
):
    _build = _torch_builder(_builder, _name)
    _build.__doc__ = _summary
    extra = {**_TORCH, "plugin_params": ("path", "module")} if _name == "torch_module" else _TORCH
    MODELS.register(_name, params=_params, summary=_summary, **extra)(_build)


def model_plugin_refs(model: Any, plugins: Any) -> list[str]:
    """The plug-in references a model spec needs beyond ``plugins`` (``torch_module``'s file or
    module): the spec loads them as plug-ins, so their source is hashed and archived."""
    try:
        entry, params = MODELS.resolve(model if model is not None else "mlp")
    except Exception:  # an invalid model is reported by the model field's own validation
        return []
    refs = plugins if isinstance(plugins, Sequence) and not isinstance(plugins, str) else []
    if isinstance(plugins, str):
        refs = [plugins]
    known = set()
    for ref in refs:
        if isinstance(ref, Mapping):
            known.add(str(ref.get("name")))
        elif isinstance(ref, str):
            known.update({ref, PurePath(ref).name})
    wanted = []
    for key in entry.extra.get("plugin_params", ()):
        value = params.get(key)
        if value and value not in known and PurePath(value).name not in known:
            wanted.append(value)
    return wanted


def build_model(
    spec: str | Mapping[str, Any],
    num_features: int,
    num_classes: int,
    *,
    input_shape: Sequence[int] | None = None,
    device: str = "cpu",
) -> Model:
    """Resolve a model spec (``"logreg"``, ``"mlp:hidden=64"``, ``"torch_cnn"``) for the data
    shape: ``input_shape`` (a sample's shape, e.g. ``(1, 8, 8)``; default ``(num_features,)``)
    and ``device`` matter to torch models only."""
    entry, params = MODELS.resolve(spec)
    if entry.extra.get("backend") == "torch":
        shape = tuple(input_shape) if input_shape is not None else (num_features,)
        if math.prod(shape) != num_features:
            raise ValueError(f"input_shape {shape} does not hold {num_features} features")
        return entry.obj(shape, num_classes, device=device, **params)
    if device == "cuda":
        raise InputError(
            f"device 'cuda' needs a torch model (torch_mlp, torch_cnn, ...); model "
            f"'{entry.name}' is NumPy and runs on the CPU"
        )
    return entry.obj(num_features, num_classes, **params)
