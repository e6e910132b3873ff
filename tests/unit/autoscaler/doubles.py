"""Doubles of the controller's collaborators (actuator, forecaster) and helpers that write policies and power.

The real actuators are tested against kmock and real Serve (tests/integration); these record what the controller
asked for, so each unit test can check one rule of the tick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from autoscaler.actuators import ActuationError, Actuator, OutsideBounds, Scaled, TargetCount
from autoscaler.controller import ModelShape
from autoscaler.schema import ScalingTarget
from core.forecasts import PowerForecast, PowerHistory
from core.stores.sqlite import SqliteStore
from core.telemetry import TelemetrySample
from tests import factories
from training.power.stored_history import StoredHistory

STEP = 60


class RecordingActuator(Actuator):
    """Replica counts in a dict; `fail` makes scale() refuse like an API server would.

    `broken` names targets whose reads raise an unexpected error (not ActuationError); `on_scale` runs before each
    scale (a test looks at the state file there, or raises); `bounds` (low, high) refuses other counts as a KubeRay
    worker group does, and `read` reports them unless `hides_bounds` (bounds changed after the tick's read).
    """

    kinds = ("ray_serve", "deployment", "statefulset", "raycluster")

    def __init__(self, replicas: int = 2):
        self.counts: dict[str, int] = {}
        self.default = replicas
        self.calls: list[tuple[str, int]] = []
        self.fail: str | None = None
        self.broken: set[str] = set()
        self.on_scale: Callable[[str, int], None] | None = None
        self.bounds: tuple[int, int] | None = None
        self.hides_bounds = False
        self.admit: Callable[[int], int] | None = None  # an admission webhook: the count stored for the one asked

    def replicas(self, target: ScalingTarget) -> int:
        if self.fail == "read":
            raise ActuationError("deployment default/web not found (404)")
        if key(target) in self.broken:
            raise RuntimeError(f"client bug reading {key(target)}")
        return self.counts.get(key(target), self.default)

    def read(self, target: ScalingTarget) -> TargetCount:
        return TargetCount(self.replicas(target), None if self.hides_bounds else self.bounds)

    def ray_nodes(self, target: ScalingTarget) -> list[str]:
        return ["ray-node-a", "ray-node-b"]

    def scale(self, target: ScalingTarget, replicas: int) -> Scaled:
        if self.fail == "scale":
            raise ActuationError("forbidden (403)")
        if self.bounds is not None and not self.bounds[0] <= replicas <= self.bounds[1]:
            raise OutsideBounds(f"{replicas} replicas is outside [{self.bounds[0]}, {self.bounds[1]}]", *self.bounds)
        if self.on_scale is not None:
            self.on_scale(key(target), replicas)
        self.calls.append((key(target), replicas))
        stored = replicas if self.admit is None else self.admit(replicas)
        self.counts[key(target)] = stored
        return Scaled(f"{key(target)} -> {stored}", stored)


def key(target: ScalingTarget) -> str:
    return getattr(target, "deployment", None) or getattr(target, "name", "")


class FixedForecaster:
    """A served model of `horizon_steps` (10) steps x 60 s whose upper bound is `upper_watts` at every lead; `fail`
    makes the batched call raise."""

    def __init__(self, upper_watts: float | None = None, coverage: float = 0.8, max_gap_s: int | None = None,
                 horizon_steps: int = 10):
        self.upper_watts = upper_watts
        self.horizon_steps = horizon_steps
        self.coverage = coverage
        self.max_gap_s = max_gap_s
        self.batches: list[int] = []
        self.nodes: list[str] = []
        self.histories: list[PowerHistory] = []
        self.fail = False

    def shape(self) -> ModelShape:
        return ModelShape(model_version="power_lstm/1", step_s=STEP, sequence_length=10,
                          horizon_steps=self.horizon_steps, max_gap_s=self.max_gap_s)

    def forecast(self, nodes: Sequence[str], windows: Sequence[StoredHistory]) -> list[PowerForecast | Exception]:
        if self.fail:
            raise ConnectionError("predictor replica died")
        assert len(nodes) == len(windows), "one node per window"
        self.batches.append(len(windows))
        self.nodes.extend(nodes)
        histories = [window.history for window in windows]
        self.histories.extend(histories)
        out: list[PowerForecast | Exception] = []
        for history in histories:
            steps = history.horizon_s // STEP
            last = history.power_watts[-1]
            upper = self.upper_watts if self.upper_watts is not None else last
            out.append(PowerForecast(
                model_version="power_lstm/1", step_s=STEP,
                timestamps=tuple(history.end_time + timedelta(seconds=STEP * k) for k in range(1, steps + 1)),
                point=(last,) * steps, lower=(last,) * steps, upper=(upper,) * steps, confidence=(0.9,) * steps,
                window_coverage=1.0, padded_steps=0, interval_coverage=self.coverage))
        return out


def policy_data(name: str = "web", **overrides: Any) -> dict[str, Any]:
    """An enforced Deployment policy over nodes n1 and n2 with a 5-minute look-ahead."""
    predictive = {"lookahead_minutes": 5, "confidence_threshold": 0.8, **overrides.pop("predictive_scaling", {})}
    return factories.policy_data(**{"name": name, "target": {"kind": "deployment", "name": name},
                                    "nodes": ["n1", "n2"], "mode": "enforce", "predictive_scaling": predictive,
                                    **overrides})


def write_power(store: SqliteStore, watts: dict[str, float], minutes: int = 15, end: datetime | None = None) -> None:
    end = end or datetime.now(UTC)
    store.write([TelemetrySample(timestamp=end - timedelta(minutes=m), node_id=node, source="ipmi", power_watts=w)
                 for node, w in watts.items() for m in range(minutes)])
