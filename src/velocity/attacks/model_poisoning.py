"""Model-poisoning attacks: pure functions replacing the malicious rows of a round's updates.

Each follows ``velocity.attacks.base.ModelAttack``; each attack's docstring names the rows its
statistics use (the honest rows, or the whole genuine matrix), per its paper; see docs/attacks.md.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from velocity.attacks.base import model_attack
from velocity.registry import Param
from velocity.strategies.aggregators import krum_scores

__all__ = [
    "alie",
    "alie_default_z",
    "fang_krum",
    "fang_krum_lambda_bound",
    "fang_trimmed_mean",
    "gaussian",
    "ipm",
    "mimic",
    "minmax",
    "minsum",
    "scaling",
    "sign_flip",
    "sybil",
]

Info = dict[str, Any]


def _mean(updates: np.ndarray) -> np.ndarray:
    return np.asarray(updates.mean(axis=0, dtype=np.float64))


def _copies(row: np.ndarray, count: int) -> np.ndarray:
    return np.repeat(np.asarray(row, dtype=np.float32)[None, :], count, axis=0)


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances ``(len(a), len(b))`` via one Gram product."""
    a64, b64 = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    sq = (a64 * a64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :] - 2.0 * (a64 @ b64.T)
    return np.maximum(sq, 0.0)


def _direction(updates: np.ndarray) -> np.ndarray:
    """Fang's s: +1 where the no-attack mean update increases a parameter, else -1."""
    return np.where(_mean(updates) > 0, 1.0, -1.0)


@model_attack(
    "sign_flip",
    omniscient=False,
    params=(Param("scale", float, 1.0, "multiplier of the flipped update", low=0, low_open=True),),
    summary="Send -scale times the client's own honest update",
    paper="Li et al., RSA: Byzantine-Robust Stochastic Aggregation, AAAI 2019 (sign-flipping)",
)
def sign_flip(
    updates: np.ndarray,
    weights: np.ndarray,
    malicious: np.ndarray,
    rng: np.random.Generator,
    *,
    scale: float,
) -> tuple[np.ndarray, Info]:
    """Malicious update = -scale x the client's own honest update."""
    return (np.float32(-scale) * updates[malicious]).astype(np.float32), {}


@model_attack(
    "gaussian",
    omniscient=False,
    params=(Param("sigma", float, 1.0, "standard deviation of each coordinate", low=0),),
    summary="Send random updates with coordinates drawn from N(0, sigma^2) (seeded)",
    paper="Blanchard et al., Krum, NeurIPS 2017 (Gaussian Byzantine workers)",
)
def gaussian(
    updates: np.ndarray,
    weights: np.ndarray,
    malicious: np.ndarray,
    rng: np.random.Generator,
    *,
    sigma: float,
) -> tuple[np.ndarray, Info]:
    """Each malicious client sends an independent N(0, sigma^2 I) vector."""
    shape = (int(malicious.sum()), updates.shape[1])
    return rng.normal(0.0, sigma, shape).astype(np.float32), {}


@model_attack(
    "ipm",
    omniscient=True,
    params=(Param("epsilon", float, 0.1, "scale of the inverted mean", low=0, low_open=True),),
    summary="Inner-product manipulation: send -epsilon x the mean of the round's honest updates",
    paper="Xie, Koyejo & Gupta, Fall of Empires, UAI 2019",
)
def ipm(
    updates: np.ndarray,
    weights: np.ndarray,
    malicious: np.ndarray,
    rng: np.random.Generator,
    *,
    epsilon: float,
) -> tuple[np.ndarray, Info]:
    """Every malicious client sends -epsilon x (unweighted mean of the honest rows).

    Xie et al. invert the mean of the correct workers' updates; only when every sampled row is
    malicious (no honest row to read) does the mean fall back to all rows.
    """
    honest = updates[~malicious]
    reference = honest if len(honest) else updates
    return _copies(-epsilon * _mean(reference), int(malicious.sum())), {}


def alie_default_z(n: int, f: int) -> float:
    """Baruch et al.'s z_max: s = floor(n/2 + 1) - f supporters needed, z = Phi^-1((n - s) / n).

    ``s`` is kept in [1, n - 1] so the quantile stays finite when f is at or above n/2.
    """
    s = min(max(math.floor(n / 2 + 1) - f, 1), max(n - 1, 1))
    return float(NormalDist().inv_cdf((n - s) / n)) if n > 1 else 0.0


