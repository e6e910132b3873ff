"""The REST API through real Ray Serve over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import math
import time

import httpx
import pytest

from tests.conftest import API_TOKEN
from tests.factories import activate_and_wait, wait_for_status
from tests.paths import TEST_DATA

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

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
    head = api.head("/healthz")  # through Serve's proxy as `curl -I` sends it
    assert head.status_code == 200 and head.content == b""
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
    watts = [p["predicted_power"] for p in body["predictions"]]  # the average over the horizon (issue 12)
    assert body["total_predicted_power"] == pytest.approx(sum(watts) / len(watts), abs=0.05)
    assert body["peak_predicted_power"] == max(watts)
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
    status = wait_for_status(api, f"/api/v1/predict/batch/{batch_id}", {"done", "failed"})
    assert status["status"] == "done" and status["completed"] == 3
    results = {r["index"]: r for r in status["results"]}
    assert results[0]["status"] == "ok" and len(results[0]["result"]["predictions"]) == 5
    assert results[1]["status"] == "ok" and results[1]["result"]["predicted_cost"] > 0
    assert results[2]["status"] == "error" and "horizon" in results[2]["error"]


def test_a_batch_s_results_over_grpc_s_default_4_mib_are_read_back_whole_then_by_pages(api: httpx.Client, app_args):
    """Through Serve's proxy (over gRPC, as `make run` runs it): 1,000 results of 22 kB (hourly forecasts a week
    ahead are 17 kB) pass in one answer (a bare 500 under gRPC's default 4 MiB), and 1,000 of 40 kB come a 32 MiB
    answer at a time, `next_offset` saying where to read on."""
    from core.records import RecordStore

    def stored(result_bytes: int) -> str:
        results = [{"index": n, "status": "ok", "result": {"steps": "x" * result_bytes}} for n in range(1000)]
        return RecordStore(app_args["state_path"], "batches").create(
            {"status": "done", "items": [], "items_count": 1000, "completed": 1000, "results": results})["id"]

    whole = api.get(f"/api/v1/predict/batch/{stored(22_000)}")
    assert whole.status_code == 200, whole.text[:300]
    assert len(whole.json()["results"]) == 1000 and whole.json()["next_offset"] is None
    url, offset, pages = f"/api/v1/predict/batch/{stored(40_000)}", 0, []
    while offset is not None:
        page = api.get(url, params={"offset": offset})
        assert page.status_code == 200, page.text[:300]
        pages.append([r["index"] for r in page.json()["results"]])
        offset = page.json()["next_offset"]
    assert len(pages) == 2 and sum(pages, []) == list(range(1000))


def test_batch_limits_and_unknown_id(api: httpx.Client):
    assert api.get("/api/v1/predict/batch/0123456789abcdef").status_code == 404
    assert api.post("/api/v1/predict/batch", json={"items": []}, headers=AUTH).status_code == 422
    too_many = [{"type": "cost", "request": COST_REQUEST}] * 1001
    assert api.post("/api/v1/predict/batch", json={"items": too_many}, headers=AUTH).status_code == 422
    bad_item = [{"type": "power", "request": {**POWER_REQUEST, "features": None}}]
    response = api.post("/api/v1/predict/batch", json={"items": bad_item}, headers=AUTH)
    assert response.status_code == 422 and "power_watts" in _details(response)


def test_models_and_metrics(api: httpx.Client, served_models):
    from core.registry import ModelRegistry

    active = ModelRegistry(served_models).active_version("power_lstm")
    models = {m["model_id"]: m for m in api.get("/api/v1/models").json()["models"]}
    assert models["power_lstm"]["active_version"] == active and models["power_lstm"]["model_type"] == "lstm"
    assert models["cost_gbm"]["model_type"] == "lightgbm"
    api.post("/api/v1/predict/power", json=POWER_REQUEST)
    metrics = api.get("/api/v1/models/power_lstm/metrics").json()
    for key in ("mae", "rmse", "mape", "coverage"):
        assert key in metrics["held_out"]
    assert metrics["served_version"] == f"power_lstm/{active}"
    assert metrics["inference_latency_ms"]["p50"] > 0
    assert api.get("/api/v1/models/nope/metrics").status_code == 404


@pytest.mark.slow
def test_retrain_needs_the_token_then_registers_and_serves_a_new_version(api: httpx.Client, served_models):
    from core.registry import ModelRegistry

    registry = ModelRegistry(served_models)
    latest, active = registry.versions("power_lstm")[-1], registry.active_version("power_lstm")
    assert api.post("/api/v1/models/retrain", json={"epochs": 4}).status_code == 401
    wrong = api.post("/api/v1/models/retrain", json={"epochs": 4}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    started = api.post("/api/v1/models/retrain", json={"epochs": 4, "prediction_horizon": "20m"},
                       headers=AUTH)
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    second = api.post("/api/v1/models/retrain", json={"epochs": 4, "prediction_horizon": "20m"}, headers=AUTH)
    assert second.status_code == 409, second.text  # one retrain of a model at a time
    (item,) = second.json()["detail"]
    assert item["loc"] == ["body", "model_id"] and job_id in item["msg"]
    job = wait_for_status(api, f"/api/v1/models/retrain/{job_id}", {"succeeded", "failed"}, 240)
    assert job["status"] == "succeeded", job
    assert job["registered_version"] == latest + 1
    activate_and_wait(api, registry, "power_lstm", active, POWER_REQUEST)  # promoted or not: back to where it was
    assert api.get("/api/v1/models/retrain/0123456789abcdef").status_code == 404


def _power_replicas() -> set[str]:
    """The actor ids of the PowerPredictor replicas alive now."""
    from ray.util.state import list_actors

    from core.names import POWER_APP, POWER_DEPLOYMENT

    return {actor.actor_id for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)
            if actor.class_name == f"ServeReplica:{POWER_APP}:{POWER_DEPLOYMENT}"}


def _answered_by_all(api: httpx.Client, version: str, answers: int = 10, timeout_s: float = 30.0) -> None:
    """`answers` answers in a row from `version`: every replica has followed, not the first one only."""
    deadline, streak, served = time.monotonic() + timeout_s, 0, None
    while streak < answers:
        assert time.monotonic() < deadline, f"{streak} answers in a row from {version}, then {served}"
        served = api.post("/api/v1/predict/power", json=POWER_REQUEST).json().get("model_version")
        streak = streak + 1 if served == version else 0


def test_replicas_follow_the_active_version_without_restart(api: httpx.Client, served_models):
    from core.registry import ModelRegistry

    registry = ModelRegistry(served_models)
    active, latest = registry.active_version("power_lstm"), registry.versions("power_lstm")[-1]
    if latest == active:  # the retrain test (slow) did not run first: register a copy of the active one, inactive
        folder, metadata = registry.get("power_lstm", active)
        latest = registry.publish("power_lstm", folder, model_type="lstm", data_span=metadata.data_span,
                                  feature_spec=metadata.feature_spec, feature_spec_hash=metadata.feature_spec_hash,
                                  config=metadata.config, metrics=metadata.metrics, training=metadata.training,
                                  activate=False).version
    replicas = _power_replicas()
    assert replicas
    try:
        activate_and_wait(api, registry, "power_lstm", latest, POWER_REQUEST, timeout_s=30)
        _answered_by_all(api, f"power_lstm/{latest}")
        assert _power_replicas() == replicas  # the same replicas: none restarted to follow
    finally:
        activate_and_wait(api, registry, "power_lstm", active, POWER_REQUEST)


SEED_POWER_REQUEST = json.loads((TEST_DATA / "seed" / "power_request.json").read_text())


@pytest.fixture(scope="module")
def hourly_model(api: httpx.Client, served_models, tmp_path_factory) -> str:
    """power_lstm_1h/1, an hourly model (24 h ahead) trained on a SYNTHETIC 3-week trace beside the session's
    2-minute power_lstm; the PowerPredictor loads it at its next registry poll (`predictor.resolutions`). The
    tests using it come last here: from then on, horizons beyond 20 minutes are answered by it."""
    from training import train_lstm
    from training.synthetic import generate_trace, write_csv

    trace = tmp_path_factory.mktemp("hourly") / "synthetic.csv"
    write_csv(generate_trace(nodes=4, duration_s=21 * 86400, step_s=600), trace)
    assert train_lstm.main(["--data", str(trace), "--model-path", str(served_models), "--model-id", "power_lstm_1h",
                            "--step", "1h", "--horizon", "24h", "--sequence-length", "24", "--hidden-size", "8",
                            "--epochs", "4", "--quiet"]) == 0
    deadline = time.monotonic() + 60
    while api.post("/api/v1/predict/power", json={**POWER_REQUEST, "prediction_horizon": "24h"}).status_code != 200:
        assert time.monotonic() < deadline, "the PowerPredictor did not load power_lstm_1h"
        time.sleep(0.5)
    return "power_lstm_1h/1"


@pytest.mark.slow
def test_the_seed_s_power_request_is_answered_from_its_features(api: httpx.Client, hourly_model: str):
    """Regression (issue 12): the seed's example (features, no power history, no node, 1 h) was a 422."""
    response = api.post("/api/v1/predict/power", json=SEED_POWER_REQUEST)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["history_source"] == "features_only" and body["model_version"] == hourly_model
    assert body["estimated_from"] == ["cpu_utilization", "gpu_utilization", "temperature"]
    assert body["trained_on_synthetic_data"] is True and body["window_coverage"] == 0.0
    [point] = body["predictions"]  # one hourly step
    assert point["lower"] <= point["predicted_power"] <= point["upper"] and body["interval_coverage"] == 0.8
    assert body["total_predicted_power"] == body["peak_predicted_power"] == point["predicted_power"]


@pytest.mark.slow
def test_each_horizon_goes_to_the_finest_model_that_covers_it(api: httpx.Client, hourly_model: str):
    for horizon, version, steps in (("10m", "power_lstm/1", 5), ("1h", hourly_model, 1), ("24h", hourly_model, 24)):
        body = api.post("/api/v1/predict/power", json={**POWER_REQUEST, "prediction_horizon": horizon}).json()
        assert (body["model_version"], len(body["predictions"])) == (version, steps), horizon
    refused = api.post("/api/v1/predict/power", json={**POWER_REQUEST, "prediction_horizon": "30m"})
    assert refused.status_code == 422 and "prediction_horizon" in _details(refused)  # past 20 min, not whole hours
    models = {m["model_id"]: m for m in api.get("/api/v1/models").json()["models"]}
    assert (models["power_lstm"]["step_seconds"], models["power_lstm"]["horizon_seconds"]) == (120, 1200)
    hourly = models["power_lstm_1h"]
    assert (hourly["step_seconds"], hourly["horizon_seconds"], hourly["trained_on_synthetic_data"]) == (3600, 86400,
                                                                                                      True)
    assert models["power_lstm"]["trained_on_synthetic_data"] is False
    assert api.get("/api/v1/models/power_lstm_1h/metrics").json()["served_version"] == hourly_model


