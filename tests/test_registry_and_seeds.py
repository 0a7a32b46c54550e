"""The component spec parser, declared-parameter validation and the seed tree."""

from __future__ import annotations

import numpy as np
import pytest

from velocity.errors import SpecError
from velocity.registry import Param, Registry, format_component, parse_component
from velocity.seeds import child_rng, child_seed


def test_parse_component_string_and_table_agree() -> None:
    assert parse_component("Dirichlet:alpha=0.3") == ("dirichlet", {"alpha": 0.3})
    assert parse_component({"type": "Krum", "f": 2}) == ("krum", {"f": 2})
    assert parse_component("x:a=1,b=true,c=none,d=text") == (
        "x",
        {"a": 1, "b": True, "c": None, "d": "text"},
    )


@pytest.mark.parametrize("bad", ["", ":a=1", "x:a", "x:a=1,a=2", "x:=3"])
def test_parse_component_rejects_malformed(bad: str) -> None:
    with pytest.raises(SpecError):
        parse_component(bad)


def test_format_component_round_trips() -> None:
    name, params = parse_component("mlp:hidden=64,drop=0.5,flag=false")
    assert parse_component(format_component(name, params)) == (name, params)


def _registry() -> Registry:
    reg: Registry = Registry("widget")

    @reg.register(
        "thing", params=(Param("k", int, 1, low=0), Param("mode", str, "a", choices=("a", "b")))
    )
    def thing(k: int, mode: str) -> tuple[int, str]:
        return k, mode

    return reg


def test_registry_fills_defaults_and_is_case_insensitive() -> None:
    reg = _registry()
    assert reg.canonical("THING") == {"type": "thing", "k": 1, "mode": "a"}
    assert reg.canonical({"type": "thing", "k": 3.0}) == {"type": "thing", "k": 3, "mode": "a"}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("nope", "unknown widget 'nope'; available: thing"),
        ("thing:k=-1", "parameter 'k' must be an integer >= 0, got -1"),
        ("thing:k=1.5", "parameter 'k' must be an integer >= 0, got 1.5"),
        ("thing:mode=c", "parameter 'mode' must be one of 'a', 'b', got 'c'"),
        ("thing:z=1", "unknown parameter 'z'; allowed: k, mode"),
    ],
)
def test_registry_errors_name_parameter_allowed_and_received(spec: str, needle: str) -> None:
    with pytest.raises(SpecError, match=None) as info:
        _registry().canonical(spec)
    assert needle in str(info.value)


def test_seed_children_are_position_independent_and_distinct() -> None:
    a = child_rng(5, "shuffle", 3, 7).random(4)
    child_rng(5, "other").random(100)  # drawing elsewhere must not shift this child
    b = child_rng(5, "shuffle", 3, 7).random(4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, child_rng(5, "shuffle", 3, 8).random(4))
    assert not np.array_equal(a, child_rng(6, "shuffle", 3, 7).random(4))
    assert not np.array_equal(child_rng(5, 1).random(3), child_rng(5, "1").random(3))
    assert child_seed(1, "x") == child_seed(1, "x") != child_seed(1, "y")
