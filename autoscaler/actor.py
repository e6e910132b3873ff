"""The scaling controller as a detached, named Ray actor, and the client the API uses to reach it.

The actor is pinned to the head node and keeps its state in one SQLite file (autoscaler/state.py), so when
Ray restarts it after a failure it finds its policies, cooldown clocks and events where it left them. A
background thread ticks every `auto_scaling.evaluation_interval`; `tick` also runs one on demand.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, datetime
from typing import Any

import ray

from autoscaler.actuators import Actuators
from autoscaler.actuators.kubernetes import KubernetesActuator
from autoscaler.actuators.serve import RayServeActuator
from autoscaler.controller import ScalingController
from autoscaler.policy_config import policies_from_config
from autoscaler.schema import ScalingEvent, ScalingPolicy
from autoscaler.serve_forecaster import ServeForecaster
from autoscaler.settings import ControllerSettings, load_autoscaler_config
from autoscaler.state import ControllerState
from core.actors import ActorUnavailable, NamedActor
from core.names import CONTROLLER_ACTOR, NAMESPACE, SUPERVISOR_ACTOR
from core.stores.remote import RemoteStore

logger = logging.getLogger(__name__)
CALL_TIMEOUT_S = 15.0


class DecisionMetrics:
    """Ray metrics (Ray's Prometheus endpoint) for every decision: desired replicas, power, decision counts."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge

        self._replicas = Gauge("kcloud_scaling_desired_replicas", "replicas each policy decided on",
                               tag_keys=("policy", "mode"))
        self._power = Gauge("kcloud_scaling_signal_watts", "per-node power behind each decision",
                            tag_keys=("policy", "signal"))
        self._decisions = Counter("kcloud_scaling_decisions_total", "decisions by policy, action and outcome",
                                  tag_keys=("policy", "action", "actuation"))

    def publish(self, events: list[ScalingEvent]) -> None:
        for event in events:
            if event.to_replicas is not None:
                self._replicas.set(event.to_replicas, tags={"policy": event.policy, "mode": event.mode})
            for signal, watts in (("measured", event.measured_power_watts), ("forecast", event.forecast_power_watts)):
                if watts is not None:
                    self._power.set(watts, tags={"policy": event.policy, "signal": signal})
            self._decisions.inc(tags={"policy": event.policy, "action": event.action.value,
                                      "actuation": event.actuation.status.value})


class TelemetryNodeNames:
    """Ray node id -> telemetry node id: the name each node's collector reports (the collector supervisor
    knows them), else the node's hostname (what a collector uses without NODE_NAME). Refreshed every minute."""

    def __init__(self, max_age_s: float = 60.0):
        self.max_age_s = max_age_s
        self.supervisor = NamedActor(SUPERVISOR_ACTOR, "the collector supervisor", timeout_s=CALL_TIMEOUT_S)
        self._names: dict[str, str] = {}
        self._read_at = -math.inf

    def __call__(self, ray_node_ids: list[str]) -> dict[str, str]:
        if time.monotonic() - self._read_at > self.max_age_s:
            self._names, self._read_at = self._read(), time.monotonic()
        return {node: self._names[node] for node in ray_node_ids if node in self._names}

    def _read(self) -> dict[str, str]:
        names = {node["NodeID"]: node["NodeManagerHostname"] for node in ray.nodes() if node.get("Alive")}
        try:
            names.update(self.supervisor.call("node_names"))
        except ActorUnavailable:  # no collectors running: hostnames it is
            pass
        return names


class ScalingControllerService:
    """Actor body: a ScalingController over the store actor, the PowerPredictor and the real actuators."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = ControllerSettings.model_validate(settings)
        config = load_autoscaler_config(self.settings.config_path)
        actuators = Actuators([RayServeActuator(self.settings.ray_dashboard_url),
                               KubernetesActuator(kubeconfig=self.settings.kubeconfig)])
        self.controller = ScalingController(
            ControllerState(self.settings.state_file), RemoteStore(), ServeForecaster(self.settings.power_app_name),
            actuators, defaults=config.auto_scaling, workloads=config.workloads, node_names=TelemetryNodeNames())
        seeded = self.controller.state.seed(policies_from_config(config, self.settings.config_path or "config"),
                                            datetime.now(UTC))
        if seeded:
            logger.info("scaling controller: policies from the config file applied: %s", seeded)
        self.interval_s = self.settings.interval_s or float(config.auto_scaling.evaluation_interval)
        self.metrics = DecisionMetrics()
        self._tick_lock = threading.Lock()
        threading.Thread(target=self._loop, name="scaling-controller", daemon=True).start()

    def _loop(self) -> None:
        while True:  # a daemon thread: it ends with the actor
            time.sleep(self.interval_s)
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a failed tick is logged; the next one tries again
                logger.exception("scaling controller: tick failed")

    def tick(self) -> list[ScalingEvent]:
        """Evaluate every policy now; returns the events recorded."""
        with self._tick_lock:
            started = time.perf_counter()
            events = self.controller.tick()
            self.metrics.publish(events)
            logger.debug("scaling controller: %d policies in %.3f s", len(events), time.perf_counter() - started)
            return events

    def policies(self) -> list[ScalingPolicy]:
        return self.controller.state.policies()

    def policy(self, name: str) -> ScalingPolicy | None:
        return self.controller.state.policy(name)

    def put_policy(self, policy: ScalingPolicy) -> bool:
        """Create or replace by name; True when created."""
        return self.controller.put_policy(policy)[1]

    def delete_policy(self, name: str) -> bool:
        return self.controller.state.delete_policy(name)

    def events(self, policy: str | None, since: datetime | None, limit: int) -> list[ScalingEvent]:
        return self.controller.state.events(policy, since, limit)


def start_controller(settings: ControllerSettings) -> ray.actor.ActorHandle:
    """The cluster's controller actor, created if it does not exist (detached, pinned to the head node)."""
    return ray.remote(ScalingControllerService).options(
        name=CONTROLLER_ACTOR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=-1,
        max_task_retries=-1, num_cpus=0, resources={"node:__internal_head__": 0.001},
    ).remote(settings.model_dump())


def controller_client(hint: str = "", timeout_s: float = CALL_TIMEOUT_S) -> NamedActor:
    """A client of the controller actor: `.call("policies")` etc.; ActorUnavailable when it is not there."""
    return NamedActor(CONTROLLER_ACTOR, "the scaling controller", timeout_s=timeout_s, hint=hint)
