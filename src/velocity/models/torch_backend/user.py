"""A researcher's own network: ``factory(input_shape, num_classes) -> nn.Module`` from a file
or an importable module.

The file or module is a plug-in (``velocity.plugins``): the spec loads it, its sha256 enters
the run's identity, sweeps and archives carry its source and reproduce runs the archived copy.
This module only finds the loaded module again (a file plug-in runs as
``velocity_plugins.<stem>_<sha256[:12]>``) and calls its factory.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from torch import nn

from velocity.errors import InputError, SpecError

__all__ = ["load_factory", "module_factory"]


def _loaded_file(path: str) -> ModuleType:
    stem = re.sub(r"\W", "_", Path(path).name.removesuffix(".py"))
    pattern = re.compile(rf"velocity_plugins\.{re.escape(stem)}_[0-9a-f]{{12}}")
    found = [m for name, m in list(sys.modules.items()) if pattern.fullmatch(name)]
    if len(found) != 1:
        raise InputError(
            f"model 'torch_module': the file {path!r} is not loaded as a plug-in "
            "(a RunSpec naming it loads it; from Python, velocity.plugins.load_plugin first)"
        )
    return found[0]


def load_factory(path: str, module: str, factory: str) -> Callable[..., nn.Module]:
    """The callable ``factory`` of the loaded plug-in file ``path`` or module ``module``."""
    if bool(path) == bool(module):
        raise SpecError("model 'torch_module': give exactly one of path=FILE.py or module=pkg.mod")
    if path:
        source = _loaded_file(path)
    else:
        try:
            source = sys.modules.get(module) or importlib.import_module(module)
        except ImportError as exc:
            raise InputError(f"model 'torch_module': cannot import {module!r} ({exc})") from None
    made = getattr(source, factory, None)
    if not callable(made):
        raise InputError(f"model 'torch_module': {path or module} has no function {factory!r}")
    return made


def module_factory(
    factory: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int, name: str
) -> Callable[[], nn.Module]:
    """``make_module()`` calling the user's factory, checking it returns an ``nn.Module``."""

    def make() -> nn.Module:
        try:
            module = factory(tuple(input_shape), int(num_classes))
        except Exception as exc:
            raise InputError(
                f"model 'torch_module': {name}({tuple(input_shape)}, {num_classes}) raised "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(module, nn.Module):
            raise InputError(
                f"model 'torch_module': {name} must return a torch.nn.Module, "
                f"got {type(module).__name__}"
            )
        return module

    return make
