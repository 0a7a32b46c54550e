"""System heterogeneity of a federation: who is reachable, who straggles, who drops out, and how
fast each client computes and communicates. Every draw comes from the run's seed tree.

A run's ``system`` table (``system = {stragglers = 0.9, speed_sigma = 1.0}``) is validated and
canonicalized by :func:`canonical_system`; :class:`SystemModel` turns it into draws:

- stragglers (Li et al., FedProx, MLSys 2020, ``drop_percent``): ``round(stragglers * n)`` of a
  round's ``n`` selected clients (those with the lowest hash words of
  ``("system", "straggler", round)`` by client id) do a uniformly random number of local steps
  in ``[1, full - 1]`` (``full`` when ``full == 1``) instead of their full local work;
- availability: client k is reachable in round r iff ``u(r, k) < p_k(r)`` with ``u`` uniform;
  ``p_k(r) = availability`` (``constant``), ``p_k ~ Beta(c m, c (1 - m))`` once per client with
  mean ``m = availability`` and concentration ``c`` (``beta``), or ``clip(m + amplitude *
  sin(2 pi (r / period + phase_k)), 0, 1)`` with a per-client phase ``phase_k ~ U(0, 1)``
  (``daynight``: time zones);
- dropout: each selected client's update is lost after training with probability ``dropout``;
- speed and bandwidth: ``speed_k ~ LogNormal(0, speed_sigma)`` (median 1) scales
  ``samples_per_second``; ``bandwidth_k = bandwidth_mbps * LogNormal(0, bandwidth_sigma)``.
  A client's update arrives ``(bytes_down + bytes_up) * 8 / (bandwidth_k * 1e6) +
  samples_seen / (samples_per_second * speed_k)`` simulated seconds after the round starts
  (:func:`arrival_seconds`); with a ``deadline`` later updates are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from velocity.errors import SpecError
from velocity.registry import Param, parse_value
from velocity.seeds import child_rng, child_seed, counter_hash

__all__ = [
    "AVAILABILITY_MODELS",
    "SYSTEM_PARAMS",
    "SystemModel",
    "arrival_seconds",
    "canonical_system",
    "parse_system",
    "uniform_words",
]

AVAILABILITY_MODELS = ("constant", "beta", "daynight")

SYSTEM_PARAMS: tuple[Param, ...] = (
    Param(
        "stragglers", float, 0.0, "fraction of a round's clients doing partial work", low=0, high=1
    ),
    Param(
        "dropout",
        float,
        0.0,
        "probability a trained update never arrives",
        low=0,
        high=1,
        high_open=True,
    ),
    Param(
        "availability",
        float,
        1.0,
        "mean probability a client is reachable in a round",
        low=0,
        low_open=True,
        high=1,
    ),
    Param(
        "availability_model",
        str,
        "constant",
        "how reachability varies",
        choices=AVAILABILITY_MODELS,
    ),
    Param(
        "concentration",
        float,
        2.0,
        "Beta concentration a + b (availability_model beta)",
        low=0,
        low_open=True,
    ),
    Param("period", int, 24, "rounds per day/night cycle (availability_model daynight)", low=2),
    Param("amplitude", float, 0.5, "day/night swing of the availability", low=0, high=1),
    Param("speed_sigma", float, 0.0, "lognormal sigma of the client compute speeds", low=0),
    Param(
        "samples_per_second",
        float,
        100.0,
        "median client training throughput",
        low=0,
        low_open=True,
    ),
    Param(
        "bandwidth_mbps",
        float,
        10.0,
        "median client link speed (Mbit/s, both ways)",
        low=0,
        low_open=True,
    ),
    Param("bandwidth_sigma", float, 0.0, "lognormal sigma of the client bandwidths", low=0),
    Param(
        "deadline",
        float,
        None,
        "simulated seconds after which a round's updates are late",
        low=0,
        low_open=True,
        nullable=True,
    ),
)
"""The keys of a ``system`` table, their defaults and allowed values (the contract)."""

_BY_NAME = {p.name: p for p in SYSTEM_PARAMS}


def parse_system(value: Any) -> dict[str, Any]:
    """A ``system`` table from a mapping or a ``"key=value,key=value"`` string (CLI)."""
    if isinstance(value, str):
        table: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            key, sep, text = item.partition("=")
            if not sep:
                raise SpecError(f"system: expected key=value, got {item!r}")
            table[key.strip()] = parse_value(text)
        return table
    if not isinstance(value, Mapping):
        raise SpecError("system must be a table of key = value (e.g. {stragglers = 0.9})")
    return dict(value)


def canonical_system(value: Any) -> dict[str, Any]:
    """The defaults-filled system table (``deadline`` only when set), or ``{}`` when every key
    has its default (an ideal federation: runs without a ``system`` table keep their identity
    and results)."""
    given = parse_system(value)
    unknown = sorted(set(given) - set(_BY_NAME))
    if unknown:
        raise SpecError(
            f"system: unknown key '{unknown[0]}'; allowed: {', '.join(sorted(_BY_NAME))}"
        )
    table = {
        p.name: p.coerce(given[p.name], "system") if p.name in given else p.default
        for p in SYSTEM_PARAMS
    }
    if table["availability_model"] == "beta" and table["availability"] == 1.0:
        table["availability_model"] = "constant"  # Beta(c, 0) is a point mass at 1
    if all(table[p.name] == p.default for p in SYSTEM_PARAMS):
        return {}
    # TOML has no null: an unset deadline is left out (its default), so `velocity show` can
    # write the table back.
    return {k: v for k, v in table.items() if v is not None}


def uniform_words(key: int, *counters: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1), one per element of the broadcast counters (53 bits each)."""
    return (counter_hash(key, *counters) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def arrival_seconds(
    samples_seen: np.ndarray,
    bytes_down: float,
    bytes_up: np.ndarray | float,
    speed: np.ndarray,
    bandwidth_mbps: np.ndarray,
    samples_per_second: float,
) -> np.ndarray:
    """Simulated seconds from dispatch to arrival: download + local compute + upload."""
    link = np.asarray(bandwidth_mbps, dtype=np.float64) * 1e6 / 8.0  # bytes per second
    compute = np.asarray(samples_seen, dtype=np.float64) / (samples_per_second * speed)
    out: np.ndarray = (bytes_down + np.asarray(bytes_up, dtype=np.float64)) / link + compute
    return out


@dataclass(frozen=True)
class SystemModel:
    """The draws of one run's canonical ``system`` table over its ``num_clients`` clients."""

    table: Mapping[str, Any]
    seed: int
    num_clients: int

    def __getitem__(self, key: str) -> Any:
        return self.table.get(key, _BY_NAME[key].default)

    @property
    def ideal_availability(self) -> bool:
        return self["availability"] == 1.0

    def availability(self, round_index: int) -> np.ndarray:
        """``(num_clients,)`` probability each client is reachable in ``round_index``."""
        n, mean = self.num_clients, float(self["availability"])
        model = self["availability_model"]
        if model == "beta":
            c = float(self["concentration"])
            rng = child_rng(self.seed, "system", "availability")
            return rng.beta(c * mean, c * (1.0 - mean), n)
        if model == "daynight":
            phase = child_rng(self.seed, "system", "phase").random(n)
            wave = np.sin(2.0 * math.pi * (round_index / self["period"] + phase))
            return np.clip(mean + self["amplitude"] * wave, 0.0, 1.0)
        return np.full(n, mean)

    def available(self, round_index: int) -> np.ndarray:
        """``(num_clients,)`` bool: who is reachable in ``round_index`` (all when ideal)."""
        if self.ideal_availability and self["availability_model"] == "constant":
            return np.ones(self.num_clients, dtype=bool)
        key = child_seed(self.seed, "system", "available", round_index)
        u = uniform_words(key, np.arange(self.num_clients))
        return u < self.availability(round_index)

    def stragglers(self, round_index: int, ids: np.ndarray, *, exact: bool = True) -> np.ndarray:
        """``(len(ids),)`` bool: which of the round's clients straggle: exactly
        ``round(stragglers * len(ids))`` of them, the lowest hash words by client id (a
        synchronous round, as FedProx's ``drop_percent``), or with ``exact=False`` each client
        with probability ``stragglers`` (asynchronous dispatches, often of one client)."""
        ids = np.asarray(ids, dtype=np.int64)
        key = child_seed(self.seed, "system", "straggler", round_index)
        if not exact:
            return uniform_words(key, ids) < self["stragglers"]
        count = math.floor(self["stragglers"] * len(ids) + 0.5)
        mask = np.zeros(len(ids), dtype=bool)
        if count:
            words = counter_hash(key, ids)
            mask[np.lexsort((ids, words))[:count]] = True
        return mask

    def straggler_steps(
        self, round_index: int, ids: np.ndarray, full_steps: np.ndarray, straggling: np.ndarray
    ) -> np.ndarray:
        """Local steps of each client: full work, or for a straggler a uniform integer in
        ``[1, full - 1]`` (position independent: drawn by client id)."""
        full = np.asarray(full_steps, dtype=np.int64)
        key = child_seed(self.seed, "system", "work", round_index)
        u = uniform_words(key, np.asarray(ids, dtype=np.int64))
        span = np.maximum(full - 1, 1)
        partial = np.minimum(1 + np.floor(u * span).astype(np.int64), full)
        return np.where(straggling, partial, full)

    def dropped(self, round_index: int, ids: np.ndarray, stream: int = 0) -> np.ndarray:
        """``(len(ids),)`` bool: whose update is lost after training (``stream`` separates
        several dispatches of one round index, as in asynchronous mode)."""
        if self["dropout"] == 0.0:
            return np.zeros(len(ids), dtype=bool)
        key = child_seed(self.seed, "system", "dropout", round_index, stream)
        return uniform_words(key, np.asarray(ids, dtype=np.int64)) < self["dropout"]

    def speeds(self) -> np.ndarray:
        """``(num_clients,)`` relative compute speed of each client (median 1)."""
        sigma = float(self["speed_sigma"])
        if sigma == 0.0:
            return np.ones(self.num_clients)
        return child_rng(self.seed, "system", "speed").lognormal(0.0, sigma, self.num_clients)

    def bandwidths(self) -> np.ndarray:
        """``(num_clients,)`` link speed of each client in Mbit/s."""
        sigma, median = float(self["bandwidth_sigma"]), float(self["bandwidth_mbps"])
        if sigma == 0.0:
            return np.full(self.num_clients, median)
        rng = child_rng(self.seed, "system", "bandwidth")
        return median * rng.lognormal(0.0, sigma, self.num_clients)
