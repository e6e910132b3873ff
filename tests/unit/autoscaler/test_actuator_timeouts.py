"""A change sent and never answered is an unknown outcome (the cooldown stays: autoscaler/intents.py); a request
that could not be sent, or a read that timed out, is a plain failure. Against real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from autoscaler.actuators import ActuationError, ActuationOutcomeUnknown
from autoscaler.actuators.kubernetes import KubernetesActuator
from autoscaler.actuators.serve import RayServeActuator
from autoscaler.schema import DeploymentTarget, RayServeTarget

SILENCE_S = 3.0  # how long the server keeps a write unanswered; the actuators wait 0.5 s


class WritesGoUnanswered(BaseHTTPRequestHandler):
    """Answers reads (a scale subresource with 2 replicas), reads each write's body and then says nothing."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({"spec": {"replicas": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _silent(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(SILENCE_S)

    do_POST = do_PATCH = _silent  # noqa: N815

    def log_message(self, *args) -> None:
        pass


@contextmanager
def silent_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), WritesGoUnanswered)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as probe:  # nothing listens once it is closed
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def kubernetes_actuator(url: str) -> KubernetesActuator:
    configuration = client.Configuration()
    configuration.host = url
    return KubernetesActuator(client.ApiClient(configuration), timeout_s=0.5)


def test_a_serve_scale_sent_and_not_answered_is_an_unknown_outcome():
    with silent_server() as url:
        with pytest.raises(ActuationOutcomeUnknown, match="sent, no answer"):
            RayServeActuator(url, timeout_s=0.5).scale(RayServeTarget(app="a", deployment="d"), 3)


def test_a_serve_scale_that_cannot_be_sent_is_a_plain_failure():
    with pytest.raises(ActuationError, match="not reachable") as raised:
        RayServeActuator(closed_port_url(), timeout_s=0.5).scale(RayServeTarget(app="a", deployment="d"), 3)
    assert not isinstance(raised.value, ActuationOutcomeUnknown)


def test_a_kubernetes_patch_sent_and_not_answered_is_an_unknown_outcome():
    with silent_server() as url:
        actuator = kubernetes_actuator(url)
        assert actuator.replicas(DeploymentTarget(name="web")) == 2  # reads are answered
        with pytest.raises(ActuationOutcomeUnknown, match="cannot tell whether scale deployment default/web landed"):
            actuator.scale(DeploymentTarget(name="web"), 3)


def test_a_kubernetes_scale_that_cannot_be_sent_is_a_plain_failure():
    with pytest.raises(ActuationError, match="unreachable") as raised:
        kubernetes_actuator(closed_port_url()).scale(DeploymentTarget(name="web"), 3)
    assert not isinstance(raised.value, ActuationOutcomeUnknown)
