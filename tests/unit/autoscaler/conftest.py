"""Fixtures of the controller tests: the embedded telemetry store and a controller factory over one state file."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from autoscaler.actuators import Actuators
from autoscaler.controller import ScalingController
from autoscaler.state import ControllerState
from core.stores.sqlite import SqliteStore
from tests.unit.autoscaler.doubles import RecordingActuator


@pytest.fixture
def store(tmp_path):
    with SqliteStore(tmp_path / "telemetry") as opened:
        yield opened


@pytest.fixture
def make(tmp_path, store):
    """`make(...) -> (controller, actuator)`: a controller over tmp_path's state file with a recording actuator."""
    def build(forecaster=None, replicas: int = 2, clock=None, workloads=None, node_names=None, holder=None,
              lease_ttl_s=None):
        actuator = RecordingActuator(replicas)
        state = ControllerState(tmp_path / "state" / "autoscaler.sqlite")
        controller = ScalingController(state, store, forecaster, Actuators([actuator]), workloads=workloads,
                                       node_names=node_names, clock=clock or (lambda: datetime.now(UTC)),
                                       holder=holder, lease_ttl_s=lease_ttl_s)
        return controller, actuator
    return build
