"""``velocity strategies``: lists every registry entry and preset, as text and JSON."""

from __future__ import annotations

import json

import pytest

from velocity.cli import main
from velocity.privacy import PRIVACY_STAGES
from velocity.strategies import AGGREGATORS, PRE_AGGREGATORS, PRESETS, SERVER_OPTIMIZERS


def test_strategies_json_lists_every_entry_and_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["strategies", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    listed = {(e["family"], e["name"]) for e in payload["entries"]}
    expected = {
        *(("privacy", n) for n in PRIVACY_STAGES.names()),
        *(("aggregator", n) for n in AGGREGATORS.names()),
        *(("pre-aggregator", n) for n in PRE_AGGREGATORS.names()),
        *(("server optimizer", n) for n in SERVER_OPTIMIZERS.names()),
    }
    assert listed == expected
    krum = next(e for e in payload["entries"] if e["name"] == "krum")
    assert krum["cost"] == "O(n^2 d)" and "Blanchard" in krum["paper"]
    assert krum["params"][0]["name"] == "f" and krum["params"][0]["default"] == 1
    assert {p["name"] for p in payload["presets"]} == set(PRESETS)
    fedprox = next(p for p in payload["presets"] if p["name"] == "fedprox")
    assert fedprox["client_mu"] == 0.01


def test_strategies_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    for name in ("geometric_median", "bucketing", "yogi", "fedtrimmedavg"):
        assert name in out
