"""The REST API through real Ray Serve over HTTP on 127.0.0.1."""

from __future__ import annotations

import math
import time

import httpx
import pytest

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer test-token"}

HISTORY = [250.0 + 10 * math.sin(i / 5) for i in range(30)]
POWER_REQUEST = {
    "workload_id": "llm-train-7b",
    "node_id": "gpu-node-01",
    "features": {"power_watts": HISTORY, "cpu_utilization": [60.0] * 30, "workload_type": "hybrid"},
    "prediction_horizon": "10m",
}
COST_REQUEST = {
    "resources": {"cpu_cores": 16, "memory_gb": 128, "gpu_count": 2, "gpu_type": "A100-80GB"},
    "duration_hours": 6,
    "spot_instance": False,
    "workload_type": "training",
}


def _details(response: httpx.Response) -> str:
    return str(response.json()["detail"])


def test_healthz_and_docs(api: httpx.Client):
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/api/v1/predict/power", "/api/v1/predict/cost", "/api/v1/models"} <= set(paths)


def test_power_prediction(api: httpx.Client):
    response = api.post("/api/v1/predict/power", json=POWER_REQUEST)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["workload_id"] == "llm-train-7b" and body["model_version"] == "power_lstm/1"
    assert len(body["predictions"]) == 5  # 10 minutes at the model's 2-minute step
    for point in body["predictions"]:
        assert point["lower"] <= point["predicted_power"] <= point["upper"]
        assert 0.0 <= point["confidence"] <= 1.0
    assert body["total_predicted_power"] == pytest.approx(sum(p["predicted_power"] for p in body["predictions"]),
                                                          abs=0.05)
    assert body["window_coverage"] == 1.0 and body["padded_steps"] == 0


def test_short_history_is_padded_and_said(api: httpx.Client):
    request = {**POWER_REQUEST, "features": {"power_watts": [240.0, 245.0, 250.0]}}
    body = api.post("/api/v1/predict/power", json=request).json()
    assert body["padded_steps"] == 12 and body["window_coverage"] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"features": {"power_watts": []}}, "power_watts"),
        ({"features": {"power_watts": ["abc"]}}, "power_watts"),
        ({"features": {"power_watts": [-5.0]}}, "power_watts"),
        ({"features": {"power_watts": [200.0] * 20_000}}, "power_watts"),
        ({"features": {"power_watts": [200.0], "cpu_utilization": [140.0]}}, "cpu_utilization"),
        ({"features": {"power_watts": [200.0], "gpu_temp": [1.0]}}, "gpu_temp"),
        ({"features": None, "node_id": None}, "power_watts"),
        ({"prediction_horizon": "1 fortnight"}, "prediction_horizon"),
        ({"prediction_horizon": "3m"}, "prediction_horizon"),  # not a whole number of 2-minute steps
        ({"prediction_horizon": "24h"}, "prediction_horizon"),  # beyond the model's horizon
        ({"workload_id": ""}, "workload_id"),
        ({"end_time": "2026-01-05T12:00:00"}, "end_time"),
    ],
)
def test_bad_power_requests_are_422_naming_the_field(api: httpx.Client, change, field):
    response = api.post("/api/v1/predict/power", json={**POWER_REQUEST, **change})
    assert response.status_code == 422, response.text
    assert field in _details(response)


def test_node_without_stored_telemetry_is_404_naming_it(api: httpx.Client):
    response = api.post("/api/v1/predict/power", json={**POWER_REQUEST, "features": None, "node_id": "ghost-7"})
    assert response.status_code == 404 and "ghost-7" in response.text


def test_nan_is_refused(api: httpx.Client):
    text = '{"workload_id": "w", "features": {"power_watts": [NaN, 1.0]}}'
    response = api.post("/api/v1/predict/power", content=text, headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_huge_body_is_413(api: httpx.Client):
    response = api.post("/api/v1/predict/power", content=b"[" + b"1," * 3_000_000 + b"1]",
                        headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_cost_prediction(api: httpx.Client):
    response = api.post("/api/v1/predict/cost", json=COST_REQUEST)
    assert response.status_code == 200, response.text
    body = response.json()
    assert sum(body["cost_breakdown"].values()) == pytest.approx(body["predicted_cost"], rel=1e-6)
    assert body["lower"] <= body["predicted_cost"] <= body["upper"]
    spot = api.post("/api/v1/predict/cost", json={**COST_REQUEST, "spot_instance": True}).json()
    assert spot["predicted_cost"] < body["predicted_cost"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"resources": {"cpu_cores": -4, "memory_gb": 8, "gpu_count": 0}}, "cpu_cores"),
        ({"resources": {"cpu_cores": 4, "memory_gb": 8, "gpu_count": 1, "gpu_type": "Voodoo2"}}, "gpu_type"),
        ({"duration_hours": 0}, "duration_hours"),
        ({"duration_hours": "long"}, "duration_hours"),
    ],
)
def test_bad_cost_requests_are_422(api: httpx.Client, change, field):
    response = api.post("/api/v1/predict/cost", json={**COST_REQUEST, **change})
    assert response.status_code == 422, response.text
    assert field in _details(response)


