"""Where and how torch computes for a run: the device (``cpu``, ``cuda``, ``auto``) and the
settings that make its arithmetic deterministic (one intra-op thread, deterministic kernels).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from velocity.errors import InputError

__all__ = ["DEVICES", "deterministic", "resolve_device"]

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(device: str) -> torch.device:
    """``cpu``; ``cuda`` (InputError when torch sees no CUDA GPU); ``auto``: cuda when there
    is one, else cpu."""
    if device not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError(
            "device 'cuda': PyTorch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}); use device = 'cpu' or 'auto'"
        )
    # cuBLAS is only deterministic with a fixed workspace; it must be set before its first use.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return torch.device("cuda")


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Run the block with one intra-op CPU thread (like BLAS in every run) and deterministic
    algorithms (cuDNN without autotuning on CUDA); the previous settings come back after."""
    threads = torch.get_num_threads()
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.set_num_threads(1)
    # On CUDA an op without a deterministic kernel warns instead of failing the run.
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
