"""Differential privacy: central DP-FedAvg and local DP as strategy stages, their kernels, and
accounting with Google's dp-accounting (the optional ``privacy`` extra). See docs/privacy.md.
"""

from velocity.privacy.accounting import (
    ACCOUNTANTS,
    INSTALL_HINT,
    accounting_problem,
    central_epsilons,
    default_delta,
    local_epsilons,
    require_dp_accounting,
    round_event,
)
from velocity.privacy.mechanisms import (
    adaptive_clip_step,
    clip_to_norm,
    default_count_stddev,
    dp_fedavg,
    local_dp,
    update_norms,
    value_noise_multiplier,
)
from velocity.privacy.stages import (
    PRIVACY_STAGES,
    PrivacyStage,
    is_central,
    is_local,
    privacy_stage_of,
)

__all__ = [
    "ACCOUNTANTS",
    "INSTALL_HINT",
    "PRIVACY_STAGES",
    "PrivacyStage",
    "accounting_problem",
    "adaptive_clip_step",
    "central_epsilons",
    "clip_to_norm",
    "default_count_stddev",
    "default_delta",
    "dp_fedavg",
    "is_central",
    "is_local",
    "local_dp",
    "local_epsilons",
    "privacy_stage_of",
    "require_dp_accounting",
    "round_event",
    "update_norms",
    "value_noise_multiplier",
]
