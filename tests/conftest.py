"""Shared fixtures: the carried real sample, one local Ray cluster per test session, and the app served over HTTP
on it (small real models in a temporary registry) for tests/integration and tests/security."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.serve_tuning import apply_serve_tuning
from tests.factories import free_port
from training.cli import STATE_PATH_ENV

DATA_DIR = Path(__file__).parent / "data"
_started: dict[str, str] = {}


@pytest.fixture(scope="session", autouse=True)
def session_cli_state_path(tmp_path_factory) -> Iterator[Path]:
    """The same for session fixtures that run the command lines (e.g. `served_models`); each test gets its own."""
    path = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(STATE_PATH_ENV, str(path))
        yield path


SESSION_RAY_FOLDER = "KCLOUD_TESTS_RAY_FOLDER"
OUTSIDE_AUTH_MODE = "KCLOUD_TESTS_OUTSIDE_RAY_AUTH_MODE"  # RAY_AUTH_MODE as the session found it ("" when unset)


def _ray_of_the_session_s_own() -> Path:
    """Every Ray the tests start (the session's, a command line's own) runs as `make run` starts one: under Ray's
    token authentication, with a token of the session's own (written private into a temporary folder, never
    ~/.ray), since each Serve replica listens on every interface where only the token guards it; and with Ray's own
    ports on the loopback address only (Ray's switch for that, named for Windows and macOS, works on Linux too; the
    multi-node test turns it back on for its two raylets, both on 127.0.0.1). Their session files go to the same
    folder, removed at the end, not /tmp/ray. RAY_AUTH_MODE set outside wins; tests of other modes set their own.

    Set as this file is imported, before any test module imports Ray: a process reads its auth mode once. A test
    module importing it again (`from tests.conftest import ...`, a second copy of this module) takes the same one."""
    from app import local_ray_token

    if (made := os.environ.get(SESSION_RAY_FOLDER)) and Path(made).is_dir():
        return Path(made)
    folder = Path(tempfile.mkdtemp(prefix="kray-"))  # short: Ray's Unix sockets live under it (108 bytes at most)
    os.environ[SESSION_RAY_FOLDER] = str(folder)
    os.environ[OUTSIDE_AUTH_MODE] = os.environ.get("RAY_AUTH_MODE", "")
    os.environ["RAY_AUTH_MODE"] = os.environ[OUTSIDE_AUTH_MODE] or "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(folder / "auth_token")
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") or "0"
    os.environ["RAY_TMPDIR"] = str(folder)
    # written whatever the outside environment says (a RAY_ADDRESS, another mode): a Ray in token mode without its
    # token file would write one into ~/.ray itself
    outside = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    if local_ray_token.main({**outside, "RAY_AUTH_MODE": "token"}) != 0:
        raise RuntimeError(f"cannot write the test session's Ray token into {folder}")
    return folder


_RAY_FOLDER = _ray_of_the_session_s_own()


def _left_running(folder: Path) -> list[int]:
    """The processes other than this one whose environment names `folder` as their RAY_TMPDIR: every process a Ray
    of this session started inherits it, and no other process has it."""
    marker, found = f"RAY_TMPDIR={folder}".encode(), []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int(entry.name) != os.getpid() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except (OSError, ValueError):  # ended meanwhile, or another user's
            continue
    return found


def pytest_unconfigure(config: pytest.Config) -> None:
    """Once every test and fixture has ended: a process a Ray of the session left running (Ray's own shutdown
    missed it) is ended by its id and named, and the session's Ray folder (token and session files) is removed."""
    left = _left_running(_RAY_FOLDER)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        sys.stderr.write(f"\ntests: ended {len(left)} process(es) the session's Rays left running: {left}\n")
    for _ in range(10):  # a process still ending may write a last log line meanwhile
        shutil.rmtree(_RAY_FOLDER, ignore_errors=True)
        if not _RAY_FOLDER.exists():
            return
        time.sleep(0.5)


