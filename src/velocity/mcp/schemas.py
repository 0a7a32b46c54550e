"""JSON schemas of the MCP tools, generated from what the CLI validates with: RunSpec's fields
and the component registries (names, parameters, bounds), so a schema cannot drift from the code.

A schema only describes; every value is still validated by RunSpec and the registries, which
give the one-line errors the CLI prints.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from velocity.errors import InputError
from velocity.registry import REQUIRED, Entry, Param, Registry

__all__ = [
    "COMPONENT_FIELDS",
    "arguments_schema",
    "component_schema",
    "param_schema",
    "parse_arguments",
    "run_spec_schema",
]

COMPONENT_FIELDS = ("dataset", "partition", "model", "strategy", "attack", "attacks")
"""RunSpec fields written as component specs (a string ``name:key=value`` or a table)."""

_FIELD_DOCS = {
    "name": "run name (letters, digits and . _ = + -)",
    "num_clients": "number of clients",
    "clients_per_round": "clients sampled each round (default: all)",
    "rounds": "number of rounds (capped by the server's --max-rounds)",
    "local_epochs": "local epochs per round",
    "batch_size": "local mini-batch size",
    "lr": "client learning rate",
    "momentum": "client SGD momentum in [0, 1)",
    "weight_decay": "L2 weight decay",
    "mu": "FedProx proximal coefficient",
    "seed": "the run's seed (root of its seed tree)",
    "eval_every": "evaluate on the test split every N rounds (and the last round)",
    "byzantine": "malicious clients: a fraction < 1 or a count",
}

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def param_schema(param: Param) -> dict[str, Any]:
    """The schema of one declared parameter (type, bounds, choices, default, doc)."""
    schema: dict[str, Any] = {}
    if param.choices is not None:
        schema["enum"] = list(param.choices)
    elif param.convert is None and param.type in _JSON_TYPES:
        # A parameter with a converter accepts more than its stored type (e.g. 64 or "128-64").
        schema["type"] = _JSON_TYPES[param.type]
    if param.low is not None:
        schema["exclusiveMinimum" if param.low_open else "minimum"] = param.low
    if param.high is not None:
        schema["exclusiveMaximum" if param.high_open else "maximum"] = param.high
    if param.nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    if param.default is not REQUIRED:
        schema["default"] = param.default
    schema["description"] = f"{param.doc} ({param.allowed()})" if param.doc else param.allowed()
    return schema


def _entry_table(entry: Entry[Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {"type": {"const": entry.name}}
    properties.update({p.name: param_schema(p) for p in entry.params})
    required = ["type", *(p.name for p in entry.params if p.default is REQUIRED)]
    table: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    if entry.summary:
        table["description"] = entry.summary
    return table


def component_schema(
    kind: str, registries: Iterable[Registry[Any]], *, extra_names: Iterable[str] = ()
) -> dict[str, Any]:
    """A component spec: ``"name:key=value,..."`` or a table ``{"type": name, ...}``, one
    table shape per registered entry (its parameters, bounds and required ones)."""
    entries = [entry for registry in registries for entry in registry]
    names = sorted({*(e.name for e in entries), *extra_names})
    tables = [_entry_table(e) for e in entries]
    if extra_names:
        tables.append(
            {
                "type": "object",
                "properties": {"type": {"enum": sorted(set(extra_names))}},
                "required": ["type"],
            }
        )
    return {
        "anyOf": [
            {
                "type": "string",
                "description": f"{kind} spec 'name:key=value,...'; names: {', '.join(names)}",
            },
            *tables,
        ]
    }


def _strategy_schema() -> dict[str, Any]:
    from velocity.strategies import AGGREGATORS, PRE_AGGREGATORS, PRESETS, SERVER_OPTIMIZERS

    stages = component_schema(
        "strategy", (PRE_AGGREGATORS, AGGREGATORS, SERVER_OPTIMIZERS), extra_names=PRESETS
    )
    stages["anyOf"][0]["description"] += (
        "; or a chain 'pre > aggregator > server', e.g. 'nnm:f=2 > krum:f=2 > adam:lr=0.01'"
    )
    composed = {
        "type": "object",
        "description": "a composed strategy: pre-aggregators, one aggregator, a server optimizer",
        "properties": {
            "pre": {
                "type": "array",
                "items": component_schema("pre-aggregator", [PRE_AGGREGATORS]),
            },
            "aggregator": component_schema("aggregator", [AGGREGATORS]),
            "server": component_schema("server optimizer", [SERVER_OPTIMIZERS]),
            "mu": {"type": "number", "minimum": 0},
        },
        "required": ["aggregator"],
        "additionalProperties": False,
    }
    return {"anyOf": [*stages["anyOf"], composed], "default": "fedavg"}


def run_spec_schema() -> dict[str, Any]:
    """The schema of a RunSpec as the tools take it: one property per RunSpec field (plus the
    ``attack`` shorthand RunSpec accepts), numeric bounds from the model itself, component
    fields from the registries."""
    from velocity.attacks import ATTACKS
    from velocity.data import DATASETS, PARTITIONERS
    from velocity.models import MODELS
    from velocity.spec import RunSpec

    generated = RunSpec.model_json_schema()["properties"]
    registries: dict[str, Registry[Any]] = {
        "dataset": DATASETS,
        "partition": PARTITIONERS,
        "model": MODELS,
    }
    properties: dict[str, Any] = {}
    for name, field in RunSpec.model_fields.items():
        if name in registries:
            prop = component_schema(name, [registries[name]])
            prop["default"] = field.default
        elif name == "strategy":
            prop = _strategy_schema()
        elif name == "attacks":
            prop = {
                "type": "array",
                "items": component_schema("attack", [ATTACKS]),
                "default": [],
                "description": "attacks of the malicious clients (needs byzantine > 0)",
            }
        elif name == "plugins":
            prop = {
                "type": "array",
                "items": {"type": "string"},
                "default": [],
                "description": "plug-in .py files inside the workspace or installed modules "
                "(refused unless the server runs with --allow-plugins)",
            }
        elif name == "byzantine":
            prop = {"type": "number", "minimum": 0, "default": 0}
        else:
            prop = {k: v for k, v in generated[name].items() if k != "title"}
        if name in _FIELD_DOCS:
            prop["description"] = _FIELD_DOCS[name]
        properties[name] = prop
    attack = component_schema("attack", [ATTACKS])
    attack["anyOf"][0]["description"] += " ('none' for no attack)"
    attack["description"] = "one attack (shorthand for attacks = [attack]); give one of the two"
    properties["attack"] = attack
    return {
        "type": "object",
        "description": "One federated run (RunSpec); omitted fields take their defaults.",
        "properties": properties,
        "additionalProperties": False,
    }


def arguments_schema(model: type[BaseModel], **embedded: dict[str, Any]) -> dict[str, Any]:
    """A tool's input schema: its argument model's, with ``embedded`` property schemas (a
    RunSpec, a list of them) put in place of the loosely typed fields that carry them."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    properties = schema.get("properties", {})
    for prop in properties.values():
        prop.pop("title", None)
    for name, sub in embedded.items():
        description = properties.get(name, {}).get("description")
        properties[name] = dict(sub)
        if description:
            properties[name]["description"] = description
    schema["properties"] = properties
    schema["additionalProperties"] = False
    return schema


def parse_arguments(model: type[BaseModel], tool: str, arguments: dict[str, Any] | None) -> Any:
    """Validate a tool's arguments; a problem is one InputError line naming the argument."""
    try:
        return model.model_validate(arguments or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        kind = first["type"]
        if kind == "extra_forbidden":
            allowed = list(model.model_fields)
            close = difflib.get_close_matches(str(first["loc"][-1]), allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            message = f"unknown argument; {hint}allowed: {', '.join(allowed) or 'none'}"
        else:
            message = first["msg"].removeprefix("Value error, ")
            if "input" in first and kind not in ("value_error", "missing"):
                message += f", got {first['input']!r}"
        where = f"{tool}: argument '{loc}'" if loc else tool
        raise InputError(f"{where}: {message}") from None
