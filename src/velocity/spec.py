"""RunSpec: the frozen, validated description of one federated run, and its TOML loading.

Component fields (dataset, partition, model, strategy, attacks) are written as short spec strings
or tables and stored in canonical table form (defaults filled), so the canonical JSON, and the
fingerprint hashed from it, do not depend on how a value was spelled.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from velocity.errors import InputError, SpecError
from velocity.registry import Registry

__all__ = [
    "RUN_NAME_PATTERN",
    "RunSpec",
    "format_validation_error",
    "load_toml",
    "load_toml_runs",
    "spec_from_mapping",
]

RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,119}$")


def _strategy_writes_mu(strategy: Any) -> bool:
    """Whether a (preset) strategy spec spells out ``mu`` itself."""
    from velocity.registry import parse_component

    if isinstance(strategy, Mapping):
        return "mu" in strategy
    if isinstance(strategy, str) and ">" not in strategy:
        return "mu" in parse_component(strategy, "strategy")[1]
    return False


def _canonical_component(field_name: str, value: Any) -> dict[str, Any]:
    from velocity.data import DATASETS, PARTITIONERS
    from velocity.models import MODELS

    registries: dict[str, Registry[Any]] = {
        "dataset": DATASETS,
        "partition": PARTITIONERS,
        "model": MODELS,
    }
    return registries[field_name].canonical(value)


class RunSpec(BaseModel):
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

    @model_validator(mode="before")
    @classmethod
    def _merge_aliases(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if "attack" in data:
            if "attacks" in data:
                raise ValueError("give either 'attack' or 'attacks', not both")
            attack = data.pop("attack")
            data["attacks"] = [] if attack in (None, "", "none") else [attack]
        strategy = data.get("strategy", "fedavg")
        from velocity.strategies import canonical_strategy

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

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not RUN_NAME_PATTERN.match(value) or value in (".", ".."):
            raise ValueError(
                "run names use letters, digits and . _ = + - (max 120, starting with a letter or "
                f"digit), got {value!r}"
            )
        return value

    @field_validator("dataset", "partition", "model", mode="before")
    @classmethod
    def _check_component(cls, value: Any, info: Any) -> dict[str, Any]:
        try:
            return _canonical_component(info.field_name, value)
        except SpecError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("attacks", mode="before")
    @classmethod
    def _check_attacks(cls, value: Any) -> list[dict[str, Any]]:
        if isinstance(value, str | Mapping):
            value = [value]
        if not isinstance(value, Sequence):
            raise ValueError("attacks must be a list of attack specs")
        from velocity.attacks import canonical_attack

        try:
            return [canonical_attack(v) for v in value if v not in (None, "", "none")]
        except SpecError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("byzantine", mode="before")
    @classmethod
    def _check_byzantine(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("byzantine is a fraction in [0, 1) or a client count")
        if isinstance(value, float) and value >= 1:
            if not value.is_integer():
                raise ValueError(f"byzantine is a fraction in [0, 1) or a whole count, got {value}")
            return int(value)
        return value

    @model_validator(mode="after")
    def _check_run(self) -> RunSpec:
        cpr = self.clients_per_round
        if cpr is None:
            object.__setattr__(self, "clients_per_round", self.num_clients)
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
        object.__setattr__(self, "byzantine", count)
        if self.partition["type"] == "natural" and self.dataset["type"] != "synthetic":
            raise ValueError(
                "partition 'natural' needs a dataset with its own clients ('synthetic')"
            )
        return self

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
        if not include_name:
            data.pop("name")
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
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", source=str(path)) from None


def load_toml_runs(path: str | Path, overrides: Mapping[str, Any] | None = None) -> list[RunSpec]:
    """RunSpecs of a ``[shared]`` + ``[[runs]]`` file (no runs: ``[shared]`` is the one run).

    ``overrides`` (e.g. from CLI flags) apply on top of every run.
    """
    doc = load_toml(path)
    unknown = sorted(set(doc) - {"shared", "runs"})
    if unknown:
        raise SpecError(
            f"{path}: unknown top-level key '{unknown[0]}'; allowed: [shared], [[runs]] "
            "(use 'velocity sweep' for [matrix])"
        )
    shared = doc.get("shared", {})
    if not isinstance(shared, dict):
        raise SpecError(f"{path}: [shared] must be a table")
    runs = doc.get("runs", [{}])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise SpecError(f"{path}: runs must be an array of tables ([[runs]])")
    specs = []
    for i, run in enumerate(runs):
        merged = {**shared, **run, **(overrides or {})}
        if "name" not in merged and len(runs) > 1:
            merged["name"] = f"run{i}"
        where = f"{path}: runs[{i}]" if "runs" in doc else f"{path}: shared"
        specs.append(spec_from_mapping(merged, where))
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"{path}: duplicate run name '{dupes[0]}'")
    return specs
