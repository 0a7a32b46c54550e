"""Strategy = pre-aggregators > aggregator > server optimizer, parsed from one spec.

Spec forms (names case-insensitive):
- a preset: ``"fedavg"``, ``"fedprox:mu=0.01"``, ``"fedadam:lr=0.03"``;
- a chain: ``"nnm:f=2 > trimmed_mean:k=2 > adam:lr=0.01"`` (pre-aggregators, one aggregator,
  optionally a server optimizer last; default server is ``sgd:lr=1``);
- a table: ``{type = "krum", f = 2}`` (one stage or a preset, same as the string) or
  ``{aggregator = "krum:f=2", pre = ["nnm:f=2"], server = "adam:lr=0.01", mu = 0.0}``;
- a privacy stage first (velocity.privacy): ``"dp:noise_multiplier=1.0,clip_norm=1.0 > mean >
  momentum"`` (central DP-FedAvg: the aggregator must be ``mean``, with no pre-aggregator) or
  ``"ldp:noise_multiplier=0.5 > krum:f=2"`` (local DP, applied by each client before upload).

The canonical form (used in fingerprints) is the table with every default filled; its
``privacy`` key is there only when the strategy has a privacy stage. FedProx's
client-side proximal ``mu`` is returned separately: it belongs to local training, not aggregation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from velocity.errors import SpecError
from velocity.privacy import (
    PRIVACY_STAGES,
    adaptive_clip_step,
    default_count_stddev,
    dp_fedavg,
    local_dp,
    value_noise_multiplier,
)
from velocity.registry import Entry, Registry, format_component, parse_component
from velocity.seeds import child_rng
from velocity.strategies.aggregators import AGGREGATORS
from velocity.strategies.pre_aggregators import PRE_AGGREGATORS
from velocity.strategies.server import SERVER_OPTIMIZERS

__all__ = [
    "PRESETS",
    "Preset",
    "Strategy",
    "aggregate",
    "build_strategy",
    "canonical_strategy",
]


@dataclass(frozen=True)
class Preset:
    """A named strategy: an aggregator and a server optimizer, plus FedProx's client mu."""

    aggregator: str
    server: str
    summary: str
    paper: str
    client_mu: float | None = None


PRESETS: dict[str, Preset] = {
    "fedavg": Preset("mean", "sgd", "mean + plain server step", "McMahan et al., AISTATS 2017"),
    "fedprox": Preset(
        "mean",
        "sgd",
        "FedAvg with the client-side proximal term mu",
        "Li et al., MLSys 2020",
        client_mu=0.01,
    ),
    "fedavgm": Preset("mean", "momentum", "mean + server momentum", "Hsu et al., 2019"),
    "fedadam": Preset("mean", "adam", "mean + server Adam", "Reddi et al., ICLR 2021"),
    "fedyogi": Preset("mean", "yogi", "mean + server Yogi", "Reddi et al., ICLR 2021"),
    "fedadagrad": Preset("mean", "adagrad", "mean + server Adagrad", "Reddi et al., ICLR 2021"),
    "fedmedian": Preset("median", "sgd", "coordinate-wise median", "Yin et al., ICML 2018"),
    "fedtrimmedavg": Preset(
        "trimmed_mean:beta=0.2", "sgd", "coordinate-wise trimmed mean", "Yin et al., ICML 2018"
    ),
}

_FAMILIES: tuple[tuple[str, Registry], ...] = (
    ("privacy", PRIVACY_STAGES),
    ("pre", PRE_AGGREGATORS),
    ("aggregator", AGGREGATORS),
    ("server", SERVER_OPTIMIZERS),
)


def _stage_kind(name: str) -> str:
    for kind, registry in _FAMILIES:
        if name in registry:
            return kind
    known = sorted({*PRESETS, *(n for _, r in _FAMILIES for n in r.names())})
    raise SpecError(f"unknown strategy '{name}'; available: {', '.join(known)}")


