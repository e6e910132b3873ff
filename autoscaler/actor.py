"""The scaling controller as a detached, named Ray actor, its lifecycle, and the client the API uses to reach it.

The actor is pinned to the head node and keeps its state in one SQLite file (autoscaler/state.py), so when
Ray restarts it after a failure it finds its policies, cooldown clocks and events where it left them; its lease
holder id is its Ray actor id, the same after such a restart. A background thread ticks every
`auto_scaling.evaluation_interval`; `tick` also runs one on demand.

The controller is tied to its app. The app's bootstrap calls `start_controller`, which keeps a running
controller only when it was started with the same settings and autoscaler config (`ControllerSettings.
fingerprint`) and otherwise stops it and starts a new one, and `stop_controller` when the autoscaler is
disabled. The controller itself watches for the API's ingress deployment in Serve and ends
itself, giving its lease up, once it has been gone for a few minutes (`serve shutdown`, the app deleted;
core/app_watch.py).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from autoscaler.actuators import Actuators
from autoscaler.actuators.kubernetes import KubernetesActuator
from autoscaler.actuators.serve import RayServeActuator
from autoscaler.controller import ScalingController
from autoscaler.live_accuracy import LiveAccuracyReport
from autoscaler.live_export import LiveAccuracyExport
from autoscaler.policy_config import policies_from_config
from autoscaler.schema import InvalidStoredPolicy, ScalingEvent, ScalingPolicy, StoredPolicies
from autoscaler.serve_forecaster import ServeForecaster
from autoscaler.settings import ControllerSettings, load_autoscaler_config
from autoscaler.state import ControllerState, StateUnavailable, passing_errors_unavailable
from core.actors import ActorUnavailable, NamedActor, find_actor, kill_and_wait, start_head_singleton
from core.app_watch import answered_fingerprint, end_with_app
from core.metrics_catalog import SCALING_DECISIONS, SCALING_DESIRED_REPLICAS, SCALING_SIGNAL_WATTS, create
from core.names import CONTROLLER_ACTOR, SUPERVISOR_ACTOR
from core.public_text import error_text
from core.stores.remote import RemoteStore

logger = logging.getLogger(__name__)
CALL_TIMEOUT_S = 15.0
STOP_WAIT_S = 10.0  # how long stop() waits for a tick under way before giving the lease up
STATE_RETRY_MAX_S = 30.0  # the longest wait between two tries to open the state file at start


class DecisionMetrics:
    """Ray metrics (Ray's Prometheus endpoint) for every decision: desired replicas, power, decision counts. Each is
    None where Ray metrics cannot be created, and then records nothing. A tick's events are every policy's decision:
    the gauges of a policy the tick no longer decides on (deleted, or its mode changed) are set to NaN, so a panel
    does not show its last value for good."""

    def __init__(self) -> None:
        self._replicas = create(SCALING_DESIRED_REPLICAS)
        self._power = create(SCALING_SIGNAL_WATTS)
        self._decisions = create(SCALING_DECISIONS)
        self._modes: dict[str, str] = {}  # policy -> the mode tag its desired replicas were last shown under

    def publish(self, events: list[ScalingEvent]) -> None:
        decided = {event.policy: event for event in events}
        for policy, mode in list(self._modes.items()):
            event = decided.get(policy)
            if event is None or (event.to_replicas is not None and event.mode != mode):
                self._clear(policy, mode, signals=event is None)
                del self._modes[policy]
        self._modes.update({event.policy: event.mode for event in events if event.to_replicas is not None})
        for event in events:
            if self._replicas is not None and event.to_replicas is not None:
                self._replicas.set(event.to_replicas, tags={"policy": event.policy, "mode": event.mode})
            for signal, watts in (("measured", event.measured_power_watts), ("forecast", event.forecast_power_watts)):
                if self._power is not None:  # NaN: this decision had no such value (no stale forecast on a panel)
                    value = math.nan if watts is None else watts
                    self._power.set(value, tags={"policy": event.policy, "signal": signal})
            if self._decisions is not None:
                self._decisions.inc(tags={"policy": event.policy, "action": event.action.value,
                                          "actuation": event.actuation.status.value})

    def _clear(self, policy: str, mode: str, *, signals: bool) -> None:
        """NaN in the gauges of a policy no longer decided on (`signals`: its power too), or no longer in `mode`."""
        if self._replicas is not None:
            self._replicas.set(math.nan, tags={"policy": policy, "mode": mode})
        for signal in ("measured", "forecast") if signals and self._power is not None else ():
            self._power.set(math.nan, tags={"policy": policy, "signal": signal})


class TelemetryNodeNames:
    """Ray node id -> telemetry node id: the name each node's collector reports (the collector supervisor
    knows them), else the node's hostname (what a collector uses without NODE_NAME). Refreshed every minute, and
    at most every `miss_age_s` when asked for a node it does not know (one that has just joined, where a scale-out
    placed a replica: its policy would hold on a node without telemetry until the next refresh)."""

    def __init__(self, max_age_s: float = 60.0, miss_age_s: float = 5.0):
        self.max_age_s, self.miss_age_s = max_age_s, miss_age_s
        self.supervisor = NamedActor(SUPERVISOR_ACTOR, "the collector supervisor", timeout_s=CALL_TIMEOUT_S)
        self._names: dict[str, str] = {}
        self._read_at = -math.inf
        self._reading = threading.Lock()  # the tick's target reads ask concurrently: one refresh at a time

    def __call__(self, ray_node_ids: list[str]) -> dict[str, str]:
        with self._reading:
            age = time.monotonic() - self._read_at
            missed = any(node not in self._names for node in ray_node_ids)
            if age > self.max_age_s or (missed and age > self.miss_age_s):
                try:
                    self._names = self._read()
                finally:  # aged from its end (a read may outlast miss_age_s); a failed read too: the tick's other
                    self._read_at = time.monotonic()  # policies, waiting on the lock, do not read again
            return {node: self._names[node] for node in ray_node_ids if node in self._names}

    def _read(self) -> dict[str, str]:
        names = {node["NodeID"]: node["NodeManagerHostname"] for node in ray.nodes() if node.get("Alive")}
        try:
            names.update(self.supervisor.call("node_names"))
        except ActorUnavailable:  # no collectors running: hostnames it is
            pass
        return names


def open_state(open_file: Callable[[], ControllerState], seed: Callable[[ControllerState], list[str]],
               sleep: Callable[[float], None] = time.sleep) -> tuple[ControllerState, list[str]]:
    """The state file opened and the config's policies seeded in it (their names), tried again while that fails,
    after 1 s, then twice as long each time up to STATE_RETRY_MAX_S, where the failure may pass (a file system error,
    SQLite's passing errors): an actor whose constructor raised is not restarted by Ray, so a volume mounted late or a
    full disk at start would have ended scaling until a redeploy."""
    delay = 1.0
    while True:
        state = None
        try:
            with passing_errors_unavailable():  # SQLite's passing errors; any other (a bug) ends the actor
                state = open_file()
                return state, seed(state)
        except (OSError, StateUnavailable) as exc:
            if state is not None:
                state.close()
            logger.error("scaling controller: cannot open its state file (%s); trying again in %.0f s",
                         error_text(exc), delay)
        sleep(delay)
        delay = min(2 * delay, STATE_RETRY_MAX_S)


class ScalingControllerService:
    """Actor body: a ScalingController over the store actor, the PowerPredictor and the real actuators."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = ControllerSettings.model_validate(settings)
        config = load_autoscaler_config(self.settings.config_path)
        self.settings_fingerprint = self.settings.fingerprint(config)
        scaling = config.auto_scaling
        self.interval_s = self.settings.interval_s or float(scaling.evaluation_interval)
        serve_actuator = RayServeActuator(self.settings.ray_dashboard_url)
        actuators = Actuators([serve_actuator, KubernetesActuator(kubeconfig=self.settings.kubeconfig)])
        policies = policies_from_config(config, self.settings.config_path or "config")
        state, seeded = open_state(
            lambda: ControllerState(self.settings.state_file, max_replicas_cap=scaling.max_replicas_cap,
                                    max_policies=scaling.max_policies, max_events=scaling.max_events),
            lambda opened: opened.seed(policies, datetime.now(UTC)))
        self.controller = ScalingController(
            state, RemoteStore(reader="controller"), ServeForecaster(self.settings.power_app_name), actuators,
            defaults=scaling,
            workloads=config.workloads, node_names=TelemetryNodeNames(),
            holder=f"{CONTROLLER_ACTOR}:{ray.get_runtime_context().get_actor_id()}",
            tick_s=self.interval_s)
        if seeded:
            logger.info("scaling controller: policies from the config file applied: %s", seeded)
        self.metrics = DecisionMetrics()
        self.live_export = LiveAccuracyExport()
        self._tick_lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._loop, name="scaling-controller", daemon=True).start()
        self.app_watch = end_with_app("scaling controller", self.stop)

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval_s):  # a daemon thread: it ends with the actor, or when stopped
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - logged; the loop goes on (a dead loop would stop all scaling)
                logger.exception("scaling controller: tick failed")

    def fingerprint(self) -> str:
        """The digest of the settings and autoscaler config this controller was started with (ENDING once it ends)."""
        return answered_fingerprint(self.settings_fingerprint, self._stopped.is_set(), self.app_watch)

    def stop(self) -> None:
        """Stop ticking and give the lease up (before this actor ends), so that a successor acts without waiting
        for its expiry; a tick under way finishes first (for at most STOP_WAIT_S)."""
        self._stopped.set()
        finished = self._tick_lock.acquire(timeout=STOP_WAIT_S)
        try:
            self.controller.stop()
        except Exception:  # noqa: BLE001 - the lease then expires on its own
            logger.exception("scaling controller: cannot give the lease up")
        finally:
            if finished:
                self._tick_lock.release()

    def tick(self) -> list[ScalingEvent]:
        """Evaluate every policy now; returns its events (id None where the state could not store one)."""
        with self._tick_lock:
            if self._stopped.is_set():
                return []
            started = time.perf_counter()
            events = self.controller.tick()
            self.metrics.publish(events)
            self.live_export.publish(self.controller.live_accuracy())
            logger.debug("scaling controller: %d policies in %.3f s", len(events), time.perf_counter() - started)
            return events

    def live_accuracy(self) -> LiveAccuracyReport:
        """Live scores of the controller's forecasts, per model version and node."""
        return self.controller.live_accuracy()

    # the API's calls: a state file that cannot be used just now is StateUnavailable (a 503), never a 500
    def policies(self) -> list[ScalingPolicy]:
        with passing_errors_unavailable():
            return self.controller.state.policies()

    def stored_policies(self) -> StoredPolicies:
        """Every stored policy, and apart those that no longer validate, with the reason (every tick skips them),
        from one read: a policy replaced meanwhile is never listed twice, or not at all."""
        with passing_errors_unavailable():
            return self.controller.state.stored_policies()

    def stored_policy(self, name: str) -> ScalingPolicy | InvalidStoredPolicy | None:
        """The policy called `name`, or why it no longer validates, from one read; None when there is none."""
        with passing_errors_unavailable():
            return self.controller.state.stored_policy(name)

    # the writes are never replayed on a restarted actor (the actor's other calls are): a replay would answer for a
    # write that had landed (a DELETE 404, a create 200), where an unanswered write is a 503 the client reads back
    @ray.method(max_task_retries=0)
    def put_policy(self, policy: ScalingPolicy, expected: str | None = None) -> bool:
        """Create or replace by name; True when created (`expected`: the stored one's tag it must replace)."""
        with passing_errors_unavailable():
            return self.controller.put_policy(policy, expected)[1]

    @ray.method(max_task_retries=0)
    def delete_policy(self, name: str) -> bool:
        with passing_errors_unavailable():
            return self.controller.state.delete_policy(name)

    def events_page(self, policy: str | None, since: datetime | None, limit: int,
                    before_id: int | None) -> tuple[list[ScalingEvent], int | None]:
        with passing_errors_unavailable():
            return self.controller.state.events_page(policy, since, limit, before_id)


