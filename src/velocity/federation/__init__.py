"""Who takes part in a round, and when: client sampling schemes (kernels on client ids).

Later parts of the federation (stragglers, availability, simulated time) build on the same
seed-tree conventions: every draw for round ``r`` comes from ``child_rng(seed, "sample", r)``.
"""

from velocity.federation.sampling import (
    CLIENT_SAMPLINGS,
    ClientSampler,
    client_sampler,
    poisson_sample,
    sample_clients,
    sampling_rate,
    uniform_fixed_size_sample,
)

__all__ = [
    "CLIENT_SAMPLINGS",
    "ClientSampler",
    "client_sampler",
    "poisson_sample",
    "sample_clients",
    "sampling_rate",
    "uniform_fixed_size_sample",
]
