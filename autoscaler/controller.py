"""The scaling controller's tick: telemetry window -> forecast -> decide -> actuate -> scaling event.

`ScalingController` is plain Python (the Ray actor in autoscaler/actor.py wraps it), so the tick is tested and
benchmarked without a cluster. One tick reads the latest power of every node once, builds the forecast
inputs of every predictive policy and sends them to the forecaster as one batch, then decides and actuates
policy by policy. Every policy gets an event every tick, holds included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import fmean
from typing import Any, Protocol

from autoscaler.actuators import ActuationError, Actuators
from autoscaler.decision import decide
from autoscaler.policy_config import policy_from, target_nodes
from autoscaler.schema import (
    ActuationResult,
    ActuationStatus,
    ForecastView,
    PowerObservation,
    ScaleAction,
    ScalingDecision,
    ScalingEvent,
    ScalingPolicy,
)
from autoscaler.settings import AutoScalingConfig
from autoscaler.state import ControllerState
from core.stores.base import NodeLatest, StoreUnavailable, TelemetryStore
from training.power.inference import PowerForecast, PowerHistory
from training.power.stored_history import NoStoredTelemetry, stored_history

logger = logging.getLogger(__name__)
READ_WORKERS = 16  # concurrent replica-count reads per tick


@dataclass(frozen=True)
class ModelShape:
    """What the controller must know of the served forecaster to build its inputs."""

    model_version: str
    step_s: int
    sequence_length: int
    horizon_steps: int


class Forecaster(Protocol):
    """The served power forecaster (the PowerPredictor deployment, or a local one in benchmarks)."""

    def shape(self) -> ModelShape:
        """The served model's step, window and horizon; raises when no model is served."""

    def forecast(self, histories: Sequence[PowerHistory]) -> list[PowerForecast | Exception]:
        """One forecast per history, in order; a failed one is its exception."""


@dataclass
class _Pending:
    """A policy between the reading and the deciding phase of a tick."""

    policy: ScalingPolicy
    nodes: list[str]
    replicas: int | None = None
    observation: PowerObservation | None = None
    forecast: ForecastView | None = None
    confidence: float | None = None
    note: str | None = None
    requests: list[int] | None = None  # indexes into the tick's forecast batch, one per node


