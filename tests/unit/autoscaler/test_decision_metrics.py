"""The controller's per-decision metrics: made from the catalog's entries, tagged per event, harmless without Ray."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from autoscaler import actor
from autoscaler.actor import DecisionMetrics
from autoscaler.schema import ActuationResult, ScalingEvent
from core.metrics_catalog import SCALING_DECISIONS, SCALING_DESIRED_REPLICAS, SCALING_SIGNAL_WATTS, MetricSpec


class Recorder:
    def __init__(self, spec: MetricSpec) -> None:
        self.spec, self.calls = spec, []

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append((value, tags))

    def inc(self, tags: dict[str, str]) -> None:
        self.calls.append((1, tags))


def _event(**changes) -> ScalingEvent:
    fields = dict(at=datetime.now(UTC), policy="gpu-pool", target={"kind": "deployment", "name": "x"},
                  action="scale_out", from_replicas=1, to_replicas=3, reason="forecast above the threshold",
                  mode="enforce", measured_power_watts=610.0, forecast_power_watts=840.0,
                  actuation=ActuationResult(status="applied"))
    return ScalingEvent(**{**fields, **changes})


def test_each_decision_sets_the_catalog_metrics_with_its_tags(monkeypatch: pytest.MonkeyPatch):
    made: dict[str, Recorder] = {}
    monkeypatch.setattr(actor, "create", lambda spec: made.setdefault(spec.name, Recorder(spec)))
    DecisionMetrics().publish([_event(), _event(forecast_power_watts=None, to_replicas=None, action="hold")])
    replicas, power, decisions = (made[s.name].calls for s in (SCALING_DESIRED_REPLICAS, SCALING_SIGNAL_WATTS,
                                                               SCALING_DECISIONS))
    assert replicas == [(3, {"policy": "gpu-pool", "mode": "enforce"})]
    assert power[:3] == [(610.0, {"policy": "gpu-pool", "signal": "measured"}),
                         (840.0, {"policy": "gpu-pool", "signal": "forecast"}),
                         (610.0, {"policy": "gpu-pool", "signal": "measured"})]
    (cleared, tags), = power[3:]  # the forecast the policy no longer decides on does not linger on a panel
    assert math.isnan(cleared) and tags == {"policy": "gpu-pool", "signal": "forecast"}
    assert [tags["action"] for _, tags in decisions] == ["scale_out", "hold"]
    assert {tags["actuation"] for _, tags in decisions} == {"applied"}


def test_without_ray_metrics_publishing_records_nothing_and_never_fails(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(actor, "create", lambda spec: None)
    DecisionMetrics().publish([_event()])


def test_regression_a_policy_no_longer_decided_on_leaves_no_value_on_the_panels(monkeypatch: pytest.MonkeyPatch):
    """A deleted policy's desired replicas and power kept their last value for as long as the controller ran."""
    made: dict[str, Recorder] = {}
    monkeypatch.setattr(actor, "create", lambda spec: made.setdefault(spec.name, Recorder(spec)))
    metrics = DecisionMetrics()
    metrics.publish([_event(), _event(policy="web")])
    replicas, power = made[SCALING_DESIRED_REPLICAS.name].calls, made[SCALING_SIGNAL_WATTS.name].calls
    replicas.clear(), power.clear()
    metrics.publish([_event(policy="web", mode="dry_run")])  # gpu-pool deleted, web now a dry run
    cleared = {(tags["policy"], tags["mode"]) for value, tags in replicas if math.isnan(value)}
    assert cleared == {("gpu-pool", "enforce"), ("web", "enforce")}
    assert (3, {"policy": "web", "mode": "dry_run"}) in replicas
    assert {tags["signal"] for value, tags in power if tags["policy"] == "gpu-pool" and math.isnan(value)} == {
        "measured", "forecast"}
    replicas.clear()
    metrics.publish([_event(policy="web", mode="dry_run", to_replicas=None, action="hold")])  # failed: kept
    assert replicas == []
