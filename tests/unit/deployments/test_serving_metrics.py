"""Serving metrics: every model call in the inference-time histogram of its model and version, and a node's
stored-telemetry forecast as point/lower/upper gauges."""

from __future__ import annotations

import math
import threading
from collections import deque
from datetime import UTC, datetime, timedelta

import pytest

from core.forecasts import PowerForecast
from deployments import forecast_gauges, latency
from deployments.forecast_gauges import ForecastGauges
from deployments.latency import LatencyRecorder


class FakeMetric:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, dict[str, str]]] = []

    def observe(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append(("observe", value, tags))

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append(("set", value, tags))


def test_each_model_call_is_observed_in_seconds_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    histogram = FakeMetric()
    monkeypatch.setattr(latency, "create", lambda spec: histogram if spec.name == "kcloud_model_inference_seconds"
                        else None)
    recorder = LatencyRecorder("power_lstm")
    recorder.record(12.5, count=4)
    recorder.record(2.0)  # e.g. after a new version was activated: the same series (Ray keeps every label set)
    assert histogram.calls == [("observe", 0.0125, {"model_id": "power_lstm"}),
                               ("observe", 0.002, {"model_id": "power_lstm"})]
    assert recorder.percentiles()["calls"] == 2 and recorder.percentiles()["requests"] == 5
    assert LatencyRecorder("cost_gbm").percentiles() == {"calls": 0, "requests": 0}


def test_a_call_recorded_while_a_new_version_loads_never_leaves_a_window_without_its_count():
    """Regression: `restart` (a worker thread loading a version) cleared the window, a call recorded on the loop
    landed, then the count was zeroed: the metrics read divided by zero (a 500) until the next call."""
    recorder = LatencyRecorder("cost_gbm")
    recorder.record(5.0)
    landed: list[threading.Thread] = []

    class Clearing(deque):
        def clear(self) -> None:
            super().clear()
            call = threading.Thread(target=recorder.record, args=(7.0,))  # the loop's call, mid-restart
            call.start()
            call.join(0.5)  # under the lock it waits for the restart to end
            landed.append(call)

    recorder._durations = Clearing(recorder._durations, maxlen=8)
    recorder.restart()
    landed[0].join(5)
    assert recorder.percentiles() == {"p50": 7.0, "p90": 7.0, "p99": 7.0, "calls": 1, "requests": 1,
                                      "mean_batch_size": 1.0}


def test_a_node_s_forecast_is_published_for_the_next_step(monkeypatch: pytest.MonkeyPatch) -> None:
    gauge = FakeMetric()
    monkeypatch.setattr(forecast_gauges, "create", lambda spec: gauge)
    now = datetime.now(UTC)
    forecast = PowerForecast(model_version="power_lstm/3", step_s=60, timestamps=(now, now + timedelta(minutes=1)),
                             point=(410.0, 420.0), lower=(390.0, 395.0), upper=(430.0, 445.0), confidence=(0.9, 0.8),
                             window_coverage=1.0, padded_steps=0, interval_coverage=0.8)
    ForecastGauges().publish("gpu-1", forecast)
    tags = {"node_id": "gpu-1", "model_id": "power_lstm"}  # not the version: a series per activation
    assert gauge.calls == [("set", 410.0, {**tags, "bound": "point"}), ("set", 390.0, {**tags, "bound": "lower"}),
                           ("set", 430.0, {**tags, "bound": "upper"})]


def test_a_forecast_for_an_earlier_step_is_not_published_over_a_later_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a workload's window cut back to its oldest node's bin set the node's gauges to a forecast a bin
    or more behind the one they showed."""
    gauge = FakeMetric()
    monkeypatch.setattr(forecast_gauges, "create", lambda spec: gauge)
    now = datetime.now(UTC).replace(second=0, microsecond=0)

    def forecast(first: datetime, watts: float) -> PowerForecast:
        return PowerForecast(model_version="power_lstm/3", step_s=60, timestamps=(first,), point=(watts,),
                             lower=(watts,), upper=(watts,), confidence=(0.9,), window_coverage=1.0, padded_steps=0,
                             interval_coverage=0.8)

    gauges = ForecastGauges()
    gauges.publish("gpu-1", forecast(now, 400.0))
    gauges.publish("gpu-1", forecast(now - timedelta(minutes=1), 300.0))  # an older window: not shown
    gauges.publish("gpu-2", forecast(now - timedelta(minutes=1), 200.0))  # another node: its own
    gauges.publish("gpu-1", forecast(now, 410.0))  # the same step again: the newer answer
    points = [(value, tags["node_id"]) for _, value, tags in gauge.calls if tags["bound"] == "point"]
    assert points == [(400.0, "gpu-1"), (200.0, "gpu-2"), (410.0, "gpu-1")]


def test_a_withdrawn_or_forgotten_node_shows_no_forecast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a node whose telemetry went stale, or that was forgotten beyond MAX_NODES, kept its last
    forecast on its gauges until the replica restarted, read on panels as current."""
    gauge = FakeMetric()
    monkeypatch.setattr(forecast_gauges, "create", lambda spec: gauge)
    monkeypatch.setattr(forecast_gauges, "MAX_NODES", 2)
    now = datetime.now(UTC)
    forecast = PowerForecast(model_version="power_lstm/3", step_s=60, timestamps=(now,), point=(400.0,),
                             lower=(380.0,), upper=(420.0,), confidence=(0.9,), window_coverage=1.0, padded_steps=0,
                             interval_coverage=0.8)
    gauges = ForecastGauges()
    for node in ("gpu-1", "gpu-2"):
        gauges.publish(node, forecast)
    gauges.withdraw("gpu-1", "power_lstm/3")
    gauges.withdraw("gpu-1", "power_lstm/3")  # once only
    gauges.publish("gpu-3", forecast)
    gauges.publish("gpu-4", forecast)  # gpu-2 forgotten
    cleared = [tags["node_id"] for _, value, tags in gauge.calls if math.isnan(value) and tags["bound"] == "point"]
    assert cleared == ["gpu-1", "gpu-2"]


def test_a_restart_empties_the_figures_and_keeps_the_series(monkeypatch: pytest.MonkeyPatch) -> None:
    histogram = FakeMetric()
    monkeypatch.setattr(latency, "create", lambda spec: histogram)
    recorder = LatencyRecorder("power_lstm")
    recorder.record(500.0, count=3)
    recorder.restart()
    assert recorder.percentiles() == {"calls": 0, "requests": 0}
    recorder.record(2.0)
    assert recorder.percentiles()["p99"] == 2.0 and recorder.percentiles()["requests"] == 1
    assert [call[2] for call in histogram.calls] == [{"model_id": "power_lstm"}] * 2


def test_a_node_no_forecast_is_published_for_any_more_shows_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (review): a node's gauges were cleared only when a stale window of it was forecast, so a node no
    policy read any more (its policy deleted) showed its last forecast for good, and a dashboard's max took it."""
    gauge = FakeMetric()
    monkeypatch.setattr(forecast_gauges, "create", lambda spec: gauge)
    clock = [0.0]
    now = datetime.now(UTC)
    forecast = PowerForecast(model_version="power_lstm/3", step_s=60, timestamps=(now,), point=(400.0,),
                             lower=(380.0,), upper=(420.0,), confidence=(0.9,), window_coverage=1.0, padded_steps=0,
                             interval_coverage=0.8)
    gauges = ForecastGauges(unasked_after_s=900, clock=lambda: clock[0])
    gauges.publish("gpu-1", forecast)
    gauges.publish("gpu-2", forecast)
    clock[0] = 600.0
    gauges.publish("gpu-2", forecast)  # gpu-1 not asked for since 0 s
    clock[0] = 901.0
    gauges.publish("gpu-2", forecast)
    cleared = [tags["node_id"] for _, value, tags in gauge.calls if math.isnan(value) and tags["bound"] == "point"]
    assert cleared == ["gpu-1"]
    clock[0] = 2000.0
    gauges.expire()  # none published at all any more (the last policy deleted): the registry poll clears them
    cleared = [tags["node_id"] for _, value, tags in gauge.calls if math.isnan(value) and tags["bound"] == "point"]
    assert cleared == ["gpu-1", "gpu-2"]
