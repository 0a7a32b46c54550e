"""Who takes part in a round, and when: client sampling, system heterogeneity (stragglers,
availability, dropouts, speeds), simulated time, asynchronous protocols and upload compression.

Every draw comes from the run's seed tree (``child_rng(seed, "sample", r)``, ``("system", ...)``,
``("compress", r)``), so the federation is part of a run's deterministic identity.
"""

from velocity.federation.asynchronous import (
    ASYNC_PROTOCOLS,
    STALENESS_FUNCTIONS,
    EventQueue,
    staleness_weights,
)
from velocity.federation.compression import (
    COMPRESSORS,
    compress_updates,
    encoded_bytes,
    qsgd_quantize,
    topk_sparsify,
)
from velocity.federation.sampling import (
    CLIENT_SAMPLINGS,
    ClientSampler,
    client_sampler,
    poisson_sample,
    sample_available,
    sample_clients,
    sampling_rate,
    uniform_fixed_size_sample,
)
from velocity.federation.system import (
    AVAILABILITY_MODELS,
    SYSTEM_PARAMS,
    SystemModel,
    arrival_seconds,
    canonical_system,
)

__all__ = [
    "ASYNC_PROTOCOLS",
    "AVAILABILITY_MODELS",
    "CLIENT_SAMPLINGS",
    "COMPRESSORS",
    "STALENESS_FUNCTIONS",
    "SYSTEM_PARAMS",
    "ClientSampler",
    "EventQueue",
    "SystemModel",
    "arrival_seconds",
    "canonical_system",
    "client_sampler",
    "compress_updates",
    "encoded_bytes",
    "poisson_sample",
    "qsgd_quantize",
    "sample_available",
    "sample_clients",
    "sampling_rate",
    "staleness_weights",
    "topk_sparsify",
    "uniform_fixed_size_sample",
]