@pytest.fixture(autouse=True)
def cli_state_path(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where a training command line without --state-path records its run and takes the retrain lock: a folder of
    the test's own, never ./state beside the checkout (a local service's)."""
    path = tmp_path / "state"
    monkeypatch.setenv(STATE_PATH_ENV, str(path))
    return path


@pytest.fixture(scope="session")
def upm_sample() -> Path:
    """Real measured server power (3 runs, ≈1 s rows); provenance in tests/data/README.md."""
    return DATA_DIR / "upm_sample.csv"


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray (2 CPUs) with its dashboard on 127.0.0.1 for the whole session; shut down at the end.

    The dashboard carries Serve's REST API, which the scaling controller uses to change replica counts.
    """
    import ray

    apply_serve_tuning()  # Serve's settings under `make run`
    context = ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                       dashboard_port=free_port(), log_to_driver=False, ignore_reinit_error=True)
    _started["dashboard_url"] = f"http://{context.dashboard_url}"
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_dashboard_url(ray_cluster) -> str:
    """http://127.0.0.1:PORT of the session's Ray dashboard."""
    return _started["dashboard_url"]



SMALL_POWER = ["--step", "2min", "--horizon", "20min", "--sequence-length", "15", "--epochs", "4", "--quiet"]
API_TOKEN = "test-token-of-the-session"


@pytest.fixture(scope="session")
def served_models(tmp_path_factory, ray_cluster, upm_sample):
    """A registry with power_lstm/1 (trained on the real sample through Ray Train) and cost_gbm/1."""
    from core.registry import ModelRegistry
    from training import train_gbm, train_lstm

    root = tmp_path_factory.mktemp("served-models")
    assert train_lstm.main(["--data", str(upm_sample), "--model-path", str(root), *SMALL_POWER]) == 0
    assert ModelRegistry(root).active_version("power_lstm") == 1  # a first training activates its version
    assert train_gbm.main(["--model-path", str(root), "--records", "3000"]) == 0
    return root


@pytest.fixture(scope="session")
def serve_port(ray_cluster):
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="session")
def telemetry_store(ray_cluster, tmp_path_factory):
    """The session's one telemetry store actor (embedded SQLite); returns its data directory."""
    from collectors.store_actor import start_store_actor

    folder = tmp_path_factory.mktemp("telemetry-store")
    start_store_actor({"TELEMETRY_DATA_DIR": str(folder)})
    return folder


@pytest.fixture(scope="session")
def app_args(served_models, tmp_path_factory, upm_sample, ray_dashboard_url) -> dict:
    """The args of the session's app (AppArgs as a dict): the token API_TOKEN, a config file, small replicas."""
    state = tmp_path_factory.mktemp("state")
    token_file = state / "token"
    token_file.write_text(f"{API_TOKEN}\n")
    config = state / "config.yaml"  # the service config: a workload spanning two nodes, a policy default
    config.write_text("workloads:\n  api-workload: [api-node, api-node-2]\n"
                      "auto_scaling:\n  power_based:\n    scale_in_threshold: 40\n")
    return {
        "config_path": str(config),
        "model_path": str(served_models),
        "state_path": str(state),
        "api_token_file": str(token_file),
        "retrain": {"data": str(upm_sample), "data_dir": str(upm_sample.parent), "cpus_per_worker": 0.5},
        "ingress": {"ray_actor_options": {"num_cpus": 0.1}},
        "power_predictor": {"ray_actor_options": {"num_cpus": 0.2}, "user_config": {"registry_poll_s": 1}},
        "cost_predictor": {"ray_actor_options": {"num_cpus": 0.1}},
        # the controller ticks when a test asks (an hour between its own ticks)
        "autoscaler": {"enabled": True, "ray_dashboard_url": ray_dashboard_url, "interval_s": 3600},
    }


@pytest.fixture(scope="session")
def api(app_args, serve_port, telemetry_store):
    """The whole app (ingress + PowerPredictor + CostPredictor) under `serve.run`, and an HTTP client."""
    from ray import serve

    from app.main import build_app, build_power_app
    from core.names import MAIN_APP, POWER_APP, POWER_ROUTE_PREFIX

    serve.run(build_power_app(app_args), name=POWER_APP, route_prefix=POWER_ROUTE_PREFIX)
    serve.run(build_app(app_args), name=MAIN_APP, route_prefix="/")
    with httpx.Client(base_url=f"http://127.0.0.1:{serve_port}", timeout=60) as client:
        yield client
    serve.delete(MAIN_APP)
    serve.delete(POWER_APP)
