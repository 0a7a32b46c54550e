"""The torch entries of the model registry, built here so the registry itself never imports
torch: each takes the data's ``input_shape`` (``(C, H, W)`` for images, ``(features,)`` for
tables), its class count and the run's device."""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from velocity.errors import InputError
from velocity.models.mlp import MLP
from velocity.models.torch_backend.model import TorchModel
from velocity.models.torch_backend.nets import SmallCNN, SmallResNet, TorchMLP
from velocity.models.torch_backend.user import load_factory, module_factory

__all__ = ["build_cnn", "build_mlp", "build_resnet", "build_user_module", "mlp_init_as_numpy"]


def _image_shape(input_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise InputError(
            f"model '{model}' needs image data (channels, height, width), but the dataset's "
            f"samples have shape {tuple(input_shape)}; use an image dataset such as digits_images"
        )
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


def mlp_init_as_numpy(
    in_features: int, num_classes: int, hidden: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """The NumPy MLP's initial draws (``MLP.init``) in torch's layout (weights ``(out, in)``):
    both backends start from the same function for the same seed."""
    numpy_mlp = MLP(in_features, num_classes, hidden)
    flat, parts, offset = numpy_mlp.init(rng), [], 0
    for fan_in, fan_out in numpy_mlp.layer_sizes:
        W = flat[offset : offset + fan_in * fan_out].reshape(fan_in, fan_out)
        offset += fan_in * fan_out
        parts += [W.T.reshape(-1), flat[offset : offset + fan_out]]
        offset += fan_out
    return np.concatenate(parts).astype(np.float32)


def build_mlp(
    input_shape: tuple[int, ...], num_classes: int, *, hidden: str, device: str
) -> TorchModel:
    widths = tuple(int(w) for w in hidden.split("-"))
    features = math.prod(input_shape)
    return TorchModel(
        partial(TorchMLP, features, num_classes, widths),
        input_shape,
        num_classes,
        device=device,
        init_params=partial(mlp_init_as_numpy, features, num_classes, widths),
    )


def build_cnn(
    input_shape: tuple[int, ...], num_classes: int, *, channels: int, hidden: int, device: str
) -> TorchModel:
    shape = _image_shape(input_shape, "torch_cnn")
    make = partial(SmallCNN, shape, num_classes, channels, hidden)
    return TorchModel(make, shape, num_classes, device=device)


def build_resnet(
    input_shape: tuple[int, ...], num_classes: int, *, width: int, blocks: int, device: str
) -> TorchModel:
    shape = _image_shape(input_shape, "torch_resnet")
    make = partial(SmallResNet, shape, num_classes, width, blocks)
    return TorchModel(make, shape, num_classes, device=device)


def build_user_module(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    path: str,
    module: str,
    factory: str,
    buffers: str,
    device: str,
) -> TorchModel:
    made = load_factory(path, module, factory)
    make = module_factory(made, input_shape, num_classes, factory)
    return TorchModel(make, input_shape, num_classes, device=device, buffers=buffers)
