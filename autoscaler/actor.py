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
from pydantic import BaseModel, ConfigDict, Field

from autoscaler.actuators import Actuators
from autoscaler.actuators.kubernetes import KubernetesActuator
from autoscaler.actuators.serve import RayServeActuator
from autoscaler.controller import ScalingController
from autoscaler.policy_config import policies_from_config
from autoscaler.schema import ScalingEvent, ScalingPolicy
from autoscaler.serve_forecaster import ServeForecaster
from autoscaler.state import ControllerState
from collectors.store_actor import NAMESPACE, RemoteStore
from collectors.supervisor import SUPERVISOR
from training.config import load_config

logger = logging.getLogger(__name__)
CONTROLLER = "scaling_controller"
CALL_TIMEOUT_S = 15.0


class ControllerSettings(BaseModel):
    """How the controller actor is built (from the app's `autoscaler` args)."""

    model_config = ConfigDict(extra="forbid")

    state_file: str
    config_path: str | None = None
    power_app_name: str = "kcloud-power"
    ray_dashboard_url: str = "http://127.0.0.1:8265"
    kubeconfig: str | None = None
    interval_s: float | None = Field(None, gt=0, description="override of auto_scaling.evaluation_interval")


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
        self._names: dict[str, str] = {}
        self._read_at = -math.inf

    def __call__(self, ray_node_ids: list[str]) -> dict[str, str]:
        if time.monotonic() - self._read_at > self.max_age_s:
            self._names, self._read_at = self._read(), time.monotonic()
        return {node: self._names[node] for node in ray_node_ids if node in self._names}

    @staticmethod
    def _read() -> dict[str, str]:
        names = {node["NodeID"]: node["NodeManagerHostname"] for node in ray.nodes() if node.get("Alive")}
        try:
            supervisor = ray.get_actor(SUPERVISOR, namespace=NAMESPACE)
            collectors = ray.get(supervisor.status.remote(), timeout=CALL_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - no collectors running: hostnames it is
            return names
        for key, status in collectors.items():
            if key.startswith("node-") and status.get("node_id"):
                names[key.removeprefix("node-")] = status["node_id"]
        return names


class ScalingControllerService:
    """Actor body: a ScalingController over the store actor, the PowerPredictor and the real actuators."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = ControllerSettings.model_validate(settings)
        config = load_config(self.settings.config_path)
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
        name=CONTROLLER, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=-1,
        max_task_retries=-1, num_cpus=0, resources={"node:__internal_head__": 0.001},
    ).remote(settings.model_dump())


class ControllerUnavailable(RuntimeError):
    """The controller actor is not running or did not answer in time."""


class RemoteController:
    """Calls the named controller actor; any failure to reach it is ControllerUnavailable."""

    def __init__(self, timeout_s: float = CALL_TIMEOUT_S):
        self.timeout_s = timeout_s

    def call(self, method: str, *args: Any) -> Any:
        try:
            actor = ray.get_actor(CONTROLLER, namespace=NAMESPACE)
        except ValueError as exc:
            raise ControllerUnavailable("the scaling controller is not running") from exc
        try:
            return ray.get(getattr(actor, method).remote(*args), timeout=self.timeout_s)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
            raise ControllerUnavailable(f"the scaling controller did not answer: {type(exc).__name__}") from exc
