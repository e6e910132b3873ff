"""The soak test's faults: kill the store actor, one PowerPredictor replica, the scaling controller, and time
how long each part takes to answer again."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import ray
from ray.serve._private.common import REPLICA_ID_FULL_ID_STR_PREFIX

from autoscaler.actor import controller_client
from core.names import CONTROLLER_ACTOR, NAMESPACE, POWER_DEPLOYMENT, STORE_ACTOR
from core.stores.remote import RemoteStore

SERVE_NAMESPACE = "serve"
STORE_FAULT, REPLICA_FAULT, CONTROLLER_FAULT = "store actor killed", "predictor replica killed", "controller killed"


@dataclass(frozen=True)
class Kill:
    """What a fault killed, and when the kill was sent (time.monotonic()): after finding the actor, which can take
    a while on a busy cluster, so the time the fault was asked for would be too early."""

    killed: str
    at: float


@dataclass(frozen=True)
class Fault:
    """A part to kill: `kill` says what it killed and when; `back` says whether the part answers again."""

    name: str
    kill: Callable[[], Kill]
    back: Callable[[], bool]


def _answers(call: Callable[[], object]) -> bool:
    try:
        call()
    except Exception:  # noqa: BLE001 - any failure: not back yet
        return False
    return True


def _kill(name: str, namespace: str, *, no_restart: bool) -> Kill:
    actor = ray.get_actor(name, namespace=namespace)
    at = time.monotonic()
    ray.kill(actor, no_restart=no_restart)
    return Kill(name, at)


def kill_named_actor(name: str) -> Kill:
    """ray.kill a named actor of the app, leaving Ray to restart it (its max_restarts)."""
    return _kill(name, NAMESPACE, no_restart=False)


def _replicas(power_app: str) -> list[str]:
    """Names of the PowerPredictor replica actors registered now (a dead one's name is dropped)."""
    prefix = f"{REPLICA_ID_FULL_ID_STR_PREFIX}{power_app}#{POWER_DEPLOYMENT}#"
    return sorted(actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
                  if actor["namespace"] == SERVE_NAMESPACE and actor["name"].startswith(prefix))


class ReplicaFault:
    """Kills one PowerPredictor replica actor; back when Serve runs as many replicas again, the killed one gone."""

    def __init__(self, power_app: str):
        self.power_app = power_app
        self.killed: str | None = None
        self.count = 0

    def kill(self) -> Kill:
        replicas = _replicas(self.power_app)
        if not replicas:
            raise RuntimeError(f"no PowerPredictor replica of {self.power_app!r} is alive")
        self.count, self.killed = len(replicas), replicas[0]
        return _kill(self.killed, SERVE_NAMESPACE, no_restart=True)  # Serve starts another

    def back(self) -> bool:
        from ray import serve

        replicas = _replicas(self.power_app)
        deployment = serve.status().applications[self.power_app].deployments[POWER_DEPLOYMENT]
        return (self.killed not in replicas and len(replicas) >= self.count
                and deployment.replica_states.get("RUNNING", 0) >= self.count)


def faults(power_app: str) -> list[Fault]:
    """The three faults, in the order the soak injects them."""
    store = RemoteStore(timeout_s=5.0)
    controller = controller_client(timeout_s=5.0)
    replica = ReplicaFault(power_app)
    return [
        Fault(STORE_FAULT, lambda: kill_named_actor(STORE_ACTOR), lambda: _answers(store.nodes)),
        Fault(REPLICA_FAULT, replica.kill, replica.back),
        Fault(CONTROLLER_FAULT, lambda: kill_named_actor(CONTROLLER_ACTOR),
              lambda: _answers(lambda: controller.call("policies"))),
    ]


def wait_back(fault: Fault, killed_at: float, timeout_s: float, settle_s: float = 0.5) -> float | None:
    """Seconds from the kill until `fault.back()`; None when not back within `timeout_s`."""
    time.sleep(settle_s)  # let the kill land before asking
    deadline = killed_at + timeout_s
    while time.monotonic() < deadline:
        if fault.back():
            return round(time.monotonic() - killed_at, 1)
        time.sleep(0.25)
    return None
