"""RunSpec: the frozen, validated description of one federated run, and its TOML loading.

Component fields (dataset, partition, model, strategy, attacks) are written as short spec strings
or tables and stored in canonical table form (defaults filled), so the canonical JSON, and the
fingerprint hashed from it, do not depend on how a value was spelled.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from velocity.attacks import ATTACKS, canonical_attack
from velocity.data import DATASETS, PARTITIONERS
from velocity.datafiles import hash_record, reading_recorded, valid_record
from velocity.errors import InputError, SpecError
from velocity.federation import (
    ASYNC_PROTOCOLS,
    CLIENT_SAMPLINGS,
    COMPRESSORS,
    canonical_system,
)
from velocity.models import MODELS, model_plugin_refs
from velocity.plugins import load_plugins
from velocity.privacy import (
    ACCOUNTANTS,
    PRIVACY_STAGES,
    accounting_problem,
    default_count_stddev,
    default_delta,
    privacy_stage_of,
    value_noise_multiplier,
)
from velocity.records import run_name_problem
from velocity.registry import Entry, Registry, format_component, parse_component
from velocity.strategies import (
    AGGREGATORS,
    PRE_AGGREGATORS,
    SERVER_OPTIMIZERS,
    canonical_strategy,
)

__all__ = [
    "RunSpec",
    "format_validation_error",
    "load_toml",
    "spec_from_mapping",
    "spec_toml",
]

_COMPONENT_REGISTRIES: dict[str, Registry[Any]] = {
    "dataset": DATASETS,
    "partition": PARTITIONERS,
    "model": MODELS,
}


def _strategy_writes_mu(strategy: Any) -> bool:
    """Whether a (preset) strategy spec spells out ``mu`` itself."""
    if isinstance(strategy, Mapping):
        return "mu" in strategy
    if isinstance(strategy, str) and ">" not in strategy:
        return "mu" in parse_component(strategy, "strategy")[1]
    return False


_OMITTED_AT_DEFAULT: dict[str, Any] = {
    "plugins": [],
    "data_files": [],
    "client_momentum": "reset",
    "client_sampling": "fixed",
    "accountant": "rdp",
    "delta": None,
    "target_epsilon": None,
    "system": {},
    "partial_work": None,
    "asynchronous": {},
    "compression": {},
    "device": "cpu",
}
"""Fields added after the first schema, left out of the canonical JSON at their default so the
runs written before them keep their canonical form and fingerprint."""
_PRIVACY_FIELDS = ("accountant", "delta", "target_epsilon")


def _no_attack(value: Any) -> bool:
    """``None``, ``""`` or ``"none"`` in any case: no attack."""
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))


class _SpecMeta(type(BaseModel)):  # type: ignore[misc]
    """``RunSpec(...)`` raises a one-line SpecError naming the field (``model_validate`` keeps
    pydantic's ValidationError, which callers format with their own source)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise SpecError(format_validation_error(exc, cls.__name__)) from None


class RunSpec(BaseModel, metaclass=_SpecMeta):
    """One run. Unknown fields are rejected; every value is validated; instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    name: str = "run"
    dataset: dict[str, Any] = Field(default="digits", description="dataset spec")  # type: ignore[arg-type]
    partition: dict[str, Any] = Field(default="iid", description="partition spec")  # type: ignore[arg-type]
    num_clients: int = Field(default=10, gt=0)
    clients_per_round: int | None = Field(default=None, gt=0)
    rounds: int = Field(default=30, gt=0)
    local_epochs: int = Field(default=1, gt=0)
    batch_size: int = Field(default=32, gt=0)
    lr: float = Field(default=0.05, gt=0, allow_inf_nan=False)
    momentum: float = Field(default=0.9, ge=0, lt=1, allow_inf_nan=False)
    weight_decay: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    model: dict[str, Any] = Field(default="mlp", description="model spec")  # type: ignore[arg-type]
    strategy: dict[str, Any] = Field(default="fedavg", description="strategy spec")  # type: ignore[arg-type]
    mu: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    seed: int = Field(default=0, ge=0, lt=2**63)
    eval_every: int = Field(default=1, gt=0)
    byzantine: int | float = Field(default=0, ge=0)
    attacks: list[dict[str, Any]] = Field(default_factory=list)
    plugins: list[dict[str, str]] = Field(default_factory=list)
    data_files: list[dict[str, str]] = Field(default_factory=list)
    client_momentum: Literal["reset", "persistent"] = "reset"
    client_sampling: str = Field(default="fixed", description="client sampling scheme")
    accountant: str = Field(default="rdp", description="privacy accountant: rdp or pld")
    delta: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)
    target_epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    system: dict[str, Any] = Field(default_factory=dict, description="system heterogeneity")
    partial_work: Literal["drop", "keep"] | None = None
    asynchronous: dict[str, Any] = Field(default_factory=dict, description="async protocol")
    compression: dict[str, Any] = Field(default_factory=dict, description="upload compression")
    # Where a torch model computes; not part of the run's identity (see ``canonical``).
    device: Literal["cpu", "cuda", "auto"] = "cpu"

    @model_validator(mode="before")
    @classmethod
    def _merge_aliases(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        # torch_module's file or module is a plug-in: hashed, archived, reloaded by reproduce.
        needed = model_plugin_refs(data.get("model"), data.get("plugins", []))
        if needed:
            data["plugins"] = [*data.get("plugins", []), *needed]
        if "plugins" in data:
            # Loaded first: the components below may name what a plug-in registers.
            try:
                data["plugins"] = [p.record for p in load_plugins(data["plugins"])]
            except InputError as exc:
                raise ValueError(f"plugins: {exc}") from None
        if "attack" in data:
            if "attacks" in data:
                raise ValueError("give either 'attack' or 'attacks', not both")
            attack = data.pop("attack")
            data["attacks"] = [] if _no_attack(attack) else [attack]
        strategy = data.get("strategy", "fedavg")
        try:
            table, preset_mu = canonical_strategy(strategy)
        except SpecError as exc:
            raise ValueError(f"strategy: {exc}") from None
        data["strategy"] = table
        if preset_mu is not None:
            # A preset's mu is a default unless the strategy spec wrote it; the run's own
            # ``mu`` (even 0) wins over a default and must agree with a written one.
            given = data.get("mu")
            if given is None:
                data["mu"] = preset_mu
            elif _strategy_writes_mu(strategy) and given != preset_mu:
                raise ValueError(
                    f"strategy sets mu={preset_mu} but the run sets mu={given}; give it once"
                )
        return data

    @field_validator(
        "num_clients",
        "clients_per_round",
        "rounds",
        "local_epochs",
        "batch_size",
        "lr",
        "momentum",
        "weight_decay",
        "mu",
        "seed",
        "eval_every",
        "delta",
        "target_epsilon",
        mode="before",
    )
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        # pydantic's lax mode reads true as 1 and "7" as 7: in a spec file both are mistakes.
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {str(value).lower()}")
        if isinstance(value, str):
            raise ValueError(f"expected a number, got the string {value!r}")
        return value

    @field_validator("system", mode="before")
    @classmethod
    def _check_system(cls, value: Any) -> dict[str, Any]:
        try:
            return canonical_system({} if value is None else value)
        except SpecError as exc:
            raise ValueError(str(exc).removeprefix("system: ")) from None

    @field_validator("asynchronous", "compression", mode="before")
    @classmethod
    def _check_optional_component(cls, value: Any, info: Any) -> dict[str, Any]:
        if _no_attack(value) or value == {}:
            return {}  # none: synchronous rounds, uncompressed uploads
        registry = ASYNC_PROTOCOLS if info.field_name == "asynchronous" else COMPRESSORS
        try:
            return registry.canonical(value)
        except SpecError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("client_sampling")
    @classmethod
    def _check_sampling(cls, value: str) -> str:
        if value not in CLIENT_SAMPLINGS.names():
            raise ValueError(f"must be one of {', '.join(CLIENT_SAMPLINGS.names())}, got {value!r}")
        return value

    @field_validator("accountant")
    @classmethod
    def _check_accountant(cls, value: str) -> str:
        if value not in ACCOUNTANTS:
            raise ValueError(f"must be one of {', '.join(ACCOUNTANTS)}, got {value!r}")
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        problem = run_name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("dataset", "partition", "model", mode="before")
    @classmethod
    def _check_component(cls, value: Any, info: Any) -> dict[str, Any]:
        try:
            return _COMPONENT_REGISTRIES[info.field_name].canonical(value)
        except SpecError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("attacks", mode="before")
    @classmethod
    def _check_attacks(cls, value: Any) -> list[dict[str, Any]]:
        if isinstance(value, str | Mapping):
            value = [value]
        if not isinstance(value, Sequence):
            raise ValueError("attacks must be a list of attack specs")
        try:
            return [canonical_attack(v) for v in value if not _no_attack(v)]
        except SpecError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("byzantine", mode="before")
    @classmethod
    def _check_byzantine(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("byzantine is a fraction in [0, 1) or a client count")
        if isinstance(value, str):  # the rule of every numeric field: a string is a mistake
            raise ValueError(f"expected a number, got the string {value!r}")
        if isinstance(value, float) and value >= 1:
            if not value.is_integer():
                raise ValueError(f"byzantine is a fraction in [0, 1) or a whole count, got {value}")
            return int(value)
        return value

    @field_validator("data_files", mode="before")
    @classmethod
    def _check_data_files(cls, value: Any) -> Any:
        if not isinstance(value, list) or not all(valid_record(r) for r in value):
            raise ValueError(
                "data_files is a list of {path, sha256} records of the files the dataset reads"
            )
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _resolve_counts(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> RunSpec:
        """Store ``clients_per_round`` and ``byzantine`` as the counts the run uses.

        A spec given as "all clients" or "a fraction malicious" is validated once as given, then
        once more with the counts it resolves to, so the frozen model is never mutated.
        """
        spec = handler(data)
        resolved: dict[str, Any] = spec._resolved_counts()
        resolved.update(spec._resolved_privacy())
        resolved["plugins"] = spec._plugins_used()
        resolved["data_files"] = spec._data_files_used()
        resolved["partial_work"] = spec._resolved_partial_work()
        if spec.client_momentum == "persistent" and spec.momentum == 0:
            raise ValueError(
                "client_momentum = 'persistent' carries the client SGD momentum buffer across "
                "rounds; with momentum = 0 there is none: set momentum > 0"
            )
        if all(getattr(spec, key) == value for key, value in resolved.items()):
            return spec
        return handler({**spec.model_dump(), **resolved})

    def _components(self) -> list[tuple[str, Entry[Any]]]:
        """``(kind, registry entry)`` of every component the run uses."""
        strategy = self.strategy
        found: list[tuple[str, Entry[Any]]] = [
            ("dataset", DATASETS.get(self.dataset["type"])),
            ("partition", PARTITIONERS.get(self.partition["type"])),
            ("model", MODELS.get(self.model["type"])),
            *(("pre-aggregator", PRE_AGGREGATORS.get(p["type"])) for p in strategy["pre"]),
            ("aggregator", AGGREGATORS.get(strategy["aggregator"]["type"])),
            ("server optimizer", SERVER_OPTIMIZERS.get(strategy["server"]["type"])),
        ]
        found += [("attack", ATTACKS.get(a["type"])) for a in self.attacks]
        privacy = privacy_stage_of(strategy)
        if privacy is not None:
            found.append(("privacy stage", PRIVACY_STAGES.get(privacy["type"])))
        return found

    def _plugins_used(self) -> list[dict[str, str]]:
        """The declared plug-ins plus those whose components the run uses; a component defined
        outside velocity and outside any plug-in has no source to travel with the run."""
        records = [dict(r) for r in self.plugins]
        for kind, entry in self._components():
            if entry.plugin is not None:
                if dict(entry.plugin) not in records:
                    records.append(dict(entry.plugin))
            elif not entry.builtin:
                raise ValueError(
                    f"{kind} '{entry.name}' is defined in module '{entry.origin}', not in a "
                    "plug-in: put it in a file and name it in plugins = [...] (or --plugin "
                    "FILE), so its source is part of the run's identity and travels with it"
                )
        return records

    def _data_files_used(self) -> list[dict[str, str]]:
        """The records of the user files the dataset reads: kept when given, else made by
        hashing the file now; specs read back from records (sweep folders, archives, tasks)
        must carry them, and no path they name is read."""
        entry = DATASETS.get(self.dataset["type"])
        paths = [self.dataset[p] for p in entry.extra.get("user_files", ()) if self.dataset.get(p)]
        given = {r["path"]: dict(r) for r in self.data_files}
        records = []
        for path in paths:
            record = given.pop(path, None)
            if record is None:
                if reading_recorded():
                    raise ValueError(
                        f"dataset reads {path!r} but the spec records no sha256 for it "
                        "(data_files); velocity cannot tell which data the run used"
                    )
                try:
                    record = hash_record(path)
                except InputError as exc:
                    raise ValueError(f"dataset: {exc}") from None
            records.append(record)
        if given:
            raise ValueError(
                f"data_files names {next(iter(given))!r}, a file the dataset does not read"
            )
        return records

    def _resolved_counts(self) -> dict[str, int]:
        cpr = self.clients_per_round
        if cpr is None:
            cpr = self.num_clients
        elif cpr > self.num_clients:
            raise ValueError(
                f"clients_per_round ({cpr}) must be <= num_clients ({self.num_clients})"
            )
        count = self.byzantine_count
        if not self.attacks:
            count = 0
        elif count == 0:
            raise ValueError("attacks need malicious clients: set byzantine (a fraction or count)")
        if count >= self.num_clients:
            raise ValueError(
                f"byzantine clients ({count}) must be fewer than num_clients ({self.num_clients})"
            )
        if self.partition["type"] == "natural" and not DATASETS.get(self.dataset["type"]).extra.get(
            "natural"
        ):
            natural = ", ".join(e.name for e in DATASETS if e.extra.get("natural"))
            raise ValueError(
                f"partition 'natural' needs a dataset with its own clients ({natural})"
            )
        return {"clients_per_round": cpr, "byzantine": count}

    def _resolved_partial_work(self) -> str | None:
        """``partial_work`` as the run uses it: None without stragglers (it changes nothing);
        else as given, by default ``keep`` for a proximal strategy (mu > 0, FedProx) and
        ``drop`` for the others, as in Li et al. (MLSys 2020)."""
        system, asynchronous = self.system, self.asynchronous
        private = privacy_stage_of(self.strategy) is not None
        if asynchronous:
            for field, problem in (
                ("strategy", private and "a dp/ldp strategy (its accounting assumes rounds)"),
                ("client_momentum", self.client_momentum == "persistent" and "persistent"),
                ("system", system.get("deadline") is not None and "a round deadline"),
            ):
                if problem:
                    raise ValueError(f"asynchronous: not supported with {field} = {problem}")
            concurrency = asynchronous.get("concurrency")
            if concurrency is not None and concurrency > self.num_clients:
                raise ValueError(
                    f"asynchronous: concurrency ({concurrency}) must be <= num_clients "
                    f"({self.num_clients})"
                )
        mode = None
        if system.get("stragglers"):
            mode = self.partial_work or ("keep" if self.mu > 0 else "drop")
        if private and (
            system.get("availability", 1.0) < 1
            or system.get("dropout", 0.0) > 0
            or system.get("deadline") is not None
            or mode == "drop"
        ):
            raise ValueError(
                "system: availability < 1, dropout > 0, a deadline or dropped stragglers are not "
                "supported with a dp/ldp strategy (the privacy accounting assumes every sampled "
                "client takes part)"
            )
        if mode is None:
            return None
        if asynchronous and mode == "drop" and system["stragglers"] == 1:
            raise ValueError(
                "asynchronous: with stragglers = 1 and partial_work = 'drop' no update ever "
                "arrives; keep partial work or lower stragglers"
            )
        return mode

    def _resolved_privacy(self) -> dict[str, Any]:
        """Privacy fields as the run uses them: at their defaults without a privacy stage (they
        would change nothing), checked against the sampling and the adaptive-clipping noise."""
        stage = privacy_stage_of(self.strategy)
        if stage is None:
            return {key: _OMITTED_AT_DEFAULT[key] for key in _PRIVACY_FIELDS}
        cpr = self.clients_per_round or self.num_clients
        if stage["type"] == "dp":
            problem = accounting_problem(
                self.accountant, self.client_sampling, self.num_clients, cpr
            )
            if problem is not None:
                raise ValueError(problem)
            if stage.get("target_quantile") is not None:
                count_std = stage.get("count_stddev")
                if count_std is None:
                    count_std = default_count_stddev(cpr)
                try:
                    value_noise_multiplier(stage["noise_multiplier"], count_std)
                except ValueError as exc:
                    raise ValueError(
                        f"strategy: {exc} (count_stddev defaults to clients_per_round / 20 = "
                        f"{default_count_stddev(cpr):g}); set dp:count_stddev=... higher or "
                        "lower the noise"
                    ) from None
        return {key: getattr(self, key) for key in _PRIVACY_FIELDS}

    @property
    def privacy_delta(self) -> float | None:
        """The delta epsilon is reported at (default ``1 / num_clients^1.1``); None without a
        privacy stage."""
        if privacy_stage_of(self.strategy) is None:
            return None
        return self.delta if self.delta is not None else default_delta(self.num_clients)

    @property
    def byzantine_count(self) -> int:
        """Number of malicious clients (a fraction is rounded to the nearest count)."""
        if isinstance(self.byzantine, float) and self.byzantine < 1:
            return int(self.byzantine * self.num_clients + 0.5)
        return int(self.byzantine)

    @property
    def participants(self) -> int:
        return int(self.clients_per_round or self.num_clients)

    def canonical(self, *, include_name: bool = True) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for key, default in _OMITTED_AT_DEFAULT.items():
            if data[key] == default:
                del data[key]  # fields added after the first schema keep older identities
        if not include_name:
            data.pop("name")
            data.pop("device", None)  # a run's identity: cpu and cuda runs are the same run
        return data

    def canonical_json(self, *, include_name: bool = True) -> str:
        """Sorted-key, defaults-filled JSON: the identity of the run."""
        return json.dumps(
            self.canonical(include_name=include_name), sort_keys=True, separators=(",", ":")
        )

    @property
    def fingerprint(self) -> str:
        """sha256 of the canonical JSON without the name (the name is a label, not identity)."""
        return hashlib.sha256(self.canonical_json(include_name=False).encode()).hexdigest()

    @property
    def fingerprint_without_seed(self) -> str:
        """Identity of the configuration across seeds (groups seeds in leaderboards)."""
        data = self.canonical(include_name=False)
        data.pop("seed")
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line: ``source: field: message`` for the first error pydantic found."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    kind = first["type"]
    msg = first["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        keys = [*RunSpec.model_fields, "attack"]
        close = difflib.get_close_matches(str(first["loc"][-1]), keys, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        msg = f"unknown key; {hint}allowed keys: {', '.join(keys)}"
    elif "input" in first and kind not in ("value_error", "missing"):
        msg = f"{msg}, got {first['input']!r}"
    where = f"{source}: {loc}" if loc else source
    return f"{where}: {msg}"


def spec_from_mapping(data: Mapping[str, Any], source: str = "spec") -> RunSpec:
    """Validate a mapping into a RunSpec; errors become one-line SpecErrors naming the field."""
    try:
        return RunSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source)) from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is an InputError naming it."""
    file = Path(path)
    if not file.exists():
        raise InputError("file not found", source=str(path))
    if not file.is_file():
        raise InputError("not a file (expected a TOML file)", source=str(path))
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"invalid TOML ({exc})", source=str(path)) from None
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file (TOML must be UTF-8)", source=str(path)) from None
    except RecursionError:
        raise InputError(
            "nested too deeply to read (arrays or tables inside each other)", source=str(path)
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", source=str(path)) from None


_STRATEGY_REGISTRIES: dict[str, Registry[Any]] = {
    "pre": PRE_AGGREGATORS,
    "aggregator": AGGREGATORS,
    "server": SERVER_OPTIMIZERS,
}


def _toml_component(table: Mapping[str, Any], registry: Registry[Any]) -> Any:
    """A component table TOML can write: a ``None`` parameter is left out where ``None`` is its
    default; elsewhere (TOML has no null) the component is written as a spec string, whose
    ``none`` means None."""
    # ``type`` first: it is what a reader looks for, and what the other keys parametrize.
    table = dict(sorted(table.items(), key=lambda item: item[0] != "type"))
    nulls = [k for k, v in table.items() if v is None]
    if not nulls:
        return table
    try:
        defaults = registry.get(str(table.get("type"))).defaults()
    except Exception:  # not registered here (e.g. a plug-in not loaded): keep what can be kept
        defaults = {}
    if all(k in defaults and defaults[k] is None for k in nulls):
        return {k: v for k, v in table.items() if v is not None}
    return format_component(str(table["type"]), {k: v for k, v in table.items() if k != "type"})


def spec_toml(spec: Mapping[str, Any]) -> str:
    """A canonical spec (``RunSpec.canonical()``) as a flat TOML run file, fields in RunSpec's
    order: ``velocity run FILE`` reads it back as the same run (the same fingerprint)."""
    import tomli_w  # imported here: only `velocity show` writes TOML

    doc: dict[str, Any] = {}
    order = [*RunSpec.model_fields, *sorted(set(spec) - set(RunSpec.model_fields))]
    for key in order:
        if key not in spec or spec[key] is None:
            continue  # absent or None (TOML has no null): the field's default, None, applies
        value = spec[key]
        if key in _COMPONENT_REGISTRIES and isinstance(value, Mapping):
            value = _toml_component(value, _COMPONENT_REGISTRIES[key])
        elif key == "attacks" and isinstance(value, list):
            value = [_toml_component(a, ATTACKS) if isinstance(a, Mapping) else a for a in value]
        elif key == "strategy" and isinstance(value, Mapping):
            value = {
                stage: (
                    [_toml_component(t, _STRATEGY_REGISTRIES[stage]) for t in tables]
                    if isinstance(tables := value[stage], list)
                    else _toml_component(tables, _STRATEGY_REGISTRIES[stage])
                    if stage in _STRATEGY_REGISTRIES and isinstance(tables, Mapping)
                    else tables
                )
                for stage in value
            }
        doc[key] = value
    return tomli_w.dumps(doc)
