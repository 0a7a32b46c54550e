"""The privacy stages a strategy chain may start with: central DP (``dp``, DP-FedAvg on the
server) and local DP (``ldp``, a client-side recipe applied before upload).

``"dp:noise_multiplier=1.0,clip_norm=1.0 > mean > momentum"`` clips every update, sums them,
adds Gaussian noise of std ``noise_multiplier * clip_norm`` to the sum and divides by the
expected number of clients; ``target_quantile`` turns on adaptive clipping (Andrew et al.).
``"ldp:noise_multiplier=0.5,clip_norm=1.0 > krum:f=2"`` clips and noises each client's update
before it is sent, so any aggregator can follow. Accounting: velocity.privacy.accounting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from velocity.errors import SpecError
from velocity.registry import Param, Registry

__all__ = ["PRIVACY_STAGES", "PrivacyStage", "is_central", "is_local", "privacy_stage_of"]


@dataclass(frozen=True)
class PrivacyStage:
    """Where a privacy stage runs: ``"server"`` (central DP, in place of the aggregator's
    plain mean) or ``"client"`` (local DP, on each update before upload)."""

    side: str


PRIVACY_STAGES: Registry[PrivacyStage] = Registry("privacy stage")

_NOISE = Param(
    "noise_multiplier",
    float,
    1.0,
    "Gaussian noise std as a multiple of clip_norm (0: clipping only, no privacy)",
    low=0.0,
)
_CLIP = Param(
    "clip_norm",
    float,
    1.0,
    "L2 norm every update is clipped to (adaptive clipping: the first round's norm)",
    low=0.0,
    low_open=True,
)

_ADAPTIVE_ONLY = ("clip_lr", "count_stddev")


def _normalize_dp(params: dict[str, Any]) -> dict[str, Any]:
    if params.get("target_quantile") is None:
        given = [k for k in _ADAPTIVE_ONLY if params.get(k) is not None]
        if given:
            raise SpecError(
                f"privacy stage 'dp': parameter '{given[0]}' is for adaptive clipping; give "
                "target_quantile too (e.g. dp:noise_multiplier=1.0,target_quantile=0.5)"
            )
        return params
    out = dict(params)
    if out.get("clip_lr") is None:
        out["clip_lr"] = 0.2
    return out


PRIVACY_STAGES.register(
    "dp",
    params=(
        _NOISE,
        _CLIP,
        Param(
            "target_quantile",
            float,
            None,
            "adaptive clipping: the fraction of updates left unclipped that the norm tracks",
            low=0.0,
            high=1.0,
            low_open=True,
            high_open=True,
            nullable=True,
        ),
        Param(
            "clip_lr",
            float,
            None,
            "adaptive clipping: learning rate of the geometric norm update (default 0.2)",
            low=0.0,
            low_open=True,
            nullable=True,
        ),
        Param(
            "count_stddev",
            float,
            None,
            "adaptive clipping: noise std of the clipped count (default expected clients / 20)",
            low=0.0,
            nullable=True,
        ),
    ),
    summary="Central DP (DP-FedAvg): clip each update, Gaussian noise on the sum, divide by the "
    "expected number of clients; target_quantile for adaptive clipping.",
    paper="McMahan et al., ICLR 2018; Andrew et al., NeurIPS 2021 (adaptive)",
    cost="O(n d)",
    normalize=_normalize_dp,
)(PrivacyStage("server"))

PRIVACY_STAGES.register(
    "ldp",
    params=(_NOISE, _CLIP),
    summary="Local DP: each client clips its update and adds its own Gaussian noise "
    "(std noise_multiplier * clip_norm) before upload; any aggregator may follow.",
    paper="e.g. Truex et al., 2020; Guerraoui et al., 'DP and Byzantine resilience', ICML 2021",
    cost="O(n d)",
)(PrivacyStage("client"))


def privacy_stage_of(table: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The privacy stage of a canonical strategy table (None without one)."""
    stage = table.get("privacy")
    return stage if isinstance(stage, Mapping) else None


def is_central(table: Mapping[str, Any]) -> bool:
    """Whether a canonical strategy table runs central DP (``dp``)."""
    stage = privacy_stage_of(table)
    return stage is not None and stage.get("type") == "dp"


def is_local(table: Mapping[str, Any]) -> bool:
    """Whether a canonical strategy table runs local DP (``ldp``)."""
    stage = privacy_stage_of(table)
    return stage is not None and stage.get("type") == "ldp"