class ScalingController:
    """Holds the policies and runs ticks over them; state lives in `ControllerState`."""

    def __init__(self, state: ControllerState, store: TelemetryStore, forecaster: Forecaster | None,
                 actuators: Actuators, *, defaults: AutoScalingConfig | None = None,
                 workloads: Mapping[str, tuple[str, ...]] | None = None,
                 node_names: Callable[[list[str]], Mapping[str, str]] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        """`node_names` maps Ray node ids to telemetry node ids; with it, a policy that names no nodes (and has
        no `workloads` entry) uses the nodes its target's replicas run on, where the actuator can tell."""
        self.state = state
        self.store = store
        self.forecaster = forecaster
        self.actuators = actuators
        self.defaults = defaults or AutoScalingConfig()
        self.workloads = dict(workloads or {})
        self.node_names = node_names
        self.clock = clock

    # --- policies ----------------------------------------------------------------------------------------

    def put_policy(self, data: ScalingPolicy | Mapping[str, Any]) -> tuple[ScalingPolicy, bool]:
        """Store a policy (a mapping is validated with the config's defaults); returns it and whether it is new.

        Raises pydantic's ValidationError, with locations relative to the policy.
        """
        policy = data if isinstance(data, ScalingPolicy) else policy_from(data, self.defaults)
        return policy, self.state.put_policy(policy, self.clock())

    # --- the tick ----------------------------------------------------------------------------------------

    def tick(self) -> list[ScalingEvent]:
        """Evaluate every policy once; returns the recorded events in policy-name order."""
        now = self.clock()
        pending = [_Pending(policy, target_nodes(policy, self.workloads)) for policy in self.state.policies()]
        latest, store_problem = self._latest()
        self._read_replicas(pending)
        for item in pending:
            self._observe(item, latest, store_problem)
        self._forecast([item for item in pending if self._wants_forecast(item)], latest)
        return [self._decide_and_act(item, now) for item in pending]

    def _latest(self) -> tuple[dict[str, NodeLatest], str | None]:
        try:
            return {n.node_id: n for n in self.store.latest()}, None
        except StoreUnavailable as exc:
            return {}, f"telemetry store unavailable: {exc}"

    def _read_replicas(self, items: list[_Pending]) -> None:
        """Every target's replica count, read concurrently (each read is a network call)."""
        def read(item: _Pending) -> None:
            try:
                item.replicas = self.actuators.replicas(item.policy)
                if not item.nodes and self.node_names is not None:
                    item.nodes = self._discover_nodes(item.policy)
            except ActuationError as exc:
                item.note = f"cannot read the target's replicas: {exc}"

        if items:
            with ThreadPoolExecutor(max_workers=min(READ_WORKERS, len(items))) as pool:
                list(pool.map(read, items))

    def _discover_nodes(self, policy: ScalingPolicy) -> list[str]:
        ray_nodes = self.actuators.ray_nodes(policy)
        if not ray_nodes or self.node_names is None:
            return []
        names = self.node_names(ray_nodes)
        return sorted({names.get(node, node) for node in ray_nodes})

    def _observe(self, item: _Pending, latest: Mapping[str, NodeLatest], store_problem: str | None) -> None:
        if item.replicas is None:  # unreadable: the note says why
            return
        seen = [latest[node] for node in item.nodes if node in latest]
        item.observation = PowerObservation(
            measured_per_node_watts=[n.power_watts for n in seen],
            age_s=max((n.age_s for n in seen), default=None),
            replicas=item.replicas,
            missing_nodes=[node for node in item.nodes if node not in latest],
        )
        if store_problem:
            item.note = store_problem
        elif not item.nodes:
            item.note = (f"no nodes known for the target: set the policy's nodes or "
                         f"workloads.{item.policy.workload_id or item.policy.name} in the config")
        elif not target_nodes(item.policy, self.workloads):
            item.note = f"nodes found from the target's replicas: {', '.join(item.nodes)}"

    @staticmethod
    def _wants_forecast(item: _Pending) -> bool:
        policy, observation = item.policy, item.observation
        return (policy.power_based.enabled and policy.predictive_scaling.enabled and observation is not None
                and bool(observation.measured_per_node_watts) and not observation.missing_nodes)

    def _forecast(self, items: list[_Pending], latest: Mapping[str, NodeLatest]) -> None:
        """Fill each item's forecast view: one batched forecaster call for every node of every item."""
        if not items:
            return
        if self.forecaster is None:
            for item in items:
                item.forecast = ForecastView.unavailable("no forecaster configured")
            return
        try:
            shape = self.forecaster.shape()
        except Exception as exc:  # noqa: BLE001 - no model, app not running: fall back to measured power
            for item in items:
                item.forecast = ForecastView.unavailable(f"forecaster not available: {exc}")
            return
        histories: list[PowerHistory] = []
        for item in items:
            item.forecast = self._collect_histories(item, shape, histories, latest)
        results = self.forecaster.forecast(histories) if histories else []
        for item in items:
            if item.requests is not None:
                item.forecast, item.confidence = _view(item.policy, [results[i] for i in item.requests])

    def _collect_histories(self, item: _Pending, shape: ModelShape, histories: list[PowerHistory],
                           latest: Mapping[str, NodeLatest]) -> ForecastView | None:
        """Append the item's node histories to the batch; a view only when the forecast cannot be made."""
        policy = item.policy
        wanted_steps = -(-policy.predictive_scaling.lookahead_minutes * 60 // shape.step_s)
        lead_steps = min(wanted_steps, shape.horizon_steps)
        if wanted_steps > lead_steps and item.note is None:
            item.note = (f"look-ahead cut to the served model's horizon of {lead_steps * shape.step_s // 60} min "
                         f"({shape.model_version})")
        found = []
        for node in item.nodes:
            try:
                stored = stored_history(self.store, node, step_s=shape.step_s, sequence_length=shape.sequence_length,
                                        horizon_s=lead_steps * shape.step_s, latest=latest.get(node))
            except (NoStoredTelemetry, StoreUnavailable) as exc:
                return ForecastView.unavailable(f"no forecast window: {exc}")
            if stored.age_s > policy.stale_after_s:
                return ForecastView.unavailable(f"forecast window of node {node} is stale ({stored.age_s:.0f} s old)")
            found.append(stored.history)
        item.requests = list(range(len(histories), len(histories) + len(found)))
        histories.extend(found)
        return None

    def _decide_and_act(self, item: _Pending, now: datetime) -> ScalingEvent:
        policy = item.policy
        if item.observation is None:  # the replica count could not be read: nothing to decide on
            event = ScalingEvent(at=now, policy=policy.name, target=policy.target, action=ScaleAction.HOLD,
                                 from_replicas=None, to_replicas=None, reason=f"hold: {item.note}", mode=policy.mode,
                                 actuation=ActuationResult(status=ActuationStatus.FAILED, detail=item.note or ""))
            return self.state.record(event)
        policy_state = self.state.policy_state(policy.name)
        decision = decide(policy, item.observation, item.forecast, policy_state, now)
        actuation = self.actuators.apply(policy, decision.from_replicas, decision.to_replicas)
        reason = decision.reason if item.note is None else f"{decision.reason}; {item.note}"
        event = _event(policy, decision, actuation, reason, item.confidence)
        if actuation.status is ActuationStatus.FAILED:  # nothing changed: the cooldown clock must not restart
            return self.state.record(event, policy_state.model_copy(update={"last_decision": decision}))
        return self.state.record(event, policy_state.after(decision))


def _view(policy: ScalingPolicy, results: list[PowerForecast | Exception]) -> tuple[ForecastView, float | None]:
    """The policy's forecast view from its nodes' forecasts, and their mean calibrated confidence."""
    failed = next((r for r in results if isinstance(r, Exception)), None)
    if failed is not None:
        return ForecastView.unavailable(f"forecast failed: {type(failed).__name__}: {failed}"), None
    forecasts = [r for r in results if isinstance(r, PowerForecast)]
    coverage = forecasts[0].interval_coverage
    if not 0 < coverage < 1:
        return ForecastView.unavailable("the served model's calibration has not been measured"), None
    view = ForecastView.from_interval([f.point for f in forecasts], [f.upper for f in forecasts],
                                      coverage=coverage, level=policy.predictive_scaling.confidence_threshold)
    return view, round(fmean(c for f in forecasts for c in f.confidence), 4)


def _event(policy: ScalingPolicy, decision: ScalingDecision, actuation: ActuationResult, reason: str,
           confidence: float | None) -> ScalingEvent:
    budget = policy.power_based.max_power_budget

    def watts(share: float | None) -> float | None:
        return None if share is None else round(share * budget / 100.0, 2)

    return ScalingEvent(at=decision.at, policy=policy.name, target=policy.target, action=decision.action,
                        from_replicas=decision.from_replicas, to_replicas=decision.to_replicas,
                        measured_power_watts=watts(decision.measured_share),
                        forecast_power_watts=watts(decision.forecast_share),
                        confidence=confidence if decision.used_forecast else None, signal=decision.signal,
                        reason=reason, mode=policy.mode, actuation=actuation)
