"""The power route around a stand-in PowerPredictor: what it asks the replica, and its HTTP answers (no Ray)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from app.access import Access
from app.power_route import power_api
from app.replica import serving_replica
from core.forecasts import ForecastRequestError, PowerForecast, PowerHistory
from core.stores.remote import StoreActorUnavailable
from tests.paths import TEST_DATA
from training.power.stored_history import NoStoredTelemetry, PowerStopped, UnknownNode
from training.power.workload import StoredForecast, WorkloadTelemetryMissing

HISTORY = {"workload_id": "w", "node_id": "n1", "features": {"power_watts": [200.0, 210.0]},
           "prediction_horizon": "2m"}


def forecast(point: float = 100.0) -> PowerForecast:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return PowerForecast(model_version="power_lstm/3", step_s=60,
                         timestamps=(start + timedelta(minutes=1), start + timedelta(minutes=2)),
                         point=(point, point + 10), lower=(point - 5, point), upper=(point + 5, point + 20),
                         confidence=(0.9, 0.8), window_coverage=1.0, padded_steps=0, interval_coverage=0.8,
                         confidence_tolerance=0.05)


class Replica:
    """Stands in for the PowerPredictor replica the route runs in."""

    workloads = {"llm": ["n1", "n2"]}
    access = Access(None)

    def __init__(self, failure: Exception | None = None):
        self.failure = failure
        self.features_only = True
        self.calls: list = []
        self.steps: list = []  # the step each call asked for (None: the horizon's model)

    async def forecast(self, history: PowerHistory) -> PowerForecast:
        self.calls.append(("forecast", history.power_watts, history.horizon_s))
        self.steps.append(history.step_s)
        if history.step_s == 300:
            raise ForecastRequestError("step", "no served model works at a 5min step")
        if history.power_watts:
            return forecast()
        if not self.features_only:
            raise ForecastRequestError("power_watts", "required: this model has no features-only mode")
        return forecast().model_copy(update={"estimated_from": tuple(sorted(history.numeric)),
                                             "trained_on_synthetic_data": True, "window_coverage": 0.0})

    async def forecast_filled(self, history: PowerHistory, node_id: str) -> tuple[PowerForecast, int]:
        self.calls.append(("filled", node_id))
        return await self.forecast(history), 3

    async def forecast_stored(self, nodes, horizon_s, workload_type=None, workload_id=None,
                              step_s=None) -> StoredForecast:
        self.calls.append(("stored", nodes, horizon_s, workload_type, workload_id))
        self.steps.append(step_s)
        if self.failure is not None:
            raise self.failure
        return StoredForecast(forecast=forecast(200.0), age_s=130.04, stale=True)


@pytest.fixture
def replica():
    stand_in = Replica()
    power_api.dependency_overrides[serving_replica] = lambda: stand_in
    yield stand_in
    power_api.dependency_overrides.clear()


@pytest.fixture
def post(http):
    return lambda body: http(power_api).post("/", json=body)


def test_a_request_s_own_history_is_forecast_as_given(replica, post):
    response = post(HISTORY)
    assert response.status_code == 200, response.text
    # with its node_id: the replica may complete a short window from that node's stored telemetry
    assert replica.calls == [("filled", "n1"), ("forecast", (200.0, 210.0), 120)]
    body = response.json()
    assert body["store_filled_steps"] == 3
    replica.calls.clear()
    without_node = post({key: value for key, value in HISTORY.items() if key != "node_id"}).json()
    assert replica.calls == [("forecast", (200.0, 210.0), 120)] and without_node["store_filled_steps"] == 0
    # the average over the horizon (it was the sum, 210 W, before issue 12), the peak, the energy
    assert body["history_source"] == "request" and body["total_predicted_power"] == 105.0
    assert body["peak_predicted_power"] == 110.0
    assert body["predicted_energy_kwh"] == 0.0035 and body["nodes"] is None and body["stale"] is False
    assert body["estimated_from"] is None and body["trained_on_synthetic_data"] is False
    assert body["confidence_tolerance"] == 0.05  # regression (review): the band the confidences are for, not "±10 %"


def test_the_seed_s_request_is_answered_from_its_features(replica, post):
    """Regression (issue 12): the seed's example (features, no power history, no node) was a 422."""
    response = post(json.loads((TEST_DATA / "seed" / "power_request.json").read_text()))
    assert response.status_code == 200, response.text
    assert replica.calls == [("forecast", (), 3600)]
    body = response.json()
    assert body["history_source"] == "features_only" and body["window_coverage"] == 0.0
    assert body["estimated_from"] == ["cpu_utilization", "gpu_utilization", "temperature"]
    assert body["trained_on_synthetic_data"] is True


