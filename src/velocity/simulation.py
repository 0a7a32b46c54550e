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
from velocity.federation import (
    EventQueue,
    SystemModel,
    arrival_seconds,
    compress_updates,
    encoded_bytes,
    staleness_weights,
)
from velocity.federation import sample_available as _sample_available
from velocity.federation import sample_clients as _sample_clients
from velocity.models import LocalConfig, Model, RoundPlan, build_model, plan_round
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


def _plan_for(setup: RunSetup, ids: np.ndarray, cfg: LocalConfig, round_index: int) -> RoundPlan:
    """The full local work of clients ``ids`` in ``round_index`` (their shuffles from the seed
    tree), before stragglers cut it."""
    return plan_round(
        [setup.clients[k] for k in ids],
        ids,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=setup.spec.seed,
        round_index=round_index,
    )


def _round_loop(
    setup: RunSetup, rounds: list[dict[str, Any]], on_round: RoundCallback | None
) -> tuple[np.ndarray, str]:
    spec = setup.spec
    if spec.asynchronous:
        return _async_loop(setup, rounds, on_round)
    data, model = setup.data, setup.model
    cfg = _local_config(spec)
    strategy = build_strategy(spec.strategy, seed=spec.seed, expected_clients=spec.participants)
    threat, X, y = setup.threat, setup.X_train, setup.y_train
    params = setup.initial_params
    bytes_per_model = 4 * model.num_params
    bytes_up_each = encoded_bytes(spec.compression, model.num_params)
    privacy = setup.privacy
    last_round = privacy.rounds if privacy is not None else spec.rounds
    # client id -> its SGD momentum buffer after the last round it trained in (persistent).
    momenta: dict[int, np.ndarray] | None = {} if spec.client_momentum == "persistent" else None
    residuals = _residuals(spec)
    system = SystemModel(spec.system, spec.seed, spec.num_clients) if spec.system else None
    clock = _Clock(system, bytes_per_model, bytes_up_each) if system is not None else None
    for r in range(1, last_round + 1):
        t0 = time.perf_counter()
        record: dict[str, Any] = {"round": r}
        if system is None:
            ids = sample_clients(spec, r)
        else:
            available = system.available(r)
            ids = _sample_available(
                spec.client_sampling, available, spec.participants, spec.seed, r
            )
            record["available"] = int(available.sum())
            if not len(ids) and clock is not None:  # nobody drawn: no time passes
                record.update(
                    selected=0,
                    stragglers=0,
                    dropped=0,
                    late=0,
                    sim_seconds=0.0,
                    sim_time=clock.now,
                )
        strategy.round_record = {}
        train_loss: float | None = None
        attack_record: dict[str, Any] = {}
        trained = ids
        if len(ids):
            plan = _plan_for(setup, ids, cfg, r)
            if system is not None and clock is not None:
                plan, keep, system_record = _system_round(spec, system, clock, plan, r)
                record.update(system_record)
                trained = ids[keep]
            initial = None
            if momenta is not None:
                fresh = np.zeros(model.num_params, dtype=np.float32)
                initial = np.stack([momenta.get(int(k), fresh) for k in trained])
        if len(trained):
            local = model.train_round(params, X, y, plan, cfg, initial_momentum=initial)
            if momenta is not None and local.momentum is not None:
                momenta.update(
                    (int(k), local.momentum[row].copy()) for row, k in enumerate(trained)
                )
            updates = strategy.privatize(local.params - params[None, :], trained, r)
            if spec.compression:
                updates = compress_updates(
                    spec.compression, updates, trained, spec.seed, r, residuals
                )
            weights = local.num_samples.astype(np.float64)
            if threat is not None:
                updates, weights, attack_record = threat.poison_updates(
                    updates, weights, trained, r
                )
            samples = local.num_samples
            train_loss = float(np.dot(local.train_loss, samples) / samples.sum())
        else:  # no client drawn (Poisson sampling) or none arrived: nothing is sent up
            updates = np.zeros((0, model.num_params), dtype=np.float32)
            weights = np.zeros(0, dtype=np.float64)
        t1 = time.perf_counter()
        if len(trained) or strategy.central_dp:
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
            bytes_up=int(updates.shape[0]) * bytes_up_each,
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


def _local_config(spec: RunSpec) -> LocalConfig:
    return LocalConfig(
        epochs=spec.local_epochs,
        batch_size=spec.batch_size,
        lr=spec.lr,
        momentum=spec.momentum,
        weight_decay=spec.weight_decay,
        mu=spec.mu,
    )


def _residuals(spec: RunSpec) -> dict[int, np.ndarray] | None:
    """Client id -> its compression error carried forward (error feedback), else None."""
    return {} if spec.compression.get("error_feedback") else None


