"""What a run will allocate, estimated from its spec before anything is allocated.

``check_run_size(spec)`` refuses (ResourceError, one line naming the field, the estimate and
the limit) a run whose estimate is over ``velocity.limits.max_memory()``: parameters x clients x
4 bytes for local training and the update matrix, the aggregators' n x n matrices, the dataset
(known shapes, synthetic data from its client count), the per-round records and persistent
client momentum. Before the data is loaded, unknown shapes (user files) count at their smallest;
``validate_run`` checks again with the loaded data's shape, before the model is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from velocity.data import DATASETS
from velocity.limits import Estimate, check_memory
from velocity.models import MODELS, TRAIN_MEMORY_BUDGET, build_model, chunk_size_for
from velocity.spec import RunSpec

__all__ = ["DataShape", "check_run_size", "estimate_run", "synthetic_mean_client_size"]

_FLOAT32, _FLOAT64, _INT64 = 4, 8, 8
_BYTES_PER_ROUND_RECORD = 2048  # one round's record (a dict of metrics) and its CSV row
_BYTES_PER_CLIENT = 512  # a client's index array, seed child and schedule bookkeeping
_BYTES_PER_FEATURE_VALUE = _FLOAT64 + 2 * _FLOAT32  # raw float64, float32 copy, test rows


@dataclass(frozen=True)
class DataShape:
    """Samples, features and classes of a run's data (lower bounds when not yet loaded)."""

    samples: int
    features: int
    classes: int


def synthetic_mean_client_size(max_per_client: int | None) -> float:
    """Expected samples per client of Synthetic(alpha, beta): E[min(L + 50, cap)] with
    L ~ lognormal(4, 2), as ``data.datasets.synthetic_li2020`` draws them."""
    mu, sigma = 4.0, 2.0
    mean = math.exp(mu + sigma**2 / 2)
    if max_per_client is None:
        return mean + 50
    cap = max(float(max_per_client) - 50, 0.0)
    if cap <= 0:
        return float(max_per_client)

    def phi(x: float) -> float:
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    log_cap = math.log(cap)
    below = mean * phi((log_cap - mu - sigma**2) / sigma)
    return below + cap * (1 - phi((log_cap - mu) / sigma)) + 50


def _spec_shape(spec: RunSpec) -> tuple[DataShape, Estimate | None]:
    """The data's shape as far as the spec tells, and the synthetic data's own estimate."""
    dataset = spec.dataset
    entry = DATASETS.get(dataset["type"])
    shape = entry.extra.get("shape")
    if shape is not None:
        samples, features, classes = shape
        return DataShape(int(samples), int(features), int(classes)), None
    if dataset["type"] == "synthetic":
        samples = math.ceil(
            spec.num_clients * synthetic_mean_client_size(dataset["max_per_client"])
        )
        data = Estimate(
            "num_clients",
            samples * (60 * _BYTES_PER_FEATURE_VALUE + 3 * _INT64),
            f"synthetic data for {spec.num_clients} clients, about {samples} samples",
        )
        return DataShape(samples, 60, 10), data
    return DataShape(spec.num_clients, 1, 2), None  # user data: the least it can be


def estimate_run(spec: RunSpec, shape: DataShape | None = None) -> list[Estimate]:
    """The parts of a run's memory, each with the field that drives it (bytes)."""
    known, data = _spec_shape(spec)
    shape = shape or known
    estimates = [] if data is None or shape is not known else [data]
    if shape is not known:
        estimates.append(
            Estimate(
                "dataset",
                shape.samples * shape.features * _BYTES_PER_FEATURE_VALUE,
                f"{shape.samples} samples x {shape.features} features",
            )
        )
    # A torch model is not built here (that imports torch); it bounds its own chunks' memory.
    torch_model = MODELS.get(spec.model["type"]).extra.get("backend") == "torch"
    model = None if torch_model else build_model(spec.model, shape.features, max(shape.classes, 2))
    d, n = (0 if model is None else model.num_params), spec.participants
    n_field = "clients_per_round" if n < spec.num_clients else "num_clients"
    widths = shape.features + sum(getattr(model, "hidden", ())) + max(shape.classes, 2)
    batch = min(spec.batch_size, max(shape.samples, 1))
    # The round keeps the trained parameters, the update matrix and an aggregator's working
    # copy per client, plus the global model, its initialization (float64) and the server
    # optimizer's state; a training chunk holds at most TRAIN_MEMORY_BUDGET bytes.
    copies = 3 * n + 8
    estimates.append(
        Estimate(
            "model",
            d * _FLOAT32 * copies + d * 2 * _FLOAT64,
            f"{d} parameters x {copies} copies for {n} clients per round",
        )
    )
    chunk = min(n, chunk_size_for(num_params=d, width=batch, units=widths, max_steps=1))
    estimates.append(
        Estimate(
            "batch_size",
            min(TRAIN_MEMORY_BUDGET, chunk * (16 * d + 12 * batch * widths)),
            f"a training chunk of {chunk} clients x batch {batch} x {widths} units",
        )
    )
    estimates.append(
        Estimate(n_field, 3 * n * n * _FLOAT64, f"{n} x {n} distance matrices of the round")
    )
    sampled = math.ceil(shape.samples * n / spec.num_clients) + n * batch  # with padding
    estimates.append(
        Estimate(
            "local_epochs",
            2 * spec.local_epochs * sampled * _INT64,
            f"batch schedules of {spec.local_epochs} local epochs",
        )
    )
    estimates.append(
        Estimate("num_clients", spec.num_clients * _BYTES_PER_CLIENT, f"{spec.num_clients} clients")
    )
    estimates.append(
        Estimate(
            "rounds",
            spec.rounds * _BYTES_PER_ROUND_RECORD,
            f"per-round records of {spec.rounds} rounds",
        )
    )
    if spec.client_momentum == "persistent":
        estimates.append(
            Estimate(
                "client_momentum",
                spec.num_clients * d * _FLOAT32,
                f"a momentum buffer of {d} parameters for each of {spec.num_clients} clients",
            )
        )
    return estimates


def check_run_size(
    spec: RunSpec, shape: DataShape | None = None, source: str | None = None
) -> None:
    """ResourceError when the run's estimated memory is over the limit (before allocating)."""
    where = source if source is not None else f"run {spec.name!r}"
    check_memory(estimate_run(spec, shape), source=where)
