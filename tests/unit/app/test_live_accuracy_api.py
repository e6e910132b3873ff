"""GET /api/v1/models/{model_id}/metrics shows the controller's live accuracy beside the held-out figures, and a
null `live` with the reason (never an error) when there is none (app/model_routes.py, around a stand-in replica)."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from app.access import Access
from app.ingress import api
from app.replica import serving_replica
from app.settings import AppArgs
from autoscaler.live_accuracy import LiveAccuracyReport, NodeLiveAccuracy, VersionLiveAccuracy
from core.actors import ActorUnavailable
from core.registry_metadata import ModelMetadata
from deployments.cost import ServedCostModel

with warnings.catch_warnings():  # starlette's notice about its httpx-based client (as tests/unit/app/conftest.py)
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

SCORE = {"points": 120, "bins": 40, "mae": 14.2, "coverage": 0.78, "nominal_coverage": 0.8, "hit_rate": 0.61,
         "mean_confidence": 0.64}


def report(*versions: str) -> LiveAccuracyReport:
    return LiveAccuracyReport(
        at=datetime.now(UTC), window_s=3600, hit_tolerance=0.1, pending_forecasts=3, evicted_forecasts=7,
        served_version=versions[-1],
        versions=[VersionLiveAccuracy(model_version=v, nodes=[NodeLiveAccuracy(node_id="n1", **SCORE)], **SCORE)
                  for v in versions])


class Controller:
    def __init__(self, answer):
        self.answer = answer

    async def call_async(self, method, *args):
        assert method == "live_accuracy"
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Registry:
    def get(self, model_id, version=None):
        model_type = "lightgbm" if model_id == "cost_gbm" else "lstm"
        return None, ModelMetadata(model_id=model_id, version=2, model_type=model_type, created_at=datetime.now(UTC),
                                   metrics={"mae": 12.0})


class Unanswered:
    """A model handle whose replicas do not answer (latency then stays empty)."""

    def __getattr__(self, name):
        raise RuntimeError("no replica")


class Replica:
    registry = Registry()
    power = cost = Unanswered()
    cost_model = SimpleNamespace(describe=lambda: ServedCostModel(model_version="cost_gbm/1", latency_ms={}))

    def __init__(self, controller):
        self.access = Access("t")
        self.args = AppArgs()
        self.controller = controller


@pytest.fixture
def metrics():
    def get(controller, model_id: str = "power_lstm") -> dict:
        api.dependency_overrides[serving_replica] = lambda: Replica(controller)
        try:
            response = TestClient(api).get(f"/api/v1/models/{model_id}/metrics")
        finally:
            api.dependency_overrides.clear()
        assert response.status_code == 200, response.text
        return response.json()
    return get


def test_live_scores_of_the_model_s_versions_beside_the_held_out_ones(metrics):
    body = metrics(Controller(report("power_lstm/1", "power_lstm_1h/1", "power_lstm/2")))
    assert body["held_out"] == {"mae": 12.0} and body["live_reason"] is None
    live = body["live"]
    assert (live["window_s"], live["hit_tolerance"], live["pending_forecasts"], live["evicted_forecasts"]) == (
        3600, 0.1, 3, 7)
    assert [v["model_version"] for v in live["versions"]] == ["power_lstm/1", "power_lstm/2"]
    version = live["versions"][1]
    assert {k: version[k] for k in SCORE} == SCORE
    assert version["nodes"] == [{"node_id": "n1", "fallback": None, **SCORE}]


@pytest.mark.parametrize(("controller", "model_id", "reason"), [
    (Controller(ActorUnavailable("the scaling controller is not running")), "power_lstm",
     "no live accuracy: the scaling controller is not running"),
    (Controller(AttributeError("'ActorHandle' object has no attribute 'live_accuracy'")), "power_lstm",
     "no live accuracy: the scaling controller could not report it"),
    (Controller(report("power_lstm_1h/1")), "power_lstm", "no forecast of power_lstm scored in the last 1h"),
    (Controller(report("power_lstm/1")), "cost_gbm", "measured for the power forecaster"),
])
def test_no_live_scores_is_null_with_the_reason(metrics, controller, model_id, reason):
    body = metrics(controller, model_id)
    assert body["live"] is None and reason in body["live_reason"], body["live_reason"]
    assert body["held_out"] == {"mae": 12.0}


class PinnedRegistry(Registry):
    """Version 2 active; each version's own held-out figures."""

    def get(self, model_id, version=None):
        version = version or 2
        return None, ModelMetadata(model_id=model_id, version=version, model_type="lstm",
                                   created_at=datetime.now(UTC), metrics={"mae": 10.0 + version})


class PinnedPower:
    """The power app, its default model pinned to version 1 (`user_config.model_version`)."""

    class _Describe:
        @staticmethod
        async def remote(model_id):
            return SimpleNamespace(model_version=f"{model_id}/1", latency_ms={}, pinned=True)

    describe = _Describe()


def test_a_pinned_version_s_own_held_out_figures_are_shown_beside_it():
    """Regression (review): with the default model pinned to version 1 while version 2 was active, the metrics
    showed version 2's held-out figures beside served_version power_lstm/1, and the list marked version 2 active."""
    class Pinned(Replica):
        registry = PinnedRegistry()

        async def power(self):
            return PinnedPower()

    api.dependency_overrides[serving_replica] = lambda: Pinned(Controller(report("power_lstm/1")))
    try:
        body = TestClient(api).get("/api/v1/models/power_lstm/metrics").json()
    finally:
        api.dependency_overrides.clear()
    assert (body["served_version"], body["version"], body["held_out"]) == ("power_lstm/1", 1, {"mae": 11.0}), body