def test_a_node_or_a_configured_workload_is_forecast_from_the_store(replica, post):
    node = post({"workload_id": "w", "node_id": "n7", "prediction_horizon": "2m"}).json()
    assert replica.calls[-1] == ("stored", ["n7"], 120, None, None)
    assert (node["history_source"], node["data_age_seconds"], node["stale"], node["nodes"]) == ("store", 130.0, True,
                                                                                              None)
    workload = post({"workload_id": "llm", "features": {"workload_type": "training"}, "prediction_horizon": "2m"})
    assert replica.calls[-1] == ("stored", ["n1", "n2"], 120, "training", "llm")
    assert workload.json()["nodes"] == ["n1", "n2"]


@pytest.mark.parametrize(("failure", "status", "loc"), [
    (UnknownNode("no telemetry stored for node 'new-node'"), 404, ["body", "node_id"]),
    (PowerStopped("no recent power telemetry stored for node 'new-node' (its power readings stopped)"), 503,
     ["body", "node_id"]),
    (StoreActorUnavailable("the telemetry store is not running"), 503, []),
])
def test_a_node_without_stored_power_is_forecast_from_the_request_s_features(replica, post, failure, status, loc):
    """README: the store answers for a node it knows; a new node, one whose power readings stopped, or any node
    while the store cannot answer (it was a 503 then), with feature lists gets the features-only mode."""
    replica.failure = failure
    body = {"workload_id": "w", "node_id": "new-node", "features": {"cpu_utilization": [50.0, 60.0]},
            "prediction_horizon": "2m"}
    response = post(body)
    assert response.status_code == 200, response.text
    assert replica.calls == [("stored", ["new-node"], 120, None, None), ("forecast", (), 120)]
    assert response.json()["history_source"] == "features_only"
    assert response.json()["estimated_from"] == ["cpu_utilization"]
    for features in ({}, {"workload_type": "training"}):  # no lists to estimate from: the unknown node stays the answer
        unknown = post({**body, "features": features})
        assert unknown.status_code == status and unknown.json()["detail"][0]["loc"] == loc, features
    replica.features_only = False  # a model without the features-only mode: still the missing power, not a 422
    older = post(body)
    assert older.status_code == status and str(failure) in older.json()["detail"][0]["msg"]


@pytest.mark.parametrize(("failure", "status", "loc", "phrase"), [
    (UnknownNode("no telemetry stored for node 'n7'"), 404, ["body", "node_id"], "'n7'"),
    (NoStoredTelemetry("no recent power telemetry stored for node 'n7'"), 503, ["body", "node_id"], "no recent"),
    (WorkloadTelemetryMissing("no telemetry stored for node 'n2' (workload 'llm')"), 503, ["body", "workload_id"],
     "(workload 'llm')"),
    (StoreActorUnavailable("the telemetry store is not running"), 503, [], "the telemetry store is not running"),
])
def test_stored_telemetry_errors_answer_with_their_status_and_field(replica, post, failure, status, loc, phrase):
    replica.failure = failure
    response = post({"workload_id": "w", "node_id": "n7"})
    assert response.status_code == status
    [detail] = response.json()["detail"]
    assert detail["loc"] == loc and phrase in detail["msg"]


def test_without_history_node_or_configured_workload_it_is_422_naming_power_watts(replica, post):
    response = post({"workload_id": "not-in-config"})
    assert response.status_code == 422 and replica.calls == []
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["body", "features", "power_watts"] and "workloads" in detail["msg"]


def test_a_request_may_say_the_step_of_its_lists_and_only_a_model_of_that_step_answers(replica, post):
    """Without it, 60 one-minute values sent with a 2 h horizon went to the hourly model, read as 60 hours."""
    assert post({**HISTORY, "step": "1min"}).status_code == 200
    assert post({"workload_id": "w", "node_id": "n7", "prediction_horizon": "2m", "step": "1min"}).status_code == 200
    assert post(HISTORY).status_code == 200
    assert replica.steps == [60, 60, None]
    wrong = post({**HISTORY, "step": "5min"})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "step"]
    for bad in ("0s", "8d", "soon"):
        refused = post({**HISTORY, "step": bad})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "step"], bad