def start_controller(settings: ControllerSettings) -> ray.actor.ActorHandle:
    """The cluster's controller actor with these settings (detached, pinned to the head node): a running one
    started with the same settings and autoscaler config is kept, one started otherwise is replaced."""
    wanted = settings.fingerprint(load_autoscaler_config(settings.config_path))
    return start_head_singleton(ScalingControllerService, CONTROLLER_ACTOR, wanted, stop_controller,
                                settings.model_dump(), timeout_s=CALL_TIMEOUT_S)


def stop_controller(timeout_s: float = 60.0) -> bool:
    """End the controller actor if it runs (it gives its lease up first); True when there was one."""
    running = find_actor(CONTROLLER_ACTOR)
    if running is None:
        return False
    try:
        ray.get(running.stop.remote(), timeout=CALL_TIMEOUT_S)
    except (AttributeError, GetTimeoutError, RayActorError):  # the lease then expires on its own
        pass
    kill_and_wait(CONTROLLER_ACTOR, running, timeout_s)
    return True


def controller_client(hint: str = "", timeout_s: float = CALL_TIMEOUT_S) -> NamedActor:
    """A client of the controller actor: `.call("policies")` etc.; ActorUnavailable when it is not there."""
    return NamedActor(CONTROLLER_ACTOR, "the scaling controller", timeout_s=timeout_s, hint=hint)