def test_batch_runs_and_reports_per_item(api: httpx.Client):
    items = [{"type": "power", "request": POWER_REQUEST}, {"type": "cost", "request": COST_REQUEST},
             {"type": "power", "request": {**POWER_REQUEST, "prediction_horizon": "2h"}}]
    submitted = api.post("/api/v1/predict/batch", json={"items": items}, headers=AUTH)
    assert submitted.status_code == 202, submitted.text
    batch_id = submitted.json()["batch_id"]
    status = _wait_for(api, f"/api/v1/predict/batch/{batch_id}", {"done", "failed"})
    assert status["status"] == "done" and status["completed"] == 3
    results = {r["index"]: r for r in status["results"]}
    assert results[0]["status"] == "ok" and len(results[0]["result"]["predictions"]) == 5
    assert results[1]["status"] == "ok" and results[1]["result"]["predicted_cost"] > 0
    assert results[2]["status"] == "error" and "horizon" in results[2]["error"]


def test_batch_limits_and_unknown_id(api: httpx.Client):
    assert api.get("/api/v1/predict/batch/0123456789abcdef").status_code == 404
    assert api.post("/api/v1/predict/batch", json={"items": []}, headers=AUTH).status_code == 422
    too_many = [{"type": "cost", "request": COST_REQUEST}] * 1001
    assert api.post("/api/v1/predict/batch", json={"items": too_many}, headers=AUTH).status_code == 422
    bad_item = [{"type": "power", "request": {**POWER_REQUEST, "features": None}}]
    response = api.post("/api/v1/predict/batch", json={"items": bad_item}, headers=AUTH)
    assert response.status_code == 422 and "power_watts" in _details(response)


def test_models_and_metrics(api: httpx.Client):
    models = {m["model_id"]: m for m in api.get("/api/v1/models").json()["models"]}
    assert models["power_lstm"]["active_version"] == 1 and models["power_lstm"]["model_type"] == "lstm"
    assert models["cost_gbm"]["model_type"] == "lightgbm"
    api.post("/api/v1/predict/power", json=POWER_REQUEST)
    metrics = api.get("/api/v1/models/power_lstm/metrics").json()
    for key in ("mae", "rmse", "mape", "coverage"):
        assert key in metrics["held_out"]
    assert metrics["served_version"] == "power_lstm/1"
    assert metrics["inference_latency_ms"]["p50"] > 0
    assert api.get("/api/v1/models/nope/metrics").status_code == 404


@pytest.mark.slow
def test_retrain_needs_the_token_then_registers_and_serves_a_new_version(api: httpx.Client):
    assert api.post("/api/v1/models/retrain", json={"epochs": 4}).status_code == 401
    wrong = api.post("/api/v1/models/retrain", json={"epochs": 4}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    started = api.post("/api/v1/models/retrain", json={"epochs": 4, "prediction_horizon": "20m"},
                       headers=AUTH)
    assert started.status_code == 202, started.text
    job = _wait_for(api, f"/api/v1/models/retrain/{started.json()['job_id']}", {"succeeded", "failed"}, 240)
    assert job["status"] == "succeeded", job
    assert job["registered_version"] == 2
    assert api.get("/api/v1/models/retrain/0123456789abcdef").status_code == 404


def test_replicas_follow_the_active_version_without_restart(api: httpx.Client, served_models):
    from core.registry import ModelRegistry

    registry = ModelRegistry(served_models)
    assert registry.versions("power_lstm")[-1] >= 2  # registered by the retrain test
    registry.activate("power_lstm", 2)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            served = api.post("/api/v1/predict/power", json=POWER_REQUEST).json()["model_version"]
            if served == "power_lstm/2":
                break
            time.sleep(0.5)
        assert served == "power_lstm/2"
    finally:
        registry.activate("power_lstm", 1)


def _wait_for(api: httpx.Client, path: str, states: set[str], timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = api.get(path).json()
        if body["status"] in states:
            return body
        time.sleep(0.5)
    raise AssertionError(f"{path} did not reach {states}: {body}")
