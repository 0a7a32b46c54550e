"""One federated run: rounds of sample -> local training -> attack -> aggregate -> evaluate.

``run_simulation(spec)`` is a pure function of the RunSpec on a given platform: every random draw
comes from the spec's seed tree and BLAS runs on one thread. It knows nothing of sweeps or files.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from velocity.attacks import ThreatModel, bind_attacks, draw_malicious_clients
from velocity.data import FederatedDataset, load_dataset, partition
from velocity.errors import InputError
from velocity.federation import sample_clients as _sample_clients
from velocity.models import LocalConfig, Model, build_model, plan_round
from velocity.privacy import central_epsilons, local_epsilons, privacy_stage_of
from velocity.records import final_metrics, rounds_columns, summarize_run, utc_now
from velocity.seeds import child_rng
from velocity.sizing import DataShape, check_run_size
from velocity.spec import RunSpec
from velocity.strategies import build_strategy

__all__ = [
    "PrivacyPlan",
    "RunResult",
    "RunSetup",
    "build_threat_model",
    "plan_privacy",
    "run_simulation",
    "sample_clients",
    "validate_run",
    "validate_runs",
]

RoundCallback = Callable[[dict[str, Any]], None]


@dataclass
class RunResult:
    """Outcome of one run: status, per-round records, final parameters and timings."""

    spec: RunSpec
    status: str  # "complete" | "diverged" | "failed"
    error: str | None
    rounds: list[dict[str, Any]]
    final_params: np.ndarray | None
    started_at: str
    finished_at: str
    wall_seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def final_metrics(self) -> dict[str, Any]:
        """The last evaluated round's metrics ({} when no round ran)."""
        return final_metrics(self.rounds)

    def summary(self) -> dict[str, Any]:
        """The content of the run's summary.json."""
        return summarize_run(
            name=self.spec.name,
            fingerprint=self.spec.fingerprint,
            status=self.status,
            error=self.error,
            rounds=self.rounds,
            started_at=self.started_at,
            finished_at=self.finished_at,
            wall_seconds=self.wall_seconds,
            details=self.details,
        )

    def to_frame(self) -> Any:
        """The per-round records as a pandas DataFrame, one row per round (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise InputError("RunResult.to_frame() needs pandas: pip install pandas") from None
        return pd.DataFrame.from_records(self.rounds, columns=rounds_columns(self.rounds))

    @classmethod
    def failed(cls, spec: RunSpec, error: str, started_at: str, wall_seconds: float) -> RunResult:
        """A run that ended before its first round (e.g. its worker could not run it)."""
        return cls(
            spec=spec,
            status="failed",
            error=error,
            rounds=[],
            final_params=None,
            started_at=started_at,
            finished_at=utc_now(),
            wall_seconds=wall_seconds,
        )


@dataclass(frozen=True)
class PrivacyPlan:
    """A private run's budget, known before round 1 (it depends on the spec, not the data):
    ``epsilons[r - 1]`` at ``delta`` after round r, for the ``rounds`` rounds the run will run
    (fewer than the spec's when ``target_epsilon`` would be exceeded)."""

    accountant: str
    delta: float
    epsilons: tuple[float, ...]
    rounds: int

    @property
    def stopped_early(self) -> bool:
        return self.rounds < len(self.epsilons)


def plan_privacy(spec: RunSpec) -> PrivacyPlan | None:
    """The privacy plan of ``spec`` (None without a privacy stage). Central DP accounts the
    sampled Gaussian rounds; local DP the rounds the most-sampled client took part in.

    Raises InputError when dp-accounting is missing or the target epsilon is spent before the
    first round.
    """
    stage = privacy_stage_of(spec.strategy)
    delta = spec.privacy_delta
    if stage is None or delta is None:
        return None
    z = float(stage["noise_multiplier"])
    if stage["type"] == "dp":
        epsilons = central_epsilons(
            spec.accountant,
            spec.client_sampling,
            spec.num_clients,
            spec.participants,
            z,
            delta,
            spec.rounds,
        )
    else:
        participations = np.zeros(spec.num_clients, dtype=np.int64)
        most = []
        for r in range(1, spec.rounds + 1):
            participations[sample_clients(spec, r)] += 1
            most.append(int(participations.max()))
        by_count = local_epsilons(spec.accountant, z, delta, most[-1])
        epsilons = tuple(by_count[c] for c in most)
    rounds = spec.rounds
    if spec.target_epsilon is not None:
        rounds = sum(1 for eps in epsilons if eps <= spec.target_epsilon)
        if rounds == 0:
            raise InputError(
                f"target_epsilon {spec.target_epsilon:g} is spent before the first round ends "
                f"(epsilon after round 1: {epsilons[0]:.4g} at delta {delta:.3g})"
            )
    return PrivacyPlan(spec.accountant, delta, epsilons, rounds)


@dataclass
class RunSetup:
    """Everything a run needs before its first round, checked against its data: the split
    data, the partition, the model, initial parameters, the bound threat model and the training
    arrays after data poisoning."""

    spec: RunSpec
    data: FederatedDataset
    clients: list[np.ndarray]
    model: Model
    initial_params: np.ndarray
    threat: ThreatModel | None
    X_train: np.ndarray
    y_train: np.ndarray
    privacy: PrivacyPlan | None = None


def validate_run(spec: RunSpec, *, data: FederatedDataset | None = None) -> RunSetup:
    """Check ``spec`` against its data and prepare it: load and split the data, partition it,
    build the model, draw initial parameters, bind the attacks and poison the malicious clients'
    data. Everything a run can be refused for is found here, before round 1.

    Raises InputError when the spec cannot run on its data (a missing file, more clients than
    samples, an attack's class or trigger outside this dataset). ``data``: the spec's dataset
    when the caller already loaded it (``_dataset_key`` equal), not loaded again.
    """
    check_run_size(spec)  # before any allocation: from the spec alone
    if data is None:
        data = _load_data(spec)
    shape = DataShape(len(data.y_train) + len(data.y_test), data.num_features, data.num_classes)
    check_run_size(spec, shape)  # with the loaded data's shape, before the model is built
    clients = partition(
        spec.partition,
        data.y_train,
        spec.num_clients,
        child_rng(spec.seed, "partition"),
        data.groups_train,
    )
    model = build_model(
        spec.model,
        data.num_features,
        data.num_classes,
        input_shape=data.input_shape,
        device=spec.device,
    )
    params = model.init(child_rng(spec.seed, "init"))
    threat = build_threat_model(spec, data, clients, model) if spec.attacks else None
    X, y = data.X_train, data.y_train
    if threat is not None:
        X, y = threat.poison_data(X, y)
    privacy = plan_privacy(spec)
    return RunSetup(spec, data, clients, model, params, threat, X, y, privacy)


def _load_data(spec: RunSpec) -> FederatedDataset:
    """The run's dataset, loaded, split and standardized (its user files checked by sha256)."""
    return load_dataset(
        spec.dataset, seed=spec.seed, num_clients=spec.num_clients, data_files=spec.data_files
    )


def _dataset_key(spec: RunSpec) -> tuple[str, str, int, int]:
    """What a run's loaded dataset depends on: two runs with one key load the same arrays."""
    files = json.dumps(spec.data_files, sort_keys=True)
    return json.dumps(spec.dataset, sort_keys=True), files, spec.seed, spec.num_clients


def validate_runs(specs: Sequence[RunSpec]) -> None:
    """:func:`validate_run` every spec before any of them runs: InputError naming the first
    run that cannot run on its data.

    Runs that share a dataset, seed and client count share one load (most of the cost), one
    such group at a time, so even a sweep of hundreds of runs starts within a second. An error
    other than bad input (a crash) is left for the run itself to record as its failure.
    """
    groups: dict[tuple[str, str, int, int], list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(_dataset_key(spec), []).append(spec)
    for group in groups.values():
        data: FederatedDataset | None = None
        for spec in group:
            try:
                if data is None:
                    data = _load_data(spec)
                validate_run(spec, data=data)
            except InputError as exc:
                raise InputError(f"run {spec.name!r}: {exc}") from None
            except Exception:  # not bad input: the run records it as its failure when it runs
                continue


def sample_clients(spec: RunSpec, round_index: int) -> np.ndarray:
    """The sorted client ids taking part in ``round_index`` (1-based), drawn by the spec's
    ``client_sampling`` scheme (velocity.federation.sampling)."""
    return _sample_clients(
        spec.client_sampling, spec.num_clients, spec.participants, spec.seed, round_index
    )


def build_threat_model(
    spec: RunSpec, data: FederatedDataset, clients: list[np.ndarray], model: Model
) -> ThreatModel:
    """Bind a run's attacks to its data and clients; the malicious set comes from the seed tree."""
    return ThreatModel(
        seed=spec.seed,
        malicious_clients=draw_malicious_clients(spec.seed, spec.num_clients, int(spec.byzantine)),
        client_indices=list(clients),
        attacks=bind_attacks(spec.attacks),
        num_classes=data.num_classes,
        predict=model.predict,
    )


def run_simulation(
    spec: RunSpec, *, on_round: RoundCallback | None = None, setup: RunSetup | None = None
) -> RunResult:
    """Run ``spec`` to the end. Bad input raises InputError before any round; any other error
    (during set-up, e.g. out of memory, or in a round) ends the run with status ``failed``; a
    non-finite loss ends it as ``diverged``. ``setup`` is ``validate_run(spec)`` when the caller
    already checked it; it is not prepared again.
    """
    if setup is not None and setup.spec != spec:
        raise ValueError("setup was prepared for another spec")
    started_at, t_start = utc_now(), time.perf_counter()
    rounds: list[dict[str, Any]] = []
    status, error = "complete", None
    params: np.ndarray | None = None
    details: dict[str, Any] = {}
    # Overflow is how divergence shows up; it is recorded as the run's status, not warned about.
    with threadpool_limits(limits=1), np.errstate(over="ignore", invalid="ignore"):
        try:
            setup = setup if setup is not None else validate_run(spec)
            details["num_params"] = setup.model.num_params
            details["device"] = getattr(setup.model, "device_name", "cpu")
            if setup.privacy is not None and setup.privacy.stopped_early:
                details["stopped"] = "target_epsilon"
            params, status = _round_loop(setup, rounds, on_round)
        except InputError:
            raise
        except Exception as exc:  # a run that raises is a recorded result, not a crash
            status = "failed"
            error = f"{type(exc).__name__}: {exc}"
            details["traceback"] = traceback.format_exc(limit=8)
            params = None
    return RunResult(
        spec=spec,
        status=status,
        error=error,
        rounds=rounds,
        final_params=params,
        started_at=started_at,
        finished_at=utc_now(),
        wall_seconds=time.perf_counter() - t_start,
        details=details,
    )


def _round_loop(
    setup: RunSetup, rounds: list[dict[str, Any]], on_round: RoundCallback | None
) -> tuple[np.ndarray, str]:
    spec, data, model = setup.spec, setup.data, setup.model
    cfg = LocalConfig(
        epochs=spec.local_epochs,
        batch_size=spec.batch_size,
        lr=spec.lr,
        momentum=spec.momentum,
        weight_decay=spec.weight_decay,
        mu=spec.mu,
    )
    strategy = build_strategy(spec.strategy, seed=spec.seed, expected_clients=spec.participants)
    threat, X, y = setup.threat, setup.X_train, setup.y_train
    params = setup.initial_params
    bytes_per_model = 4 * model.num_params
    privacy = setup.privacy
    last_round = privacy.rounds if privacy is not None else spec.rounds
    # client id -> its SGD momentum buffer after the last round it trained in (persistent).
    momenta: dict[int, np.ndarray] | None = {} if spec.client_momentum == "persistent" else None
    for r in range(1, last_round + 1):
        t0 = time.perf_counter()
        ids = sample_clients(spec, r)
        record: dict[str, Any] = {"round": r}
        strategy.round_record = {}
        train_loss: float | None = None
        attack_record: dict[str, Any] = {}
        if len(ids):
            initial = None
            if momenta is not None:
                fresh = np.zeros(model.num_params, dtype=np.float32)
                initial = np.stack([momenta.get(int(k), fresh) for k in ids])
            plan = plan_round(
                [setup.clients[k] for k in ids],
                ids,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                seed=spec.seed,
                round_index=r,
            )
            local = model.train_round(params, X, y, plan, cfg, initial_momentum=initial)
            if momenta is not None and local.momentum is not None:
                momenta.update((int(k), local.momentum[row].copy()) for row, k in enumerate(ids))
            updates = strategy.privatize(local.params - params[None, :], ids, r)
            weights = local.num_samples.astype(np.float64)
            if threat is not None:
                updates, weights, attack_record = threat.poison_updates(updates, weights, ids, r)
            samples = local.num_samples
            train_loss = float(np.dot(local.train_loss, samples) / samples.sum())
        else:  # Poisson sampling drew no client: nothing is sent up
            updates = np.zeros((0, model.num_params), dtype=np.float32)
            weights = np.zeros(0, dtype=np.float64)
        t1 = time.perf_counter()
        if len(ids) or strategy.central_dp:
            # Central DP releases a (noise-only) aggregate even in an empty round, as analysed.
            params = strategy.step(params, updates, weights, r)
        aggregate_seconds = time.perf_counter() - t1
        evaluate = r % spec.eval_every == 0 or r == last_round
        test_loss = test_accuracy = None
        finite = bool(np.all(np.isfinite(params))) and (
            train_loss is None or math.isfinite(train_loss)
        )
        if evaluate or not finite:
            test_loss, test_accuracy = model.evaluate(params, data.X_test, data.y_test)
        record.update(
            test_loss=test_loss,
            test_accuracy=test_accuracy,
            train_loss=train_loss,
            num_clients=int(updates.shape[0]),
            bytes_up=int(updates.shape[0]) * bytes_per_model,
            bytes_down=len(ids) * bytes_per_model,
            aggregate_seconds=aggregate_seconds,
        )
        if privacy is not None:
            record.update(strategy.round_record)
            record.update(epsilon=privacy.epsilons[r - 1], delta=privacy.delta)
        if threat is not None:
            record.update(attack_record)
            if evaluate or not finite:
                metrics = threat.evaluate(params, data.X_test, data.y_test)
                if test_accuracy is not None and math.isnan(test_accuracy):
                    # Non-finite scores predict nothing: no attack succeeded or failed either.
                    metrics = {key: math.nan for key in metrics}
                record.update(metrics)
        record["round_seconds"] = time.perf_counter() - t0
        rounds.append(record)
        if on_round is not None:
            on_round(record)
        if not finite or (test_loss is not None and not math.isfinite(test_loss)):
            return params, "diverged"
    return params, "complete"
