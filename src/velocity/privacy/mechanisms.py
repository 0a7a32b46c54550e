"""Differential-privacy kernels on the ``(n, d)`` update matrix: clipping, the DP-FedAvg
estimator with Gaussian noise, adaptive clipping's quantile step, and local DP.

Pure functions of arrays and a ``numpy.random.Generator`` from the run's seed tree; they never
modify their inputs. docs/privacy.md gives the exact estimators.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "adaptive_clip_step",
    "clip_to_norm",
    "default_count_stddev",
    "dp_fedavg",
    "local_dp",
    "update_norms",
    "value_noise_multiplier",
]

# Clipped rows are scaled to this fraction of clip_norm at most, so that float32 rounding of
# the scaled row can never push its norm above clip_norm (the bound DP relies on).
_CLIP_MARGIN = 1.0 - 2.0**-20


def update_norms(updates: np.ndarray) -> np.ndarray:
    """L2 norm of every row, accumulated in float64 (``inf`` for a non-finite row)."""
    norms = np.sqrt(np.einsum("ij,ij->i", updates, updates, dtype=np.float64))
    finite = np.isfinite(updates).all(axis=1) if updates.size else np.ones(len(updates), bool)
    return np.where(finite, norms, np.inf)


def clip_to_norm(updates: np.ndarray, clip_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """``(clipped (n, d) float32, norms (n,) float64)``: rows longer than ``clip_norm`` scaled
    down to it, shorter rows unchanged; a non-finite row (a diverged client) becomes zero."""
    norms = update_norms(updates)
    over = norms > clip_norm
    scale = np.ones(len(norms), dtype=np.float64)
    finite_over = over & np.isfinite(norms)
    scale[finite_over] = clip_norm * _CLIP_MARGIN / norms[finite_over]
    scale[~np.isfinite(norms)] = 0.0
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 in a row that becomes zero
        scaled = updates * scale.astype(np.float32)[:, None]
    clipped = np.where(np.isfinite(norms)[:, None], scaled, np.float32(0.0))
    return clipped.astype(np.float32, copy=False), norms


def dp_fedavg(
    updates: np.ndarray,
    clip_norm: float,
    noise_std: float,
    expected_clients: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """DP-FedAvg's fixed-denominator estimator ``(sum_i clip(x_i) + N(0, noise_std^2 I)) /
    expected_clients`` as float32 ``(d,)``, and the update norms.

    Every client counts once (uniform weights): one client moves the sum by at most
    ``clip_norm``, whatever its sample count. Dividing by the *expected* number of clients, not
    the round's actual number, keeps that sensitivity under Poisson sampling (McMahan et al.,
    ICLR 2018, estimator f~_f). The noise is drawn in float64, one standard normal per
    coordinate, then scaled.
    """
    clipped, norms = clip_to_norm(updates, clip_norm)
    total = clipped.sum(axis=0, dtype=np.float64)
    if noise_std > 0:
        total = total + noise_std * rng.standard_normal(updates.shape[1])
    return (total / expected_clients).astype(np.float32), norms


def default_count_stddev(expected_clients: float) -> float:
    """Andrew et al.'s default noise on the clipped count: ``expected_clients / 20``."""
    return expected_clients / 20.0


def value_noise_multiplier(noise_multiplier: float, count_stddev: float) -> float:
    """The noise multiplier left for the update sum when adaptive clipping also releases a
    noised clipped count with std ``count_stddev``, so that the round as a whole is a Gaussian
    mechanism with ``noise_multiplier`` (Andrew et al., NeurIPS 2021, Theorem 1):
    ``(z^-2 - (2 count_stddev)^-2)^(-1/2)``. Needs ``z < 2 count_stddev``."""
    if noise_multiplier == 0:
        return 0.0
    if not noise_multiplier < 2 * count_stddev:
        raise ValueError(
            f"adaptive clipping needs noise_multiplier < 2 * count_stddev, got "
            f"noise_multiplier={noise_multiplier!r}, count_stddev={count_stddev!r}"
        )
    return float((noise_multiplier**-2 - (2 * count_stddev) ** -2) ** -0.5)


def adaptive_clip_step(
    clip_norm: float,
    norms: np.ndarray,
    target_quantile: float,
    clip_lr: float,
    count_stddev: float,
    expected_clients: float,
    rng: np.random.Generator,
) -> float:
    """Next round's clip norm by the geometric quantile update of Andrew et al.:
    ``C * exp(-clip_lr * (b - target_quantile))`` with ``b`` the noised fraction of clients
    whose update norm is at most ``C``: ``(count + N(0, count_stddev^2)) / expected_clients``."""
    unclipped = float(np.count_nonzero(norms <= clip_norm))
    noise = count_stddev * float(rng.standard_normal()) if count_stddev > 0 else 0.0
    fraction = (unclipped + noise) / expected_clients
    return float(clip_norm * math.exp(-clip_lr * (fraction - target_quantile)))


def local_dp(
    updates: np.ndarray,
    clip_norm: float,
    noise_std: float,
    rngs: Sequence[np.random.Generator],
) -> tuple[np.ndarray, np.ndarray]:
    """Local DP: each row clipped to ``clip_norm`` and given its own Gaussian noise of std
    ``noise_std`` per coordinate, from its client's generator ``rngs[i]``; ``(noised, norms)``."""
    clipped, norms = clip_to_norm(updates, clip_norm)
    if noise_std <= 0 or not len(rngs):
        return clipped, norms
    d = updates.shape[1]
    noise = np.stack([rng.standard_normal(d) for rng in rngs])
    return (clipped + noise_std * noise).astype(np.float32), norms