@model_attack(
    "alie",
    omniscient=True,
    params=(
        Param(
            "z",
            float,
            None,
            "deviations below the mean (none: the paper's z_max from n, f)",
            nullable=True,
        ),
    ),
    records=("z",),
    summary="A Little Is Enough: send mean - z x std of the round's updates, per coordinate",
    paper="Baruch, Baruch & Goldberg, A Little Is Enough, NeurIPS 2019",
)
def alie(
    updates: np.ndarray,
    weights: np.ndarray,
    malicious: np.ndarray,
    rng: np.random.Generator,
    *,
    z: float | None,
) -> tuple[np.ndarray, Info]:
    """mean - z * std (population std) over the genuine updates; n = rows, f = malicious rows."""
    m = int(malicious.sum())
    z_used = alie_default_z(updates.shape[0], m) if z is None else float(z)
    std = updates.astype(np.float64).std(axis=0)
    return _copies(_mean(updates) - z_used * std, m), {"z": z_used}


def fang_krum_lambda_bound(benign: np.ndarray, num_malicious: int, num_total: int) -> float:
    """Fang et al.'s upper bound on lambda (update space, so D(w_i, w_Re) = ||benign_i||).

    lambda_0 = min_i sum_{l in N_i} D(w_l, w_i) / ((m - 2c - 1) sqrt(d)) + max_i ||w_i|| / sqrt(d)
    with N_i the m - c - 2 benign rows nearest to benign row i (Euclidean, not squared).
    """
    h, d = benign.shape
    if h == 0:
        return 0.0
    root_d = math.sqrt(d)
    far = float(np.sqrt((benign.astype(np.float64) ** 2).sum(1)).max()) / root_d
    k = min(num_total - num_malicious - 2, h - 1)
    if k < 1:
        return far
    dist = np.sqrt(_sq_distances(benign, benign)) + np.diag(np.full(h, np.inf))
    nearest_sum = np.partition(dist, k - 1, axis=1)[:, :k].sum(axis=1)
    denominator = max(num_total - 2 * num_malicious - 1, 1) * root_d
    return float(nearest_sum.min()) / denominator + far


@model_attack(
    "fang_krum",
    omniscient=True,
    params=(
        Param(
            "f",
            int,
            None,
            "the f Krum is assumed to use (none: the round's malicious count)",
            low=0,
            nullable=True,
        ),
        Param(
            "threshold", float, 1e-5, "smallest lambda tried before giving up", low=0, low_open=True
        ),
    ),
    records=("lambda", "selected"),
    cost="O(n^2 d + n^2 log(lambda_0 / threshold))",
    summary="Full-knowledge attack on Krum: every malicious client sends -lambda x sign(mean); "
    "lambda halved from Fang's bound until Krum selects it",
    paper="Fang et al., Local Model Poisoning Attacks to Byzantine-Robust FL, USENIX Security 2020",
)
def fang_krum(
    updates: np.ndarray,
    weights: np.ndarray,
    malicious: np.ndarray,
    rng: np.random.Generator,
    *,
    f: int | None,
    threshold: float,
) -> tuple[np.ndarray, Info]:
    """Krum-targeted directed deviation; ``info``: the lambda sent and whether Krum selected it.

    If no lambda >= threshold gets selected, the smallest lambda tried is sent (selected = 0).
    """
    m = int(malicious.sum())
    n, d = updates.shape
    benign = updates[~malicious]
    s = _direction(updates)
    if len(benign) == 0:  # every row is malicious: Krum can only select one of them
        lam = fang_krum_lambda_bound(updates, 0, n)
        return _copies(-lam * s, m), {"lambda": lam, "selected": 1}
    lam = fang_krum_lambda_bound(benign, m, n)
    assumed_f = m if f is None else f
    # Distances between candidates and benign rows are quadratic in lambda: precompute the
    # parts once so each halving step costs O(n^2), not O(n^2 d).
    benign64 = benign.astype(np.float64)
    benign_sq = (benign64 * benign64).sum(1)
    s_dot = benign64 @ s
    sq = np.zeros((n, n))
    benign_rows, malicious_rows = np.flatnonzero(~malicious), np.flatnonzero(malicious)
    sq[np.ix_(benign_rows, benign_rows)] = _sq_distances(benign, benign)
    selected = False
    tried = lam
    while True:
        tried = lam
        to_benign = lam * lam * d + 2.0 * lam * s_dot + benign_sq  # ||-lam s - b||^2
        sq[np.ix_(malicious_rows, benign_rows)] = to_benign[None, :]
        sq[np.ix_(benign_rows, malicious_rows)] = to_benign[:, None]
        winner = int(np.argmin(krum_scores(sq, assumed_f)))
        if malicious[winner]:
            selected = True
            break
        if lam / 2 < threshold:
            break
        lam /= 2
    return _copies(-tried * s, m), {"lambda": tried, "selected": int(selected)}


