"""A Deployment's scale write is conditional on the resourceVersion it read (409 when it moved); a conflict over a
count nobody changed (the status moved, as it does with every pod a rollout starts) is tried once more, a count
someone else set is kept, and a decided write checks the decision's count on that same read. Against a small API
server on 127.0.0.1 that checks versions as Kubernetes does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from autoscaler.actuators import ActuationError, Actuators, CountMoved
from autoscaler.actuators.kubernetes import KubernetesActuator
from autoscaler.schema import ActuationStatus, DeploymentTarget, ScalingPolicy
from tests.servers.local_http import send_json
from tests.unit.autoscaler.doubles import policy_data


class Deployment:
    """One Deployment's scale subresource; `on_read` runs after each read (another writer, a status update)."""

    def __init__(self, replicas: int):
        self.replicas, self.version, self.patches = replicas, 1, []
        self.on_read = lambda: None
        self.read_answer: bytes | None = None  # what a read answers instead of the object (a proxy's page)
        self.admit = lambda replicas: replicas  # a mutating admission webhook: the count stored for the one asked

    def scale(self) -> dict:
        return {"metadata": {"resourceVersion": str(self.version)}, "spec": {"replicas": self.replicas}}


def handler(deployment: Deployment) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict) -> None:
            send_json(self, body, status)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if deployment.read_answer is not None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(deployment.read_answer)))
                self.end_headers()
                self.wfile.write(deployment.read_answer)
                return
            answer = deployment.scale()
            deployment.on_read()
            self._answer(200, answer)

        def do_PATCH(self) -> None:  # noqa: N802
            patch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            deployment.patches.append(patch)
            if patch.get("metadata", {}).get("resourceVersion") != str(deployment.version):
                self._answer(409, {"kind": "Status", "code": 409, "reason": "Conflict",
                                   "message": "the object has been modified"})
                return
            deployment.replicas = deployment.admit(patch["spec"]["replicas"])
            deployment.version += 1
            self._answer(200, deployment.scale())

        def log_message(self, *args) -> None:
            pass

    return Handler


@contextmanager
def api_server(deployment: Deployment) -> Iterator[KubernetesActuator]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(deployment))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with client.ApiClient(configuration) as api_client:
            yield KubernetesActuator(api_client, timeout_s=5)
    finally:
        server.shutdown()
        server.server_close()


def test_a_conflict_over_a_status_update_is_written_once_more():
    deployment = Deployment(replicas=2)
    reads = []

    def status_moves_once() -> None:  # a pod started between the read and the write
        reads.append(1)
        if len(reads) == 1:
            deployment.version += 1

    deployment.on_read = status_moves_once
    with api_server(deployment) as actuator:
        assert actuator.scale(DeploymentTarget(name="web"), 4).detail == "deployment default/web: replicas 2 -> 4"
    assert deployment.replicas == 4
    assert [p["metadata"]["resourceVersion"] for p in deployment.patches] == ["1", "2"]


def test_a_count_someone_else_set_in_between_is_kept():
    deployment = Deployment(replicas=2)

    def operator_scales_once() -> None:
        if deployment.replicas == 2:
            deployment.replicas, deployment.version = 6, deployment.version + 1

    deployment.on_read = operator_scales_once
    with api_server(deployment) as actuator, pytest.raises(
            ActuationError, match=r"conflict \(409\).*it changed since it was read"):
        actuator.scale(DeploymentTarget(name="web"), 4)
    assert deployment.replicas == 6 and len(deployment.patches) == 1  # theirs stays; no second write


def _web_policy() -> ScalingPolicy:
    return ScalingPolicy.model_validate(policy_data("web"))


def test_an_operators_count_set_right_after_the_check_is_kept():
    """The count is checked and the write made conditional on one read: an operator's scale-out landing just after
    it fails the write (409), where a check read apart from the write's own read would let the write undo it."""
    deployment = Deployment(replicas=2)
    reads = []

    def operator_scales_after_the_first_read() -> None:
        reads.append(1)
        if len(reads) == 1:
            deployment.replicas, deployment.version = 6, deployment.version + 1

    deployment.on_read = operator_scales_after_the_first_read
    with api_server(deployment) as actuator:
        result = Actuators([actuator]).apply(_web_policy(), 2, 4)
    assert result.status is ActuationStatus.FAILED and "conflict (409)" in result.detail
    assert deployment.replicas == 6 and len(deployment.patches) == 1


def test_a_count_moved_since_the_decision_is_not_written():
    deployment = Deployment(replicas=3)
    with api_server(deployment) as actuator:
        result = Actuators([actuator]).apply(_web_policy(), 2, 4)
        with pytest.raises(CountMoved) as moved:
            actuator.scale_from(DeploymentTarget(name="web"), 2, 4)
    assert moved.value.replicas == 3
    assert result.status is ActuationStatus.FAILED
    assert result.detail.startswith("not changed: the target is at 3 replicas, not the 2 this decision was made at")
    assert deployment.replicas == 3 and deployment.patches == []


def test_a_decided_write_reads_the_count_once():
    deployment = Deployment(replicas=2)
    reads = []
    deployment.on_read = lambda: reads.append(1)
    with api_server(deployment) as actuator:
        result = Actuators([actuator]).apply(_web_policy(), 2, 4)
    assert result.status is ActuationStatus.APPLIED and result.detail == "deployment default/web: replicas 2 -> 4"
    assert len(reads) == 1 and deployment.replicas == 4


def test_a_read_answered_with_no_object_is_a_plain_failure_before_any_write():
    """A proxy's page in answer to the read before the write reached the controller as a write of unknown outcome:
    the cooldown kept, and the tick's other policies deciding from a count that was never set."""
    deployment = Deployment(replicas=2)
    deployment.read_answer = b"<html>sign in</html>"
    with api_server(deployment) as actuator:
        result = Actuators([actuator]).apply(_web_policy(), 2, 4)
    assert result.status is ActuationStatus.FAILED
    assert result.detail.startswith("not changed: reading the count before the write failed: JSONDecodeError")
    assert deployment.patches == [] and deployment.replicas == 2


def test_a_count_an_admission_webhook_changed_is_the_one_recorded():
    """A mutating admission webhook (a site's cap) may store another count than the write asked for: the result
    carries the stored one, so the controller's state and event say what the target holds."""
    deployment = Deployment(replicas=2)
    deployment.admit = lambda replicas: min(replicas, 3)
    with api_server(deployment) as actuator:
        scaled = Actuators([actuator]).apply(_web_policy(), 2, 5)
        assert scaled.status is ActuationStatus.APPLIED and scaled.replicas == 3 == deployment.replicas
        same = Actuators([actuator]).apply(_web_policy(), 3, 2)
    assert scaled.detail == ("deployment default/web: replicas 2 -> 3 (asked for 5: the API server's admission "
                             "stored 3)")
    assert same.status is ActuationStatus.APPLIED and same.replicas is None  # stored as asked
