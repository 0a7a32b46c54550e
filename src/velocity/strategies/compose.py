"""Strategy = pre-aggregators > aggregator > server optimizer, parsed from one spec.

Spec forms (names case-insensitive):
- a preset: ``"fedavg"``, ``"fedprox:mu=0.01"``;
- a chain: ``"nnm:f=2 > trimmed_mean:k=2 > adam:lr=0.01"`` (pre-aggregators, one aggregator,
  optionally a server optimizer last; default server is ``sgd:lr=1``);
- a table: ``{type = "krum", f = 2}`` (one stage, same as the string) or
  ``{aggregator = "krum:f=2", pre = ["nnm:f=2"], server = "adam:lr=0.01", mu = 0.0}``.

The canonical form (used in fingerprints) is the table with every default filled. FedProx's
client-side proximal ``mu`` is returned separately: it belongs to local training, not aggregation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from velocity.errors import SpecError
from velocity.registry import parse_component
from velocity.strategies.aggregators import AGGREGATORS
from velocity.strategies.server import SERVER_OPTIMIZERS

__all__ = ["PRESETS", "Strategy", "aggregate", "build_strategy", "canonical_strategy"]

# name -> (chain template, client mu parameter name or None). Preset parameters that are not
# the proximal mu are passed to the server optimizer (e.g. fedadam:lr=0.01).
PRESETS: dict[str, dict[str, Any]] = {
    "fedavg": {"aggregator": "mean", "server": "sgd", "summary": "mean + plain server step"},
    "fedprox": {
        "aggregator": "mean",
        "server": "sgd",
        "client_mu": 0.01,
        "summary": "FedAvg with the client-side proximal term mu (Li et al., MLSys 2020)",
    },
}


def _stage_kind(name: str) -> str:
    if name in AGGREGATORS:
        return "aggregator"
    if name in SERVER_OPTIMIZERS:
        return "server"
    from velocity.strategies.pre_aggregators import PRE_AGGREGATORS

    if name in PRE_AGGREGATORS:
        return "pre"
    known = sorted(
        {*PRESETS, *AGGREGATORS.names(), *SERVER_OPTIMIZERS.names(), *_pre_names()}
    )
    raise SpecError(f"unknown strategy '{name}'; available: {', '.join(known)}")


def _pre_names() -> list[str]:
    from velocity.strategies.pre_aggregators import PRE_AGGREGATORS

    return PRE_AGGREGATORS.names()


def _from_preset(name: str, params: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    preset = PRESETS[name]
    params = dict(params)
    mu: float | None = None
    if "client_mu" in preset:
        mu = params.pop("mu", preset["client_mu"])
        if isinstance(mu, bool) or not isinstance(mu, int | float) or mu < 0:
            raise SpecError(f"strategy '{name}': parameter 'mu' must be a number >= 0, got {mu!r}")
        mu = float(mu)
    server_name, server_params = parse_component(preset["server"], "server optimizer")
    server_params.update(preset.get("server_params", {}))
    server_params.update(params)
    agg_name, agg_params = parse_component(preset["aggregator"], "aggregator")
    agg_params.update(preset.get("aggregator_params", {}))
    table = {
        "pre": [],
        "aggregator": AGGREGATORS.canonical({"type": agg_name, **agg_params}),
        "server": SERVER_OPTIMIZERS.canonical({"type": server_name, **server_params}),
    }
    return table, mu


def _from_chain(text: str) -> tuple[dict[str, Any], float | None]:
    from velocity.strategies.pre_aggregators import PRE_AGGREGATORS

    stages = [s.strip() for s in text.split(">")]
    if any(not s for s in stages):
        raise SpecError(f"strategy '{text}': empty stage in chain")
    if len(stages) == 1:
        name, params = parse_component(stages[0], "strategy")
        if name in PRESETS:
            return _from_preset(name, params)
    pre: list[dict[str, Any]] = []
    aggregator: dict[str, Any] | None = None
    server: dict[str, Any] | None = None
    for stage in stages:
        name, _ = parse_component(stage, "strategy")
        kind = _stage_kind(name)
        if kind == "pre":
            if aggregator is not None:
                raise SpecError(f"strategy '{text}': pre-aggregator '{name}' after the aggregator")
            pre.append(PRE_AGGREGATORS.canonical(stage))
        elif kind == "aggregator":
            if aggregator is not None:
                raise SpecError(f"strategy '{text}': more than one aggregator")
            aggregator = AGGREGATORS.canonical(stage)
        else:
            if aggregator is None or server is not None:
                raise SpecError(
                    f"strategy '{text}': the server optimizer '{name}' must come last, "
                    "after the aggregator"
                )
            server = SERVER_OPTIMIZERS.canonical(stage)
    if aggregator is None:
        raise SpecError(f"strategy '{text}': no aggregator; available: {', '.join(AGGREGATORS.names())}")
    return {
        "pre": pre,
        "aggregator": aggregator,
        "server": server or SERVER_OPTIMIZERS.canonical("sgd"),
    }, None


def canonical_strategy(spec: str | Mapping[str, Any]) -> tuple[dict[str, Any], float | None]:
    """``(canonical table, client mu or None)`` for any strategy spec form."""
    from velocity.strategies.pre_aggregators import PRE_AGGREGATORS

    if isinstance(spec, str):
        return _from_chain(spec)
    if not isinstance(spec, Mapping):
        raise SpecError(f"strategy must be a string or a table, got {spec!r}")
    if "type" in spec:
        name, params = parse_component(spec, "strategy")
        if name in PRESETS:
            return _from_preset(name, params)
        return _from_chain(_stage_string(spec))
    allowed = {"pre", "aggregator", "server", "mu"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise SpecError(
            f"strategy table: unknown key '{unknown[0]}'; allowed: type (preset or stage), "
            + ", ".join(sorted(allowed))
        )
    if "aggregator" not in spec:
        raise SpecError("strategy table needs 'aggregator' (or 'type')")
    pre_specs = spec.get("pre", [])
    if isinstance(pre_specs, str | Mapping):
        pre_specs = [pre_specs]
    mu = spec.get("mu")
    if mu is not None and (isinstance(mu, bool) or not isinstance(mu, int | float) or mu < 0):
        raise SpecError(f"strategy table: 'mu' must be a number >= 0, got {mu!r}")
    table = {
        "pre": [PRE_AGGREGATORS.canonical(p) for p in pre_specs],
        "aggregator": AGGREGATORS.canonical(spec["aggregator"]),
        "server": SERVER_OPTIMIZERS.canonical(spec.get("server", "sgd")),
    }
    return table, (float(mu) if mu is not None else None)


def _stage_string(table: Mapping[str, Any]) -> str:
    from velocity.registry import format_component

    name, params = parse_component(table, "strategy")
    return format_component(name, params)


@dataclass
class Strategy:
    """A composed, stateful (per run) strategy built from a canonical table."""

    table: dict[str, Any]
    seed: int = 0
    state: dict[str, Any] = field(default_factory=dict)

    def reset(self, seed: int) -> None:
        """Forget all state (momentum, previous aggregate, ...) and re-seed for a new run."""
        self.seed = seed
        self.state = {}

    def aggregate(self, updates: np.ndarray, weights: np.ndarray, round_index: int = 0) -> np.ndarray:
        """Pre-aggregators then the aggregator: ``(n, d)`` updates -> ``(d,)`` aggregate."""
        from velocity.strategies.pre_aggregators import PRE_AGGREGATORS

        for position, stage in enumerate(self.table["pre"]):
            entry, params = PRE_AGGREGATORS.resolve(stage)
            updates = _call_stage(entry, updates, weights, params, self, round_index, position)
        entry, params = AGGREGATORS.resolve(self.table["aggregator"])
        return _call_stage(entry, updates, weights, params, self, round_index, len(self.table["pre"]))

    def step(
        self, params: np.ndarray, updates: np.ndarray, weights: np.ndarray, round_index: int
    ) -> np.ndarray:
        """One server round: aggregate the updates and apply the server optimizer."""
        agg = self.aggregate(updates, weights, round_index)
        entry, opt_params = SERVER_OPTIMIZERS.resolve(self.table["server"])
        opt_state = self.state.setdefault("server", {})
        return np.asarray(entry.obj(params, agg, opt_state, **opt_params), dtype=np.float32)


def _call_stage(
    entry: Any,
    updates: np.ndarray,
    weights: np.ndarray,
    params: dict[str, Any],
    strategy: Strategy,
    round_index: int,
    position: int,
) -> np.ndarray:
    kwargs = dict(params)
    if entry.extra.get("seeded"):
        from velocity.seeds import child_rng

        kwargs["rng"] = child_rng(strategy.seed, "strategy", round_index, position)
    if entry.extra.get("stateful"):
        kwargs["state"] = strategy.state.setdefault(f"stage{position}", {})
    out: np.ndarray = entry.obj(updates, weights, **kwargs)
    return out


def build_strategy(spec: str | Mapping[str, Any], seed: int = 0) -> Strategy:
    """Parse any strategy spec into a fresh :class:`Strategy` seeded from the run seed."""
    table, _ = canonical_strategy(spec)
    return Strategy(table=table, seed=seed)


def aggregate(
    spec: str | Mapping[str, Any],
    updates: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Aggregate an ``(n, d)`` update matrix with the strategy ``spec`` (server step excluded).

    ``weights=None`` means equal weights. Inputs are never modified.
    """
    updates = np.asarray(updates)
    if updates.ndim != 2:
        raise SpecError(f"updates must be a 2-D (n, d) array, got shape {updates.shape}")
    updates = updates.astype(np.float32, copy=False)
    n = updates.shape[0]
    if n == 0:
        raise SpecError("updates must have at least one row")
    if weights is None:
        w = np.ones(n, dtype=np.float64)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n,):
            raise SpecError(f"weights must have shape ({n},), got {w.shape}")
        if np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
            raise SpecError("weights must be finite, >= 0 and not all zero")
    return build_strategy(spec, seed=seed).aggregate(updates, w)