@model_attack(
    "fang_trimmed_mean",
    omniscient=True,
    params=(
        Param(
            "b", float, 2.0, "how far beyond the honest extremes to sample", low=1, low_open=True
        ),
    ),
    summary="Full-knowledge attack on trimmed mean / median: per coordinate, values sampled "
    "beyond the honest max (or min) against the honest direction",
    paper="Fang et al., Local Model Poisoning Attacks to Byzantine-Robust FL, USENIX Security 2020",
    aliases=("fang_median",),
)
def fang_trimmed_mean(
    updates: np.ndarray,
    weights: np.ndarray,
    malicious: np.ndarray,
    rng: np.random.Generator,
    *,
    b: float,
) -> tuple[np.ndarray, Info]:
    """Per coordinate j with s_j = sign of the mean update: if s_j < 0 sample in [max, b*max]
    (max > 0) or [max, max/b]; if s_j > 0 sample in [min/b, min] (min > 0) or [b*min, min]."""
    m = int(malicious.sum())
    top = updates.max(axis=0).astype(np.float64)
    bottom = updates.min(axis=0).astype(np.float64)
    push_up = _direction(updates) < 0
    low = np.where(push_up, top, np.where(bottom > 0, bottom / b, bottom * b))
    high = np.where(push_up, np.where(top > 0, top * b, top / b), bottom)
    u = rng.random((m, updates.shape[1]))
    return (low + u * (high - low)).astype(np.float32), {}


_DEVIATIONS = ("unit_vec", "std", "sign")


def _deviation(updates: np.ndarray, kind: str) -> np.ndarray:
    """Shejwalkar & Houmansadr's perturbation direction (the attack subtracts gamma times it)."""
    mean = _mean(updates)
    if kind == "unit_vec":
        norm = float(np.linalg.norm(mean))
        return mean / norm if norm > 0 else mean
    if kind == "std":
        return np.asarray(updates.astype(np.float64).std(axis=0))
    return np.sign(mean)


def _gamma_search(fits: Any, gamma_init: float, tau: float) -> float:
    """The paper's search: move gamma up on success and down on failure by a step that halves
    each time (starting at gamma_init / 2); the largest gamma that passed (0 if none)."""
    gamma, step, best = gamma_init, gamma_init, 0.0
    while abs(best - gamma) > tau:
        if fits(gamma):
            best = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return best


def _shejwalkar(
    updates: np.ndarray,
    malicious: np.ndarray,
    deviation: str,
    gamma_init: float,
    tau: float,
    objective: str,
) -> tuple[np.ndarray, Info]:
    m = int(malicious.sum())
    u64 = updates.astype(np.float64)
    reference = _mean(updates)
    p = _deviation(updates, deviation)
    pair_sq = _sq_distances(updates, updates)
    # ||reference - gamma p - u_i||^2 = |c_i|^2 - 2 gamma <c_i, p> + gamma^2 |p|^2, c = ref - u.
    centred = reference[None, :] - u64
    c_sq, c_dot_p, p_sq = (centred**2).sum(1), centred @ p, float(p @ p)

    def to_each(gamma: float) -> np.ndarray:
        return np.maximum(c_sq - 2.0 * gamma * c_dot_p + gamma * gamma * p_sq, 0.0)

    if objective == "max":
        limit = float(np.sqrt(pair_sq.max()))
        fits = lambda gamma: float(np.sqrt(to_each(gamma).max())) <= limit  # noqa: E731
    else:
        limit = float(pair_sq.sum(axis=1).max())
        fits = lambda gamma: float(to_each(gamma).sum()) <= limit  # noqa: E731
    gamma = _gamma_search(fits, gamma_init, tau)
    return _copies(reference - gamma * p, m), {"gamma": gamma}


_SHEJWALKAR_PARAMS = (
    Param(
        "deviation",
        str,
        "unit_vec",
        "perturbation: inverse unit vector, std or sign",
        choices=_DEVIATIONS,
    ),
    Param("gamma_init", float, 10.0, "first gamma tried by the search", low=0, low_open=True),
    Param("tau", float, 1e-5, "search stops when the step is below tau", low=0, low_open=True),
)
_SHEJWALKAR_PAPER = (
    "Shejwalkar & Houmansadr, Manipulating the Byzantine, NDSS 2021 (AGR-agnostic attacks)"
)


