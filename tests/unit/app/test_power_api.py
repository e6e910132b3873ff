"""How a power request picks its stored windows, and how a workload's node forecasts add up (no Ray)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.power_api import MissingPowerHistory, stored_nodes, to_history, to_response
from app.schemas import PowerPredictionRequest
from core.forecasts import PowerForecast
from tests.paths import TEST_DATA
from training.power.workload import sum_forecasts

WORKLOADS = {"llm": ("n1", "n2")}


def forecast(point: float, spread: float, confidence: float, coverage: float = 1.0, padded: int = 0) -> PowerForecast:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return PowerForecast(model_version="power_lstm/1", step_s=60,
                         timestamps=tuple(start + timedelta(minutes=k) for k in (1, 2)),
                         point=(point, point + 10), lower=(point - spread, point), upper=(point + spread, point + 20),
                         confidence=(confidence, confidence), window_coverage=coverage, padded_steps=padded,
                         interval_coverage=0.8)


def test_a_request_with_its_own_history_never_reads_the_store():
    request = PowerPredictionRequest(workload_id="llm", node_id="n9", features={"power_watts": [1.0, 2.0]})
    assert stored_nodes(request, WORKLOADS) is None


def test_node_id_wins_then_the_workloads_map():
    assert stored_nodes(PowerPredictionRequest(workload_id="llm", node_id="n9"), WORKLOADS) == ["n9"]
    assert stored_nodes(PowerPredictionRequest(workload_id="llm"), WORKLOADS) == ["n1", "n2"]
    assert stored_nodes(PowerPredictionRequest(workload_id="other"), WORKLOADS) is None


def test_no_power_history_is_a_plain_domain_error():
    with pytest.raises(MissingPowerHistory, match="recent power history is required"):
        to_history(PowerPredictionRequest(workload_id="other"))
    history = to_history(PowerPredictionRequest(workload_id="w", features={"power_watts": [1.0, 2.0]},
                                                prediction_horizon="10m"))
    assert history.power_watts == (1.0, 2.0) and history.horizon_s == 600


def test_the_workload_label_is_read_as_training_reads_it():
    """Training lowercases and strips the label; "Training" used to reach the model as an unseen workload."""
    for given, read in (("Training ", "training"), ("INFERENCE", "inference"), ("  ", None)):
        request = PowerPredictionRequest(workload_id="w", features={"power_watts": [1.0], "workload_type": given})
        assert to_history(request).workload_type == read


def test_the_seed_s_request_is_a_features_only_history():
    """Regression (issue 12): the seed's own example had no power history and was refused (422)."""
    request = PowerPredictionRequest.model_validate_json((TEST_DATA / "seed" / "power_request.json").read_text())
    assert stored_nodes(request, WORKLOADS) is None
    history = to_history(request)
    assert history.power_watts == () and history.horizon_s == 3600
    assert history.numeric == {"cpu_utilization": (75.2, 78.1, 82.3), "gpu_utilization": (92.1, 94.5, 91.8),
                               "temperature": (65.2, 67.1, 68.5)}


def test_total_is_the_average_power_peak_the_highest_energy_the_sum_over_time():
    """Regression (issue 12): total_predicted_power was the sum of the per-step watts (6,155 W for 30 steps of a
    ~200 W node)."""
    steps = forecast(200, 10, 0.9).model_copy(update={"point": (200.0, 220.0)})
    body = to_response(PowerPredictionRequest(workload_id="w"), steps)
    assert body.total_predicted_power == 210.0 and body.peak_predicted_power == 220.0
    assert body.predicted_energy_kwh == round((200 + 220) * 60 / 3600 / 1000, 4)
    thirty = steps.model_copy(update={"point": (205.0,) * 30, "timestamps": steps.timestamps[:1] * 30,
                                      "lower": (0.0,) * 30, "upper": (300.0,) * 30, "confidence": (0.9,) * 30})
    body = to_response(PowerPredictionRequest(workload_id="w"), thirty)
    assert body.total_predicted_power == 205.0 and body.predicted_energy_kwh == round(205 * 30 / 60 / 1000, 4)
    workload = sum_forecasts([forecast(100, 10, 0.9), forecast(300, 30, 0.7)])  # two nodes: their sum, averaged
    assert to_response(PowerPredictionRequest(workload_id="llm"), workload).total_predicted_power == 410.0


def test_node_forecasts_sum_lead_by_lead_with_the_weakest_confidence():
    total = sum_forecasts([forecast(100, 10, 0.9), forecast(300, 30, 0.7, coverage=0.5, padded=3)])
    assert total.point == (400, 420) and total.lower == (360, 400) and total.upper == (440, 440)
    assert total.confidence == (0.7, 0.7) and total.window_coverage == 0.5 and total.padded_steps == 3
    single = forecast(100, 10, 0.9)
    assert sum_forecasts([single]) is single
