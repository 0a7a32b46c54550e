"""Upload compression: a client-side stage applied to each update before it is sent, with the
exact size of its encoding (what ``bytes_up`` counts).

- ``topk`` (sparsification): each client sends its ``k = ceil(fraction * d)`` largest-magnitude
  coordinates: ``k`` indices of ``ceil(log2 d)`` bits and ``k`` float32 values.
- ``qsgd`` (Alistarh et al., NeurIPS 2017): ``q_i = ||v|| sign(v_i) xi_i / s`` with ``xi_i =
  floor(s |v_i| / ||v|| + u_i)``, ``u_i ~ U(0, 1)`` (unbiased: ``E[q] = v``); encoded as one
  float32 norm plus, per coordinate, a sign bit and ``ceil(log2(s + 1))`` level bits.

``error_feedback`` (Seide et al. 2014; Karimireddy et al. 2019): a client adds what compression
removed last time it took part to its next update before compressing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from velocity.federation.system import uniform_words
from velocity.registry import Param, Registry
from velocity.seeds import child_seed

__all__ = [
    "COMPRESSORS",
    "Compressor",
    "compress_updates",
    "encoded_bytes",
    "qsgd_quantize",
    "topk_sparsify",
]

Compressor = Callable[..., np.ndarray]

COMPRESSORS: Registry[Compressor] = Registry("compression")
_EF = Param("error_feedback", bool, False, "carry each client's compression error forward")


def topk_sparsify(updates: np.ndarray, k: int) -> np.ndarray:
    """Each row keeps its ``k`` largest-magnitude entries (ties: the lower index), others 0."""
    n, d = updates.shape
    if k >= d:
        return updates.copy()
    # A stable order by (-|v|, index) makes the chosen set unique even with ties.
    order = np.argsort(-np.abs(updates), axis=1, kind="stable")[:, :k]
    out = np.zeros_like(updates)
    rows = np.arange(n)[:, None]
    out[rows, order] = updates[rows, order]
    return out


def qsgd_quantize(updates: np.ndarray, levels: int, uniforms: np.ndarray) -> np.ndarray:
    """QSGD's stochastic quantization of each row to ``levels`` levels, given ``uniforms``
    (same shape, in [0, 1))."""
    v = updates.astype(np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    safe = np.where(norms > 0, norms, 1.0)
    xi = np.floor(levels * np.abs(v) / safe + uniforms)
    out: np.ndarray = (norms * np.sign(v) * xi / levels).astype(np.float32)
    return out


@COMPRESSORS.register(
    "topk",
    params=(
        Param("fraction", float, 0.01, "share of coordinates sent", low=0, low_open=True, high=1),
        _EF,
    ),
    summary="Top-k sparsification: send the k largest-magnitude coordinates",
    paper="Aji & Heafield 2017; Stich et al., NeurIPS 2018",
    index_bits=True,
)
def _topk(updates: np.ndarray, *, fraction: float, key: int, ids: np.ndarray) -> np.ndarray:
    return topk_sparsify(updates, _topk_k(updates.shape[1], fraction))


@COMPRESSORS.register(
    "qsgd",
    params=(Param("levels", int, 16, "quantization levels s", low=1), _EF),
    summary="QSGD stochastic quantization (unbiased) to s levels",
    paper="Alistarh et al., QSGD, NeurIPS 2017",
)
def _qsgd(updates: np.ndarray, *, levels: int, key: int, ids: np.ndarray) -> np.ndarray:
    d = updates.shape[1]
    u = uniform_words(key, np.asarray(ids, dtype=np.int64)[:, None], np.arange(d)[None, :])
    return qsgd_quantize(updates, levels, u)


def _topk_k(d: int, fraction: float) -> int:
    return max(1, min(d, math.ceil(fraction * d)))


def encoded_bytes(table: dict[str, Any], d: int) -> int:
    """Bytes of one compressed update of ``d`` float32 parameters (``4 d`` uncompressed)."""
    if not table:
        return 4 * d
    if table["type"] == "topk":
        k = _topk_k(d, table["fraction"])
        if k >= d:
            return 4 * d
        return math.ceil(k * (max(1, math.ceil(math.log2(d))) + 32) / 8)
    level_bits = math.ceil(math.log2(table["levels"] + 1))
    return 4 + math.ceil(d * (1 + level_bits) / 8)


def compress_updates(
    table: dict[str, Any],
    updates: np.ndarray,
    ids: np.ndarray,
    seed: int,
    round_index: int,
    residuals: dict[int, np.ndarray] | None = None,
) -> np.ndarray:
    """The updates as the server receives them. ``residuals`` (client id -> error, updated in
    place) is given when the table asks for error feedback."""
    entry = COMPRESSORS.get(table["type"])
    params = {k: v for k, v in table.items() if k not in ("type", "error_feedback")}
    ids = np.asarray(ids, dtype=np.int64)
    x = updates
    if residuals is not None:
        zero = np.zeros(updates.shape[1], dtype=updates.dtype)
        x = updates + np.stack([residuals.get(int(k), zero) for k in ids])
    key = child_seed(seed, "compress", round_index)
    out = entry.obj(x, key=key, ids=ids, **params).astype(updates.dtype, copy=False)
    if residuals is not None:
        residuals.update((int(k), (x[row] - out[row]).copy()) for row, k in enumerate(ids))
    return out