@dataclass
class _Clock:
    """Simulated time of a run: per-client speeds and bandwidths, and the time so far."""

    system: SystemModel
    bytes_down: int
    bytes_up: int
    now: float = 0.0
    speeds: np.ndarray = field(init=False)
    bandwidths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.speeds = self.system.speeds()
        self.bandwidths = self.system.bandwidths()

    def durations(self, ids: np.ndarray, samples_seen: np.ndarray) -> np.ndarray:
        """Simulated seconds from dispatch to arrival of each client's update."""
        return arrival_seconds(
            samples_seen,
            self.bytes_down,
            self.bytes_up,
            self.speeds[ids],
            self.bandwidths[ids],
            float(self.system["samples_per_second"]),
        )


def _system_round(
    spec: RunSpec, system: SystemModel, clock: _Clock, plan: RoundPlan, r: int
) -> tuple[RoundPlan, np.ndarray, dict[str, Any]]:
    """Apply stragglers, dropouts and the deadline to a round's full plan: the plan of the
    clients whose update counts (the others do not train: their update would be discarded),
    the mask of those clients among the round's, and the round's system record."""
    ids = plan.client_ids
    straggling = system.stragglers(r, ids)
    steps = system.straggler_steps(r, ids, plan.full_steps, straggling)
    plan = plan.with_steps(steps)
    keep = ~system.dropped(r, ids)
    dropouts = int((~keep).sum())
    if spec.partial_work == "drop":
        keep &= ~straggling
    arrival = clock.durations(ids, plan.samples_seen)
    deadline = system["deadline"]
    late = np.zeros(len(ids), dtype=bool) if deadline is None else keep & (arrival > deadline)
    keep &= ~late
    waited = float(arrival[keep].max(initial=0.0))
    if late.any():
        waited = float(deadline)  # the server waits until the deadline, then goes on
    clock.now += waited
    kept = _plan_rows(plan, np.flatnonzero(keep))
    record = {
        "selected": len(ids),
        "stragglers": int(straggling.sum()),
        "dropped": dropouts,
        "late": int(late.sum()),
        "sim_seconds": waited,
        "sim_time": clock.now,
    }
    return kept, keep, record


def _plan_rows(plan: RoundPlan, rows: np.ndarray) -> RoundPlan:
    """The plan of some of its rows, with the same batch width (so their arithmetic is exactly
    what it is in the full plan)."""
    return RoundPlan(
        tuple(plan.client_indices[i] for i in rows),
        plan.client_ids[rows],
        plan.epochs,
        plan.width,
        plan.shuffle_key,
        plan.steps[rows],
    )


@dataclass
class _InFlight:
    """An update on its way to the server: whose, from which model version, and whether it
    will count (not lost, not a dropped straggler)."""

    client: int
    version: int
    delta: np.ndarray
    base: np.ndarray
    samples: int
    loss: float
    counts: bool


def _async_loop(
    setup: RunSetup, rounds: list[dict[str, Any]], on_round: RoundCallback | None
) -> tuple[np.ndarray, str]:
    """FedBuff / FedAsync on simulated time: ``spec.rounds`` server steps. Each record is one
    server step (``round`` = its number) with its staleness and simulated time."""
    spec, model = setup.spec, setup.model
    cfg = _local_config(spec)
    protocol = spec.asynchronous
    strategy = build_strategy(spec.strategy, seed=spec.seed, expected_clients=spec.participants)
    threat, X, y = setup.threat, setup.X_train, setup.y_train
    params = setup.initial_params
    bytes_per_model = 4 * model.num_params
    bytes_up_each = encoded_bytes(spec.compression, model.num_params)
    residuals = _residuals(spec)
    system = SystemModel(spec.system, spec.seed, spec.num_clients)
    clock = _Clock(system, bytes_per_model, bytes_up_each)
    concurrency = int(protocol.get("concurrency") or spec.participants)
    buffer_size = int(protocol.get("buffer", 1))
    queue = EventQueue()
    training = np.zeros(spec.num_clients, dtype=bool)
    version, dispatches, bytes_down = 0, 0, 0
    # Stragglers and dropouts among the clients dispatched since the last server step.
    since = {"stragglers": 0, "dropped": 0}
    buffer: list[_InFlight] = []
    last_step_time = 0.0

    def dispatch(now: float) -> None:
        """Fill the free slots with clients that are reachable and not training."""
        nonlocal dispatches, bytes_down
        free = concurrency - int(training.sum())
        if free <= 0:
            return
        dispatches += 1
        d = dispatches
        idle = ~training & system.available(d)
        if not training.any() and free == spec.participants and idle.all():
            ids = sample_clients(spec, version + 1)  # a whole cohort: as a synchronous round
        else:
            pool = np.flatnonzero(idle)
            rng = child_rng(spec.seed, "async", "dispatch", d)
            ids = np.sort(rng.choice(pool, min(free, len(pool)), replace=False)).astype(np.int64)
        if not len(ids):
            return
        plan = _plan_for(setup, ids, cfg, version + 1)
        straggling = system.stragglers(d, ids, exact=False)
        plan = plan.with_steps(system.straggler_steps(d, ids, plan.full_steps, straggling))
        counts = ~system.dropped(d, ids)
        since["stragglers"] += int(straggling.sum())
        since["dropped"] += int((~counts).sum())
        if spec.partial_work == "drop":
            counts &= ~straggling
        local = model.train_round(params, X, y, plan, cfg)
        deltas = local.params - params[None, :]
        if spec.compression:
            deltas = compress_updates(spec.compression, deltas, ids, spec.seed, d, residuals)
        arrival = now + clock.durations(ids, plan.samples_seen)
        for row, k in enumerate(ids):
            update = _InFlight(
                int(k),
                version,
                deltas[row],
                params,
                int(local.num_samples[row]),
                float(local.train_loss[row]),
                bool(counts[row]),
            )
            queue.push(float(arrival[row]), int(k), update)
        training[ids] = True
        bytes_down += len(ids) * bytes_per_model

    dispatch(0.0)
    while version < spec.rounds:
        if not len(queue):
            for _ in range(1000):  # nobody reachable: try the next availability draws
                dispatch(clock.now)
                if len(queue):
                    break
            else:
                raise RuntimeError("asynchronous run stalled: no client reachable")
        events = list(queue.pop_simultaneous())
        clock.now = events[0][0]
        for _, client, update in events:
            training[client] = False
            if not update.counts:
                continue
            buffer.append(update)
            if len(buffer) < buffer_size:
                continue
            t0 = time.perf_counter()
            version += 1
            params, record = _async_step(
                spec, strategy, threat, params, buffer, version, bytes_up_each
            )
            record.update(
                bytes_down=bytes_down,
                sim_seconds=clock.now - last_step_time,
                sim_time=clock.now,
                dispatched=dispatches,
                **since,
            )
            buffer, bytes_down, last_step_time = [], 0, clock.now
            since = dict.fromkeys(since, 0)
            status = _evaluate_step(spec, setup, params, version, record, threat)
            record["round_seconds"] = time.perf_counter() - t0
            rounds.append(record)
            if on_round is not None:
                on_round(record)
            if status == "diverged" or version == spec.rounds:
                return params, status
        dispatch(clock.now)
    return params, "complete"


