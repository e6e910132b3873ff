"""Shared fixtures: the carried real sample and one local Ray cluster per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def upm_sample() -> Path:
    """Real measured server power (3 runs, ≈1 s rows); provenance in tests/data/README.md."""
    return DATA_DIR / "upm_sample.csv"


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray (2 CPUs) for the whole session; shut down at the end."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()
