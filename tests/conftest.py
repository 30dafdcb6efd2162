"""Shared test setup: every test records its runs in its own state directory, never in ./.orch."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_state_dir(tmp_path_factory, monkeypatch):
    """``orch run`` records every run; point ORCH_STATE_DIR at a fresh folder per test."""
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path_factory.mktemp("orch-state")))
