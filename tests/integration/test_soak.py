"""The soak test of issue 10 (bench/soak_harness.py), shortened, on the session's Ray and Serve: clients send the
API's request mix while the store actor, a PowerPredictor replica and the scaling controller are killed in turn.
No 5xx but documented 503s while a part restarts, no sample lost, no double scaling (bench/soak.py runs it for
minutes on its own cluster)."""

from __future__ import annotations

import pytest

from bench.soak_harness import SoakPlan, SoakRun
from bench.soak_report import render
from tests.conftest import API_TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOAK_S = 24  # four windows of 6 s
SETTLE_S = 5  # two of the controller's ticks after the load


@pytest.fixture
def soak_app(api, app_args, tmp_path):
    """The session's main application redeployed through build_app with the controller ticking every 2 s on a
    state of its own; the session's application (and with it its controller) is put back afterwards."""
    from ray import serve

    from app.main import build_app
    from core.names import MAIN_APP

    args = {**app_args, "state_path": str(tmp_path), "autoscaler": {**app_args["autoscaler"], "interval_s": 2}}
    serve.run(build_app(args), name=MAIN_APP, route_prefix="/")
    yield
    serve.run(build_app(app_args), name=MAIN_APP, route_prefix="/")


def test_killing_the_store_a_predictor_replica_and_the_controller_loses_nothing(soak_app, serve_port):
    report = SoakRun(f"http://127.0.0.1:{serve_port}", API_TOKEN, SoakPlan(duration_s=SOAK_S, settle_s=SETTLE_S)).run()
    table = render(report)  # every assertion shows it
    assert [w.name for w in report.windows] == ["baseline", "store actor killed", "predictor replica killed",
                                                "controller killed"], table
    for window in report.windows:
        assert window.ok > 0, table  # the API kept serving in every window
        assert window.other_5xx == 0 and window.other == 0, table
    assert all(fault.recovered_after_s is not None for fault in report.faults), table
    samples = report.samples
    assert samples.unacknowledged == 0 and samples.written > 0, table
    assert samples.stored == samples.written, table
    for policy in report.scaling:
        assert (policy.applied_actions, policy.pending_actions, policy.replicas) == (1, 0, 2), table
    assert report.passed, table
