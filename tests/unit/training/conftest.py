"""Every training test's command lines record their runs and take retrain locks in a state folder of its own."""

from __future__ import annotations

import pytest

from training.cli import STATE_PATH_ENV


@pytest.fixture(autouse=True)
def state_path(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """The state path a command line without --state-path uses (not ./state, a service's beside the checkout)."""
    path = tmp_path / "state"
    monkeypatch.setenv(STATE_PATH_ENV, str(path))
    return path
