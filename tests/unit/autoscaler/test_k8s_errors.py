"""How a Kubernetes API error on a write reads: refused (nothing landed: the next tick decides again) or of unknown
outcome (the change may have landed: the intent stays for the next tick to judge on the count it reads)."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from autoscaler.actuators.base import ActuationError, ActuationOutcomeUnknown
from autoscaler.actuators.kubernetes import KubernetesActuator
from autoscaler.schema import RayClusterTarget

TARGET = RayClusterTarget(name="rc", worker_group="gpu")


def raised(status: int, reason: str) -> ActuationError:
    actuator = KubernetesActuator(client.ApiClient())
    with pytest.raises(ActuationError) as caught, actuator._errors(TARGET, "scale"):
        raise ApiException(status=status, reason=reason)
    return caught.value


def test_a_patch_whose_test_op_failed_is_a_refusal_not_an_unknown_outcome():
    """The API server answers 422 when a JSON patch's `test` op fails (the worker groups moved since the read); the
    kmock emulator of the integration tests answers 500 there, so only this test reads a real 422."""
    refused = raised(422, "Unprocessable Entity")
    assert not isinstance(refused, ActuationOutcomeUnknown)
    assert str(refused) == "cannot scale raycluster default/rc: unprocessable entity (422)"


@pytest.mark.parametrize(("status", "unknown"), [(500, True), (502, True), (504, True), (503, False), (409, False)])
def test_a_server_or_gateway_failure_on_a_write_may_have_landed(status, unknown):
    """503 and 4xx say the write was refused."""
    assert isinstance(raised(status, "Error"), ActuationOutcomeUnknown) == unknown