def _async_step(
    spec: RunSpec,
    strategy: Any,
    threat: ThreatModel | None,
    params: np.ndarray,
    buffer: list[_InFlight],
    version: int,
    bytes_up_each: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One asynchronous server step on the buffered updates; returns params and its record."""
    protocol = spec.asynchronous
    ids = np.array([u.client for u in buffer], dtype=np.int64)
    tau = np.array([version - 1 - u.version for u in buffer], dtype=np.int64)
    scale = staleness_weights(
        tau, protocol["staleness"], float(protocol["exponent"]), int(protocol["hinge"])
    )
    deltas = np.stack([u.delta for u in buffer])
    if protocol["type"] == "fedasync":
        # x <- x + alpha s(tau) (x_client - x), x_client = (model it started from) + delta.
        deltas = deltas + np.stack([u.base for u in buffer]) - params[None, :]
        scale = scale * float(protocol["mixing"])
    updates = (deltas * scale[:, None]).astype(np.float32)
    samples = np.array([u.samples for u in buffer], dtype=np.float64)
    weights = samples.copy()
    record: dict[str, Any] = {"round": version}
    attack_record: dict[str, Any] = {}
    if threat is not None:
        updates, weights, attack_record = threat.poison_updates(updates, weights, ids, version)
    t1 = time.perf_counter()
    params = strategy.step(params, updates, weights, version)
    record.update(
        train_loss=float(np.dot([u.loss for u in buffer], samples) / samples.sum()),
        num_clients=int(updates.shape[0]),
        bytes_up=int(updates.shape[0]) * bytes_up_each,
        aggregate_seconds=time.perf_counter() - t1,
        staleness_mean=float(tau.mean()),
        staleness_max=int(tau.max()),
        **attack_record,
    )
    return params, record


def _evaluate_step(
    spec: RunSpec,
    setup: RunSetup,
    params: np.ndarray,
    step: int,
    record: dict[str, Any],
    threat: ThreatModel | None,
) -> str:
    """Evaluate an asynchronous step when due (or when it diverged); ``"diverged"`` or
    ``"complete"``."""
    data, model = setup.data, setup.model
    train_loss = record.get("train_loss")
    finite = bool(np.all(np.isfinite(params))) and (train_loss is None or math.isfinite(train_loss))
    test_loss = test_accuracy = None
    evaluate = step % spec.eval_every == 0 or step == spec.rounds
    if evaluate or not finite:
        test_loss, test_accuracy = model.evaluate(params, data.X_test, data.y_test)
        if threat is not None:
            record.update(threat.evaluate(params, data.X_test, data.y_test))
    record.update(test_loss=test_loss, test_accuracy=test_accuracy)
    if not finite or (test_loss is not None and not math.isfinite(test_loss)):
        return "diverged"
    return "complete"
