"""A kubeconfig's exec plugin that never hands over a token fails the call within the actuator's credential limit,
whether it hangs when the credentials load or when an expired token is refreshed before a request; while it still
hangs, the next call fails at once and starts no other plugin. Real plugin processes, a real HTTP server."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from autoscaler.actuators import ActuationError, ActuationOutcomeUnknown
from autoscaler.actuators.kubernetes import KubernetesActuator
from autoscaler.schema import DeploymentTarget
from tests.servers.local_http import send_json, serving

LIMIT_S = 0.5
HANG_S = 4  # the plugin's hang; it then ends on its own
EXEC_API = "client.authentication.k8s.io/v1beta1"
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{url}"}}}}]
users: [{{name: u, user: {{exec: {{apiVersion: {api}, command: "{plugin}", interactiveMode: Never}}}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
"""


class Scale(BaseHTTPRequestHandler):
    """Answers every read with a scale of 2 replicas, and counts the requests."""

    requests = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).requests += 1
        send_json(self, {"spec": {"replicas": 2}})

    def log_message(self, *args) -> None:
        pass


def actuator_with_plugin(tmp_path: Path, url: str, hang_from_run: int) -> KubernetesActuator:
    """An actuator whose kubeconfig's plugin answers an already expired token on its first runs and hangs from run
    `hang_from_run` on; each run appends a line to tmp_path/runs."""
    plugin = tmp_path / "plugin.sh"
    token = json.dumps({"apiVersion": EXEC_API, "kind": "ExecCredential",
                        "status": {"token": "t", "expirationTimestamp": "2020-01-01T00:00:00Z"}})
    plugin.write_text(f"""#!/bin/sh
echo run >> "{tmp_path}/runs"
if [ "$(wc -l < "{tmp_path}/runs")" -ge {hang_from_run} ]; then exec sleep {HANG_S}; fi
echo '{token}'
""")
    plugin.chmod(0o755)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(url=url, api=EXEC_API, plugin=plugin))
    return KubernetesActuator(kubeconfig=str(kubeconfig), timeout_s=2.0, credential_timeout_s=LIMIT_S)


def plugin_runs(tmp_path: Path) -> int:
    return len((tmp_path / "runs").read_text().splitlines())


def timed(call) -> tuple[ActuationError, float]:
    started = time.monotonic()
    with pytest.raises(ActuationError) as raised:
        call()
    return raised.value, time.monotonic() - started


@pytest.fixture
def kubeconfig_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.mark.usefixtures("kubeconfig_env")
def test_a_plugin_hanging_at_load_fails_the_read_within_the_limit_and_is_not_run_again_while_it_hangs(tmp_path):
    Scale.requests = 0
    with serving(Scale) as url:
        actuator = actuator_with_plugin(tmp_path, url, hang_from_run=1)
        error, took = timed(lambda: actuator.replicas(DeploymentTarget(name="web")))
        assert took < LIMIT_S + 1.0
        assert "cannot load Kubernetes credentials" in str(error) and "took longer than 0.5 s" in str(error)

        error, took = timed(lambda: actuator.replicas(DeploymentTarget(name="web")))
        assert took < 0.3 and "still running" in str(error)
        assert plugin_runs(tmp_path) == 1 and Scale.requests == 0


@pytest.mark.usefixtures("kubeconfig_env")
def test_a_plugin_hanging_at_a_token_refresh_fails_the_write_as_not_sent(tmp_path):
    Scale.requests = 0
    with serving(Scale) as url:
        actuator = actuator_with_plugin(tmp_path, url, hang_from_run=2)  # loads, then hangs refreshing the token
        error, took = timed(lambda: actuator.scale(DeploymentTarget(name="web"), 3))
        assert took < LIMIT_S + 1.0
        assert not isinstance(error, ActuationOutcomeUnknown)
        assert "not sent: cannot refresh the Kubernetes credentials" in str(error)
        assert plugin_runs(tmp_path) == 2 and Scale.requests == 0


@pytest.mark.usefixtures("kubeconfig_env")
def test_every_later_refresh_is_bounded_too(tmp_path):
    """The client's loader sets a new, unbounded refresh hook at every refresh: only the first was bounded, so a
    plugin hanging at a later token expiry stalled the tick."""
    Scale.requests = 0
    with serving(Scale) as url:
        actuator = actuator_with_plugin(tmp_path, url, hang_from_run=4)  # loads, refreshes twice, then hangs
        assert actuator.replicas(DeploymentTarget(name="web")) == 2
        assert actuator.replicas(DeploymentTarget(name="web")) == 2
        error, took = timed(lambda: actuator.replicas(DeploymentTarget(name="web")))
        assert took < LIMIT_S + 1.0 and "cannot refresh the Kubernetes credentials" in str(error)
        assert plugin_runs(tmp_path) == 4 and Scale.requests == 2
