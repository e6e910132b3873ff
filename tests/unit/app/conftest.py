"""HTTP clients for the app's FastAPI apps, in process (no Ray, no server)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
from fastapi import FastAPI

with warnings.catch_warnings():  # starlette's notice about its httpx-based client: not the tests' concern
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


@pytest.fixture
def http() -> Callable[[FastAPI], TestClient]:
    """`http(app)`: a TestClient calling the app's routes in process."""
    return TestClient
