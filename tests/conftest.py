"""Shared fixtures: the carried real sample and one local Ray cluster per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.factories import free_port

DATA_DIR = Path(__file__).parent / "data"
_started: dict[str, str] = {}


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

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    for name in ("RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"):
        os.environ.setdefault(name, "0")  # Serve's settings under `make run` (Makefile SERVE_ENV)
    context = ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=free_port(),
                       log_to_driver=False, ignore_reinit_error=True)
    _started["dashboard_url"] = f"http://{context.dashboard_url}"
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_dashboard_url(ray_cluster) -> str:
    """http://127.0.0.1:PORT of the session's Ray dashboard."""
    return _started["dashboard_url"]