@model_attack(
    "minmax",
    omniscient=True,
    params=_SHEJWALKAR_PARAMS,
    records=("gamma",),
    cost="O(n^2 d)",
    summary="Send mean - gamma x deviation with the largest gamma keeping its farthest distance "
    "to an honest update within the largest honest pairwise distance",
    paper=_SHEJWALKAR_PAPER,
)
def minmax(
    updates: np.ndarray,
    weights: np.ndarray,
    malicious: np.ndarray,
    rng: np.random.Generator,
    *,
    deviation: str,
    gamma_init: float,
    tau: float,
) -> tuple[np.ndarray, Info]:
    """max_i ||m - u_i|| <= max_{i,j} ||u_i - u_j|| with m = mean - gamma p; gamma searched."""
    return _shejwalkar(updates, malicious, deviation, gamma_init, tau, "max")


@model_attack(
    "minsum",
    omniscient=True,
    params=_SHEJWALKAR_PARAMS,
    records=("gamma",),
    cost="O(n^2 d)",
    summary="Send mean - gamma x deviation with the largest gamma keeping its summed squared "
    "distance to the honest updates within the largest honest one",
    paper=_SHEJWALKAR_PAPER,
)
def minsum(
    updates: np.ndarray,
    weights: np.ndarray,
    malicious: np.ndarray,
    rng: np.random.Generator,
    *,
    deviation: str,
    gamma_init: float,
    tau: float,
) -> tuple[np.ndarray, Info]:
    """sum_i ||m - u_i||^2 <= max_i sum_j ||u_i - u_j||^2 with m = mean - gamma p."""
    return _shejwalkar(updates, malicious, deviation, gamma_init, tau, "sum")


@model_attack(
    "mimic",
    omniscient=True,
    records=("target",),
    client_records=("target",),
    cost="O(n^2 d)",
    summary="Every malicious client copies the honest update lying farthest along the top "
    "principal direction of the round's honest updates",
    paper="Karimireddy, He & Jaggi, Byzantine-Robust Learning on Heterogeneous Datasets via "
    "Bucketing, ICLR 2022",
)
def mimic(
    updates: np.ndarray,
    weights: np.ndarray,
    malicious: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, Info]:
    """Copy the honest row i maximizing |<z, u_i - mean>|, z the top principal direction.

    The paper estimates z over warm-up rounds and then fixes the client; here it is chosen per
    round (clients may be sampled). ``info['target']`` is the copied row.
    """
    m = int(malicious.sum())
    honest_rows = np.flatnonzero(~malicious)
    if len(honest_rows) == 0:
        honest_rows = np.flatnonzero(malicious)
    centred = updates[honest_rows].astype(np.float64)
    centred -= centred.mean(axis=0)
    # Projections on the top principal direction are proportional to the top eigenvector of
    # the small (h, h) Gram matrix: no (d, d) covariance needed.
    _, vectors = np.linalg.eigh(centred @ centred.T)
    target = int(honest_rows[int(np.argmax(np.abs(vectors[:, -1])))])
    return _copies(updates[target], m), {"target": target}


@model_attack(
    "sybil",
    omniscient=False,
    params=(Param("count", int, 1, "fabricated clients added to the round", low=1),),
    summary="Add count fabricated clients to the round, copies of the first malicious update "
    "(weighted like it); list it after the attack that crafts that update",
    paper="Fung, Yoon & Beschastnikh, The Limitations of FL in Sybil Settings, RAID 2020",
)
def sybil(
    updates: np.ndarray,
    weights: np.ndarray,
    malicious: np.ndarray,
    rng: np.random.Generator,
    *,
    count: int,
) -> tuple[np.ndarray, Info]:
    """The malicious rows unchanged, then ``count`` copies of the first one appended."""
    own = updates[malicious].astype(np.float32)
    return np.concatenate([own, _copies(own[0], count)]), {}


@model_attack(
    "scaling",
    omniscient=False,
    params=(
        Param(
            "factor",
            float,
            None,
            "boost (none: total weight / malicious weight, the model "
            "replacement factor n/eta of FedAvg)",
            low=0,
            low_open=True,
            nullable=True,
        ),
    ),
    records=("factor",),
    summary="Model replacement: multiply each malicious update by factor (use with backdoor)",
    paper="Bagdasaryan et al., How To Backdoor Federated Learning, AISTATS 2020",
    aliases=("model_replacement",),
)
def scaling(
    updates: np.ndarray,
    weights: np.ndarray,
    malicious: np.ndarray,
    rng: np.random.Generator,
    *,
    factor: float | None,
) -> tuple[np.ndarray, Info]:
    """factor x own update; by default sum(weights) / sum(malicious weights), so that under
    weighted FedAvg with server lr 1 the malicious models jointly replace the global model."""
    w = np.asarray(weights, dtype=np.float64)
    used = float(w.sum() / w[malicious].sum()) if factor is None else float(factor)
    return (np.float32(used) * updates[malicious]).astype(np.float32), {"factor": used}
