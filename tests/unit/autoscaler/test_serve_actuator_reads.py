"""RayServeActuator's reads: the tick's reads share Serve's details for `details_max_age_s`; the read right before a
write does not (Serve's scale call has no conditional form: the check is all that keeps someone's change)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

from autoscaler.actuators import Actuators
from autoscaler.actuators.serve import RayServeActuator
from autoscaler.schema import ActuationStatus, RayServeTarget, ScalingPolicy
from tests.servers.local_http import serving

TARGET = RayServeTarget(app="kcloud", deployment="Model")


@contextmanager
def dashboard(counts: list[int], writes: list[dict]) -> Iterator[str]:
    """Serve's details with `counts[0]` replicas (a test changes it meanwhile); writes are recorded."""

    class Dashboard(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            details = {"applications": {"kcloud": {"deployments": {"Model": {"target_num_replicas": counts[0]}}}}}
            self._answer(json.dumps(details).encode())

        def do_POST(self) -> None:  # noqa: N802
            writes.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self._answer(b"{}")

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    with serving(Dashboard) as url:
        yield url


def test_the_ticks_reads_share_the_details_and_the_read_before_a_write_fetches_them_again():
    counts, writes = [2], []
    with dashboard(counts, writes) as url:
        actuator = RayServeActuator(url, details_max_age_s=60.0)
        assert actuator.replicas(TARGET) == 2
        counts[0] = 5  # an operator scaled it meanwhile
        assert actuator.replicas(TARGET) == 2  # within the age: the shared details
        assert actuator.replicas_now(TARGET) == 5


def test_regression_a_count_changed_within_the_details_age_is_not_overwritten():
    """The check before the write read the cached details, saw the tick's count, and wrote over the operator's."""
    counts, writes = [2], []
    policy = ScalingPolicy.model_validate({"name": "web", "target": TARGET.model_dump(), "nodes": ["n1"],
                                           "mode": "enforce"})
    with dashboard(counts, writes) as url:
        actuators = Actuators([RayServeActuator(url, details_max_age_s=60.0)])
        assert actuators.read(policy).replicas == 2
        counts[0] = 5
        result = actuators.apply(policy, 2, 3)
    assert result.status is ActuationStatus.FAILED and "the target is at 5 replicas" in result.detail
    assert writes == []
