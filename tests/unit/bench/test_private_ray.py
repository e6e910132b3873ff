"""The Ray a benchmark starts: token authentication with a private token of the run's own, this machine's only."""

from __future__ import annotations

import os
import stat

import pytest

from bench.private_ray import private_ray_environment

KEYS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")


@pytest.fixture
def outside(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A shell that exported a cluster's address (restored after the test, as every key the function sets)."""
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    return monkeypatch


def test_a_bench_runs_its_own_ray_under_a_private_token_of_its_own(outside):
    """Regression: the Serve benches turned Ray's authentication off, leaving each replica's gRPC port (on every
    interface) open to unpickling, and bench_backtest joined a cluster RAY_ADDRESS named."""
    folder = private_ray_environment()
    assert "RAY_ADDRESS" not in os.environ
    assert os.environ["RAY_AUTH_MODE"] == "token" and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    token = folder / "auth_token"
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(token) and len(token.read_text()) == 64
    assert stat.S_IMODE(token.stat().st_mode) == 0o600


def test_an_auth_mode_set_outside_wins(outside):
    outside.setenv("RAY_AUTH_MODE", "disabled")
    folder = private_ray_environment()
    assert os.environ["RAY_AUTH_MODE"] == "disabled" and not (folder / "auth_token").exists()
