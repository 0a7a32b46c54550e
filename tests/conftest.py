"""Shared test configuration: tests never touch the user's real run store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_store(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path_factory.getbasetemp() / "velocity-store" / "runs.db"
    monkeypatch.setenv("VELOCITY_STORE", str(store))
    monkeypatch.setenv("HOME", str(Path(tmp_path_factory.getbasetemp()) / "home"))
    os.makedirs(store.parent, exist_ok=True)
