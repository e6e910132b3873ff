"""A change sent and never answered is an unknown outcome (the cooldown stays: autoscaler/intents.py); a request
that could not be sent, or a read that timed out, is a plain failure. Against real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import ssl
import time
import types
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler

import pytest
import urllib3
from kubernetes import client

from autoscaler.actuators import ActuationError, ActuationOutcomeUnknown
from autoscaler.actuators.kubernetes import KubernetesActuator
from autoscaler.actuators.serve import RayServeActuator
from autoscaler.schema import DeploymentTarget, RayServeTarget
from tests.servers.local_http import send_json, serving

SILENCE_S = 3.0  # how long the server keeps a write unanswered; the actuators wait 0.5 s


class WritesGoUnanswered(BaseHTTPRequestHandler):
    """Answers reads (a scale subresource with 2 replicas), reads each write's body and then says nothing."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        send_json(self, {"spec": {"replicas": 2}})

    def _silent(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(SILENCE_S)

    do_POST = do_PATCH = _silent  # noqa: N815

    def log_message(self, *args) -> None:
        pass


def silent_server():
    return serving(WritesGoUnanswered)


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


def answering_handler(status: int, body: bytes, content_type: str, writes_only: bool):
    """A handler that answers every request (or, `writes_only`, every write: reads get a scale of 2) with `status`
    and `body`."""

    class Answer(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            read = self.command == "GET" and writes_only
            self.send_response(200 if read else status)
            self.send_header("Content-Type", "application/json" if read else content_type)
            answer = json.dumps({"spec": {"replicas": 2}}).encode() if read else body
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_PATCH = _answer  # noqa: N815

        def log_message(self, *args) -> None:
            pass

    return Answer


def answering(status: int, body: bytes, content_type: str = "application/json", *, writes_only: bool = False):
    return serving(answering_handler(status, body, content_type, writes_only))


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_write_answered_by_a_gateway_error_is_an_unknown_outcome(status):
    """A 5xx that may come after the change was applied keeps the cooldown (the next tick must not count twice)."""
    body = json.dumps({"kind": "Status", "message": "etcdserver: request timed out"}).encode()
    with answering(status, body, writes_only=True) as url:
        with pytest.raises(ActuationOutcomeUnknown, match="may have landed"):
            RayServeActuator(url, timeout_s=0.5).scale(RayServeTarget(app="a", deployment="d"), 3)
        with pytest.raises(ActuationOutcomeUnknown, match="may have landed"):
            kubernetes_actuator(url).scale(DeploymentTarget(name="web"), 3)


def test_the_dashboards_503_for_a_failed_controller_call_is_an_unknown_outcome():
    """Ray's dashboard answers 503 "Internal Server Error" for any error of the Serve controller's call (which may
    have applied the change); its other 503 ("Serve controller is not available") refuses before calling."""
    with answering(503, b'{"error": "Internal Server Error"}', writes_only=True) as url:
        with pytest.raises(ActuationOutcomeUnknown, match="may have landed"):
            RayServeActuator(url, timeout_s=0.5).scale(RayServeTarget(app="a", deployment="d"), 3)
    with answering(503, b'{"error": "Serve controller is not available"}', writes_only=True) as url:
        with pytest.raises(ActuationError) as raised:
            RayServeActuator(url, timeout_s=0.5).scale(RayServeTarget(app="a", deployment="d"), 3)
        assert not isinstance(raised.value, ActuationOutcomeUnknown)


@pytest.mark.parametrize("status", [400, 403, 409, 503])
def test_a_write_refused_is_a_plain_failure(status):
    with answering(status, b'{"error": "no"}', writes_only=True) as url:
        for scale in (lambda: RayServeActuator(url, timeout_s=0.5).scale(RayServeTarget(app="a", deployment="d"), 3),
                      lambda: kubernetes_actuator(url).scale(DeploymentTarget(name="web"), 3)):
            with pytest.raises(ActuationError) as raised:
                scale()
            assert not isinstance(raised.value, ActuationOutcomeUnknown)


def test_a_dashboard_answering_with_a_login_page_is_an_actuation_error():
    """A proxy's HTML page (HTTP 200) is neither a count nor a crash: reads fail plainly, writes are unknown."""
    with answering(200, b"<html>Sign in</html>", "text/html") as url:
        actuator = RayServeActuator(url, timeout_s=0.5)
        with pytest.raises(ActuationError, match="not JSON") as raised:
            actuator.replicas(RayServeTarget(app="a", deployment="d"))
        assert not isinstance(raised.value, ActuationOutcomeUnknown)
        with pytest.raises(ActuationOutcomeUnknown, match="not JSON"):
            actuator.scale(RayServeTarget(app="a", deployment="d"), 3)


@pytest.mark.parametrize("details", [
    [], {"applications": []}, {"applications": {"kcloud": None}}, {"applications": {"kcloud": {"deployments": []}}},
    {"applications": {"kcloud": {"deployments": {"Model": None}}}},
    {"applications": {"kcloud": {"deployments": {"Model": {"target_num_replicas": "3"}}}}},
])
def test_serve_details_of_an_unexpected_shape_are_actuation_errors(details):
    with answering(200, json.dumps(details).encode()) as url:
        actuator = RayServeActuator(url, timeout_s=0.5)
        with pytest.raises(ActuationError):
            actuator.replicas(RayServeTarget(app="kcloud", deployment="Model"))


def test_regression_a_failed_serve_details_read_is_kept_for_details_max_age():
    """The failure was not cached: each policy's reader thread waited its turn for another timed-out GET while
    holding the details lock (8 targets x 10 s on a hung dashboard)."""
    gets: list[str] = []

    class Hung(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            gets.append(self.path)
            time.sleep(SILENCE_S)

        def log_message(self, *args) -> None:
            pass

    with serving(Hung) as url:
        actuator = RayServeActuator(url, timeout_s=0.5, details_max_age_s=0.3)  # under the timeout, as by default
        with ThreadPoolExecutor(max_workers=8) as pool:
            errors = list(pool.map(lambda i: _read_error(actuator, f"app{i}"), range(8)))
        assert len(gets) == 1 and all("did not answer" in error for error in errors), errors
        actuator.details_max_age_s = 0  # past the age: read again
        assert "did not answer" in _read_error(actuator, "app0") and len(gets) == 2


def _read_error(actuator: RayServeActuator, app: str) -> str:
    with pytest.raises(ActuationError) as raised:
        actuator.replicas(RayServeTarget(app=app, deployment="Model"))
    return str(raised.value)


@pytest.mark.parametrize(("reason", "unknown"), [
    (urllib3.exceptions.SSLError("[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC]"), True),  # after it went out
    (urllib3.exceptions.NewConnectionError(None, "Connection refused"), False),  # it never went out
])
def test_a_kubernetes_write_that_failed_after_it_went_out_is_an_unknown_outcome(monkeypatch, reason, unknown):
    """A TLS error while reading the answer to a scale was "unreachable": a refused change, the cooldown freed
    though it may have landed."""
    actuator = kubernetes_actuator("https://127.0.0.1:6443")

    def read(name, namespace, **kwargs):
        return types.SimpleNamespace(data=json.dumps({"spec": {"replicas": 2}, "metadata": {}}).encode())

    def patch(name, namespace, body, **kwargs):
        raise urllib3.exceptions.MaxRetryError(None, "/apis/apps/v1/...", reason=reason)

    monkeypatch.setattr(KubernetesActuator, "_scale_methods", lambda self, target: (read, patch))
    with pytest.raises(ActuationError) as raised:
        actuator.scale(DeploymentTarget(name="web"), 3)
    assert isinstance(raised.value, ActuationOutcomeUnknown) is unknown


@pytest.mark.parametrize(("error", "unknown"), [
    (ssl.SSLError("bad record mac"), True),  # raised by getresponse: the POST went out
    (urllib.error.URLError(ConnectionRefusedError("refused")), False),  # urlopen's wrapper: it never went out
])
def test_a_serve_write_that_failed_after_it_went_out_is_an_unknown_outcome(monkeypatch, error, unknown):
    """A TLS error reading the dashboard's answer (an OSError, not a ConnectionError) was "not reachable"."""
    from autoscaler.actuators import serve

    actuator = RayServeActuator("https://127.0.0.1:8265", timeout_s=0.5)
    monkeypatch.setattr(actuator, "_deployment", lambda target: {"target_num_replicas": 2})

    def fail(request, timeout):
        raise error

    monkeypatch.setattr(serve, "open_url", fail)
    with pytest.raises(ActuationError) as raised:
        actuator.scale(RayServeTarget(app="a", deployment="d"), 3)
    assert isinstance(raised.value, ActuationOutcomeUnknown) is unknown


def stalled_error_body(status: int):
    """A handler that answers every request with `status`, promises a body and then stalls past the actuator's
    timeout."""

    class Stalled(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.flush()
            time.sleep(SILENCE_S)

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, *args) -> None:
            pass

    return serving(Stalled)


def test_an_error_answer_whose_body_stalls_is_the_error_it_would_be_without_it():
    """Reading such a body raised TimeoutError past the error handling: a read's failure was not kept for the tick's
    other policies, and a refused write was taken for one of unknown outcome."""
    target = RayServeTarget(app="a", deployment="d")
    with stalled_error_body(400) as url:
        actuator = RayServeActuator(url, timeout_s=0.5)
        with pytest.raises(ActuationError, match="HTTP 400: Bad Request") as raised:
            actuator.replicas(target)
        assert not isinstance(raised.value, ActuationOutcomeUnknown)
        assert isinstance(actuator._details[1], ActuationError)  # kept: the tick's other policies are answered with it
        with pytest.raises(ActuationError, match="HTTP 400") as raised:
            actuator.scale(target, 3)
        assert not isinstance(raised.value, ActuationOutcomeUnknown)
    with stalled_error_body(503) as url, pytest.raises(ActuationOutcomeUnknown, match="may have landed"):
        RayServeActuator(url, timeout_s=0.5).scale(target, 3)  # Ray's 503 for a failed call, or another: unknown
