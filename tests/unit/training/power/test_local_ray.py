"""A `ray job submit` driver joins its cluster before reading the telemetry store (no real Ray here)."""

from __future__ import annotations

import stat

import pandas as pd
import pytest

from autoscaler import idle_draw
from core.stores import frame
from training import train_lstm, tune
from training.power import local_ray


@pytest.fixture
def starts(monkeypatch) -> list[dict]:
    """The `ray.init` calls (their keyword arguments), with Ray not initialized."""
    calls: list[dict] = []
    monkeypatch.setattr(local_ray.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(local_ray.ray, "init", lambda **kwargs: calls.append(kwargs))
    return calls


@pytest.mark.parametrize("join", [local_ray.join_submitted_cluster, local_ray.start_local_ray])
def test_a_submitted_job_joins_its_cluster_as_it_is(starts, monkeypatch, join):
    """Regression: joining went through the local start, which pointed the cluster's workers at a dashboard port of
    the job's choosing where nothing listened: Ray Train's cleaner warned every few seconds for as long as it
    lived. A joined cluster's own dashboard answers; nothing of the job's is set on it."""
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    join(verbose=False)
    assert starts == [{"log_to_driver": False}]
    assert not local_ray.started_here()


def test_a_local_ray_in_token_mode_finds_its_token_file_written_private(monkeypatch, tmp_path):
    """Ray itself writes ~/.ray/auth_token with the umask's mode (0644 on most machines) for a new local cluster."""
    path, written = tmp_path / "auth_token", []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # Ray's default for a new local cluster: token
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))

    def init(**kwargs):
        written.append(stat.S_IMODE(path.stat().st_mode))
        raise RuntimeError("stop here")  # the start goes no further

    monkeypatch.setattr(local_ray.ray, "init", init)
    with pytest.raises(RuntimeError, match="stop here"):
        local_ray.start_local_ray(verbose=False)
    assert written == [0o600] and len(path.read_text()) == 64

def test_a_local_ray_is_a_new_one_never_the_cluster_a_ray_start_left_on_the_machine(monkeypatch, tmp_path):
    """Regression: ray.init() without an address joins the cluster `ray start` recorded in /tmp/ray, so a training
    command could run on another user's cluster."""
    seen: list[dict] = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "auth_token"))

    def init(**kwargs):
        seen.append(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(local_ray.ray, "init", init)
    with pytest.raises(RuntimeError, match="stop here"):
        local_ray.start_local_ray(verbose=False)
    assert seen[0]["address"] == "local"


def test_without_ray_address_no_ray_is_started(starts, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local_ray.join_submitted_cluster(verbose=True)
    assert starts == []


def test_an_initialized_ray_is_kept(starts, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setattr(local_ray.ray, "is_initialized", lambda: True)
    local_ray.join_submitted_cluster(verbose=True)
    assert starts == []


class _Store:
    def close(self) -> None:
        pass


@pytest.mark.parametrize("command", [train_lstm, tune, idle_draw])
def test_from_store_commands_join_before_opening_the_store(command, monkeypatch):
    """Regression: they opened the store before Ray was initialized, so under `ray job submit` they read the job
    environment's default store instead of the cluster's store actor."""
    steps: list[str] = []
    monkeypatch.setattr(local_ray, "join_submitted_cluster", lambda verbose: steps.append("join"))
    monkeypatch.setattr(frame, "open_store", lambda: steps.append("open") or _Store())
    def stored_frame(store, since_s, step_s, only=None):
        assert isinstance(since_s, int) and since_s > 0  # regression: idle_draw's default became None
        return pd.DataFrame()

    monkeypatch.setattr(frame, "stored_frame", stored_frame)
    if command is train_lstm:
        train_lstm._store(3600, verbose=False)(60)
    elif command is tune:
        args = tune.parse_args(["--from-store", "--output", "t.json"])
        tune.read_frame(args, tune.base_config(args))
    else:
        idle_draw._frame(idle_draw.parse_args(["--from-store"]))
    assert steps == ["join", "open"]
