"""The PyTorch backend (the ``torch`` extra): CNNs, ResNets and user ``nn.Module``s behind the
same :class:`~velocity.models.backend.Model` interface as the NumPy models.

Importing this package does not import torch; :func:`require_torch` does, with the install hint
when it is missing. The torch-using modules are ``nets`` (built-in networks), ``model``
(``TorchModel``: flat float32 parameters in and out, vmap and per-client-loop trainers),
``runtime`` (device and determinism) and ``user`` (a researcher's module factory).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from velocity.errors import InputError

__all__ = ["INSTALL_HINT", "require_torch"]

INSTALL_HINT = "pip install 'velocity-fl[torch]'"


def require_torch(what: str) -> ModuleType:
    """The ``torch`` module, or InputError naming ``what`` needs it and how to install it."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise InputError(f"{what} needs PyTorch: {INSTALL_HINT}") from None