def canonical_stage(registry: Registry, spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """``{"type": name, **params}`` with defaults filled and the entry's normalisation applied."""
    entry, params = registry.resolve(spec)
    normalize = entry.extra.get("normalize")
    if normalize is not None:
        params = normalize(params)
    return {"type": entry.name, **params}


def _check_mu(owner: str, mu: Any) -> float:
    if isinstance(mu, bool) or not isinstance(mu, int | float) or not mu >= 0:
        raise SpecError(f"{owner}: parameter 'mu' must be a number >= 0, got {mu!r}")
    return float(mu)


def _from_preset(name: str, params: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    preset = PRESETS[name]
    owner = f"strategy '{name}'"
    params = dict(params)
    mu: float | None = None
    if preset.client_mu is not None:
        mu = _check_mu(owner, params.pop("mu", preset.client_mu))
    agg_name, agg_params = parse_component(preset.aggregator, "aggregator")
    server_name, server_params = parse_component(preset.server, "server optimizer")
    agg_known = {p.name for p in AGGREGATORS.get(agg_name).params}
    server_known = {p.name for p in SERVER_OPTIMIZERS.get(server_name).params}
    for key, value in params.items():
        if key in agg_known and key in server_known:
            raise SpecError(f"{owner}: parameter '{key}' is ambiguous (aggregator and server)")
        if key in agg_known:
            if key in ("k", "beta") and agg_name == "trimmed_mean":
                agg_params.pop("beta", None)
            agg_params[key] = value
        elif key in server_known:
            server_params[key] = value
        else:
            allowed = sorted(agg_known | server_known | ({"mu"} if mu is not None else set()))
            raise SpecError(
                f"{owner}: unknown parameter '{key}'; allowed: {', '.join(allowed) or 'none'}"
            )
    table = {
        "pre": [],
        "aggregator": canonical_stage(AGGREGATORS, {"type": agg_name, **agg_params}),
        "server": canonical_stage(SERVER_OPTIMIZERS, {"type": server_name, **server_params}),
    }
    return table, mu


def _from_chain(text: str) -> tuple[dict[str, Any], float | None]:
    stages = [s.strip() for s in text.split(">")]
    if any(not s for s in stages):
        raise SpecError(f"strategy '{text}': empty stage in chain")
    if len(stages) == 1:
        name, params = parse_component(stages[0], "strategy")
        if name in PRESETS:
            return _from_preset(name, params)
    return _from_stages(stages, text)


def _from_stages(
    stages: Sequence[str | Mapping[str, Any]], text: str
) -> tuple[dict[str, Any], float | None]:
    """Classify and validate each stage (string or table) of a chain."""
    pre: list[dict[str, Any]] = []
    aggregator: dict[str, Any] | None = None
    server: dict[str, Any] | None = None
    privacy: dict[str, Any] | None = None
    for position, stage in enumerate(stages):
        name, _ = parse_component(stage, "strategy")
        if name in PRESETS:
            raise SpecError(
                f"strategy '{text}': preset '{name}' cannot be part of a chain; use its "
                "stages instead (e.g. 'mean > adam')"
            )
        kind = _stage_kind(name)
        if kind == "privacy":
            if position != 0:
                raise SpecError(
                    f"strategy '{text}': the privacy stage '{name}' must come first in the chain"
                )
            privacy = canonical_stage(PRIVACY_STAGES, stage)
        elif kind == "pre":
            if aggregator is not None:
                raise SpecError(f"strategy '{text}': pre-aggregator '{name}' after the aggregator")
            pre.append(canonical_stage(PRE_AGGREGATORS, stage))
        elif kind == "aggregator":
            if aggregator is not None:
                raise SpecError(f"strategy '{text}': more than one aggregator")
            aggregator = canonical_stage(AGGREGATORS, stage)
        else:
            if aggregator is None or server is not None:
                raise SpecError(
                    f"strategy '{text}': the server optimizer '{name}' must come last, "
                    "after the aggregator"
                )
            server = canonical_stage(SERVER_OPTIMIZERS, stage)
    if aggregator is None and privacy is not None and len(stages) == 1:
        aggregator = canonical_stage(AGGREGATORS, "mean")  # "dp:..." alone is DP-FedAvg
    if aggregator is None:
        raise SpecError(
            f"strategy '{text}': no aggregator; available: {', '.join(AGGREGATORS.names())}"
        )
    table = {
        "pre": pre,
        "aggregator": aggregator,
        "server": server or canonical_stage(SERVER_OPTIMIZERS, "sgd"),
    }
    return _with_privacy(table, privacy, text), None


def _with_privacy(
    table: dict[str, Any], privacy: dict[str, Any] | None, text: str
) -> dict[str, Any]:
    """``table`` with its privacy stage, refused where central DP is not DP-FedAvg."""
    if privacy is None:
        return table
    if privacy["type"] == "dp" and (table["pre"] or table["aggregator"]["type"] != "mean"):
        # The Gaussian noise is calibrated to the clipped *sum*: a median, Krum or a mixing
        # pre-aggregator has another sensitivity, so the epsilon reported would be wrong.
        others = [p["type"] for p in table["pre"]] + [table["aggregator"]["type"]]
        raise SpecError(
            f"strategy '{text}': central DP ('dp') is DP-FedAvg and composes only with the "
            f"aggregator 'mean' and no pre-aggregator (got {' > '.join(others)}); for privacy "
            "with a robust rule use local DP, e.g. 'ldp:noise_multiplier=0.5 > krum:f=2'"
        )
    return {"privacy": privacy, **table}


def canonical_strategy(spec: str | Mapping[str, Any]) -> tuple[dict[str, Any], float | None]:
    """``(canonical table, client mu or None)`` for any strategy spec form."""
    if isinstance(spec, str):
        return _from_chain(spec)
    if not isinstance(spec, Mapping):
        raise SpecError(f"strategy must be a string or a table, got {spec!r}")
    if "type" in spec:
        name, params = parse_component(spec, "strategy")
        if ">" in name or ":" in name:
            raise SpecError(
                f"strategy table: 'type' must be one name, got {spec['type']!r}; write a chain "
                "as a string or use the pre/aggregator/server keys"
            )
        if name in PRESETS:
            return _from_preset(name, params)
        return _from_stages([dict(spec)], format_component(name, params))
    allowed = {"privacy", "pre", "aggregator", "server", "mu"}
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
    if not isinstance(pre_specs, list | tuple):
        raise SpecError(f"strategy table: 'pre' must be a list of stages, got {pre_specs!r}")
    mu = spec.get("mu")
    table = {
        "pre": [canonical_stage(PRE_AGGREGATORS, p) for p in pre_specs],
        "aggregator": canonical_stage(AGGREGATORS, spec["aggregator"]),
        "server": canonical_stage(SERVER_OPTIMIZERS, spec.get("server", "sgd")),
    }
    privacy = spec.get("privacy")
    if privacy is not None:
        table = _with_privacy(table, canonical_stage(PRIVACY_STAGES, privacy), "table")
    return table, (_check_mu("strategy table", mu) if mu is not None else None)


@dataclass
class _Stage:
    entry: Entry[Any]
    params: dict[str, Any]


def _resolve(registry: Registry, table: Mapping[str, Any]) -> _Stage:
    entry, params = registry.resolve(table)
    return _Stage(entry, params)


@dataclass
class Strategy:
    """A composed strategy built from a canonical table, with per-run state.

    State (server momentum, the previous aggregate for centred clipping, ...) lives in ``state``;
    a new run builds a new Strategy. Seeded stages draw from ``child_rng(seed, "strategy",
    round, position)``; central DP's noise from ``child_rng(seed, "dp", round)``, local DP's from
    ``child_rng(seed, "ldp", round, client)``. ``expected_clients`` is the number of clients a
    round has on average (central DP divides by it; None: the round's actual number).
    ``round_record`` holds what the privacy stage reports about the last round (``clip_norm``,
    ``clipped_fraction``).
    """

    table: dict[str, Any]
    seed: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    expected_clients: float | None = None
    round_record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        privacy = self.table.get("privacy")
        self._privacy = _resolve(PRIVACY_STAGES, privacy) if privacy else None
        self._pre = [_resolve(PRE_AGGREGATORS, t) for t in self.table["pre"]]
        self._aggregator = _resolve(AGGREGATORS, self.table["aggregator"])
        self._server = _resolve(SERVER_OPTIMIZERS, self.table["server"])

    @property
    def central_dp(self) -> bool:
        """Whether the server adds DP noise (so a round with no client still moves the model)."""
        return self._privacy is not None and self._privacy.entry.obj.side == "server"

    def privatize(self, updates: np.ndarray, client_ids: Any, round_index: int) -> np.ndarray:
        """The client-side recipe: local DP clips and noises each client's update before it is
        sent (``client_ids[i]`` owns row i); without local DP, ``updates`` unchanged."""
        stage = self._privacy
        if stage is None or stage.entry.obj.side != "client":
            return updates
        clip_norm = float(stage.params["clip_norm"])
        rngs = [child_rng(self.seed, "ldp", round_index, int(k)) for k in client_ids]
        noised, norms = local_dp(
            updates, clip_norm, float(stage.params["noise_multiplier"]) * clip_norm, rngs
        )
        self.round_record = _clip_record(clip_norm, norms)
        return noised

    def aggregate(
        self, updates: np.ndarray, weights: np.ndarray, round_index: int = 0
    ) -> np.ndarray:
        """Pre-aggregators then the aggregator: ``(n, d)`` updates -> ``(d,)`` aggregate
        (central DP: the noised DP-FedAvg estimate instead)."""
        if self.central_dp:
            return self._dp_fedavg(updates, round_index)
        for position, stage in enumerate(self._pre):
            updates, weights = self._call(stage, updates, weights, round_index, position)
        out = self._call(self._aggregator, updates, weights, round_index, len(self._pre))
        return np.asarray(out, dtype=np.float32)

    def _dp_fedavg(self, updates: np.ndarray, round_index: int) -> np.ndarray:
        assert self._privacy is not None
        params = self._privacy.params
        state = self.state.setdefault("privacy", {})
        expected = float(self.expected_clients or updates.shape[0])
        z = float(params["noise_multiplier"])
        clip_norm = float(state.get("clip_norm", params["clip_norm"]))
        adaptive = params.get("target_quantile") is not None
        count_std = 0.0
        if adaptive:
            given = params.get("count_stddev")
            if given is not None:
                count_std = float(given)
            elif z > 0:
                count_std = default_count_stddev(expected)
            z = value_noise_multiplier(z, count_std)
        rng = child_rng(self.seed, "dp", round_index)
        out, norms = dp_fedavg(updates, clip_norm, z * clip_norm, expected, rng)
        self.round_record = _clip_record(clip_norm, norms)
        if adaptive:
            state["clip_norm"] = adaptive_clip_step(
                clip_norm,
                norms,
                float(params["target_quantile"]),
                float(params["clip_lr"]),
                float(count_std),
                expected,
                rng,
            )
        return out

    def step(
        self, params: np.ndarray, updates: np.ndarray, weights: np.ndarray, round_index: int
    ) -> np.ndarray:
        """One server round: aggregate the updates and apply the server optimizer."""
        agg = self.aggregate(updates, weights, round_index)
        server_state = self.state.setdefault("server", {})
        stage = self._server
        return np.asarray(stage.entry.obj(params, agg, server_state, **stage.params), np.float32)

    def _call(
        self,
        stage: _Stage,
        updates: np.ndarray,
        weights: np.ndarray,
        round_index: int,
        position: int,
    ) -> Any:
        kwargs = dict(stage.params)
        if stage.entry.extra.get("seeded"):
            kwargs["rng"] = child_rng(self.seed, "strategy", round_index, position)
        if stage.entry.extra.get("stateful"):
            kwargs["state"] = self.state.setdefault(f"stage{position}", {})
        return stage.entry.obj(updates, weights, **kwargs)


def _clip_record(clip_norm: float, norms: np.ndarray) -> dict[str, Any]:
    clipped = float(np.count_nonzero(norms > clip_norm)) / len(norms) if len(norms) else None
    return {"clip_norm": clip_norm, "clipped_fraction": clipped}


def build_strategy(
    spec: str | Mapping[str, Any], seed: int = 0, *, expected_clients: float | None = None
) -> Strategy:
    """Parse any strategy spec into a fresh :class:`Strategy` seeded from the run seed
    (``expected_clients``: clients per round on average, for central DP's estimator)."""
    table, _ = canonical_strategy(spec)
    return Strategy(table=table, seed=seed, expected_clients=expected_clients)


def aggregate(
    spec: str | Mapping[str, Any],
    updates: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Aggregate an ``(n, d)`` update matrix with the strategy ``spec`` (server step excluded).

    ``weights=None`` means equal weights. Inputs are never modified. A rule whose precondition
    fails for this ``n`` raises :class:`velocity.errors.RunError`.
    """
    matrix = np.asarray(updates)
    if matrix.ndim != 2:
        raise SpecError(f"updates must be a 2-D (n, d) array, got shape {matrix.shape}")
    matrix = matrix.astype(np.float32, copy=False)
    n = matrix.shape[0]
    if n == 0 or matrix.shape[1] == 0:
        raise SpecError(f"updates must have at least one row and one column, got {matrix.shape}")
    if weights is None:
        w = np.ones(n, dtype=np.float64)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n,):
            raise SpecError(f"weights must have shape ({n},), got {w.shape}")
        if np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
            raise SpecError("weights must be finite, >= 0 and not all zero")
    return build_strategy(spec, seed=seed).aggregate(matrix, w)
