"""Live forecast accuracy through real Ray + Serve: the session's scaling controller forecasts two nodes with the
served PowerPredictor while their telemetry is replayed into the store actor step by step; each tick scores the
forecasts whose actuals arrived. GET /api/v1/models/power_lstm/metrics shows the scores per version and node, and
the node whose replayed power the model cannot follow falls back to measured power with the reason in its event.
Meanwhile a client's stored-window forecasts of a node, and the policy's peak bound, are corrected online by the
outcomes of the earlier ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ray import serve

from autoscaler.actor import controller_client
from core.registry import ModelRegistry
from core.stores.remote import RemoteStore
from core.telemetry import TelemetrySample
from core.telemetry_csv import load_telemetry_csv
from tests.conftest import API_TOKEN
from tests.fakes.stored_trace import trace_samples

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
TARGET_APP, TARGET_DEPLOYMENT = "live-target", "Worker"
STEP_S = 120  # the session model's step (tests/conftest.py SMALL_POWER: 2 min, horizon 20 min)
ROUNDS = 24  # telemetry arrives one step per round; enough for >= 100 scored points (min_points) over >= 20 measured
# bins (min_bins) per node
TRACKED, NOISY = "live-hybrid_1", "live-noisy"


@serve.deployment(name=TARGET_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0})
class Worker:
    """A deployment the policies point at (dry run: never scaled)."""

    def __call__(self) -> str:
        return "ok"


def policy(name: str, node: str) -> dict:
    return {"name": name, "target": {"kind": "ray_serve", "app": TARGET_APP, "deployment": TARGET_DEPLOYMENT},
            "nodes": [node], "min_replicas": 1, "max_replicas": 3, "mode": "dry_run", "stale_after_s": "2h",
            "power_based": {"max_power_budget": 1000},
            "predictive_scaling": {"enabled": True, "lookahead_minutes": 20, "confidence_threshold": 0.8}}


def replayed(upm_sample, end: datetime) -> list[TelemetrySample]:
    """The real trace of one server ending at `end` (TRACKED), and NOISY: the same history until ROUNDS steps
    before `end`, then power swinging between 100 W and 1500 W from one step to the next."""
    frame = load_telemetry_csv(upm_sample)
    tracked = trace_samples(frame[frame["node_id"] == "hybrid_1"], end, prefix="live-")
    start = end - timedelta(seconds=ROUNDS * STEP_S)
    noisy = [s.model_copy(update={"node_id": NOISY}) for s in tracked if s.timestamp <= start]
    moment = start + timedelta(seconds=10)
    while moment <= end:
        watts = 1500.0 if int(moment.timestamp() // STEP_S) % 2 else 100.0
        noisy.append(TelemetrySample(timestamp=moment, node_id=NOISY, source="replay", power_watts=watts))
        moment += timedelta(seconds=10)
    return sorted(tracked + noisy, key=lambda s: s.timestamp)


@pytest.fixture
def policies(api):
    serve.run(Worker.bind(), name=TARGET_APP, route_prefix=None)
    for name, node in (("live-tracked", TRACKED), ("live-noisy", NOISY)):
        assert api.post("/api/v1/scaling/policies", json=policy(name, node), headers=AUTH).status_code == 201
    yield
    for name in ("live-tracked", "live-noisy"):
        api.delete(f"/api/v1/scaling/policies/{name}", headers=AUTH)
    serve.delete(TARGET_APP)


def test_forecasts_are_scored_as_telemetry_arrives_and_a_collapsed_node_falls_back(api, policies, upm_sample,
                                                                                   served_models):
    cost = api.get("/api/v1/models/cost_gbm/metrics").json()
    assert cost["live"] is None and "power forecaster" in cost["live_reason"]

    now = datetime.now(UTC)
    end = datetime.fromtimestamp(now.timestamp() // STEP_S * STEP_S, UTC)
    samples, store, controller = replayed(upm_sample, end), RemoteStore(), controller_client(timeout_s=120)
    written = 0
    events: list = []
    learned: list[int] = []  # online_calibration_points of a client's stored-window forecasts of TRACKED
    for round_ in range(ROUNDS + 1):
        arrived = end - timedelta(seconds=(ROUNDS - round_) * STEP_S)
        batch = [s for s in samples[written:] if s.timestamp <= arrived]
        for i in range(0, len(batch), 5000):
            store.write(batch[i:i + 5000])
        written += len(batch)
        events = controller.call("tick")
        answer = api.post("/api/v1/predict/power", json={"workload_id": "live", "node_id": TRACKED,
                                                         "prediction_horizon": "20m"})
        assert answer.status_code == 200 and answer.json()["history_source"] == "store", answer.text
        learned.append(answer.json()["online_calibration_points"])
    # the predictor corrects a node's stored-window forecasts by the outcomes of those it answered before (each
    # replica by its own: Serve spreads the rounds' requests over them)
    assert learned[0] == 0 and max(learned[-6:]) > 0, learned
    by_policy = {e.policy: e for e in events}
    assert by_policy["live-tracked"].signal == "forecast", by_policy["live-tracked"].reason
    # the policy's peak bound, scored against the power that followed each earlier one, is corrected online
    assert "corrected online)" in by_policy["live-tracked"].reason, by_policy["live-tracked"].reason
    noisy_event = by_policy["live-noisy"]
    assert noisy_event.signal == "measured" and noisy_event.confidence is None, noisy_event.reason
    # fallen below 60 % in an earlier round, it stays until coverage is back above 70 %
    assert "live interval coverage" in noisy_event.reason and f"for node {NOISY} < 70%" in noisy_event.reason
    assert "using measured power" in noisy_event.reason
    stored = api.get("/api/v1/scaling/events", params={"policy": "live-noisy", "limit": 1}).json()["events"]
    assert stored[0]["reason"] == noisy_event.reason

    body = api.get("/api/v1/models/power_lstm/metrics").json()
    assert body["held_out"]["mae"] > 0 and body["live_reason"] is None, body["live_reason"]
    live = body["live"]
    assert live["window_s"] == 3600 and live["hit_tolerance"] == 0.1
    served = f"power_lstm/{ModelRegistry(served_models).active_version('power_lstm')}"
    version = next(v for v in live["versions"] if v["model_version"] == served)
    nodes = {n["node_id"]: n for n in version["nodes"]}
    tracked, noisy = nodes[TRACKED], nodes[NOISY]
    for node in (tracked, noisy):
        assert node["points"] >= 100 and node["bins"] >= 20 and node["nominal_coverage"] == pytest.approx(0.8, abs=0.01)
        assert 0 <= node["coverage"] <= 1 and 0 <= node["hit_rate"] <= 1 and node["mae"] >= 0
    assert noisy["coverage"] < 0.6 and noisy["fallback"] and noisy["fallback"] in noisy_event.reason
    assert tracked["fallback"] is None and tracked["mae"] < noisy["mae"] and tracked["coverage"] > noisy["coverage"]
    assert version["points"] >= tracked["points"] + noisy["points"]
