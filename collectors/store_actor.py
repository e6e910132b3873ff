"""The telemetry store as one named Ray actor, and a TelemetryStore that forwards to it.

Collectors on every node push batches to the actor; the API reads windows and latest values from it. The
backend behind it is whatever `create_store` picks (embedded SQLite by default, InfluxDB with INFLUX_HOST).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime

import pandas as pd
import ray

from core.stores.base import NodeLatest, StoreUnavailable, TelemetryStore
from core.stores.factory import create_store
from core.telemetry import TelemetrySample

STORE_ACTOR = "telemetry_store"
NAMESPACE = "kcloud"
CALL_TIMEOUT_S = 10.0


class TelemetryStoreService:
    """Actor body: owns the backend. Plain class, so it is testable without Ray."""

    def __init__(self, settings: Mapping[str, str] | None = None):
        self.store = create_store({**os.environ, **(settings or {})})  # explicit settings win over the env

    def write(self, samples: Sequence[TelemetrySample]) -> int:
        return self.store.write(samples)

    def window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        return self.store.window(node_id, start, end, step_s)

    def latest(self, node_id: str | None = None) -> list[NodeLatest]:
        return self.store.latest(node_id)

    def nodes(self) -> list[str]:
        return self.store.nodes()

    def is_read_only(self) -> bool:
        return self.store.read_only


def start_store_actor(settings: Mapping[str, str] | None = None) -> ray.actor.ActorHandle:
    """The cluster's store actor, created (detached, restarted on failure) if it does not exist yet."""
    return ray.remote(TelemetryStoreService).options(
        name=STORE_ACTOR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=-1,
        max_task_retries=0, num_cpus=0,
    ).remote(dict(settings) if settings is not None else None)


class RemoteStore(TelemetryStore):
    """A TelemetryStore whose calls go to the named store actor; any failure is StoreUnavailable."""

    def __init__(self, timeout_s: float = CALL_TIMEOUT_S):
        self.timeout_s = timeout_s

    def _call(self, method: str, *args):
        try:
            actor = ray.get_actor(STORE_ACTOR, namespace=NAMESPACE)
            return ray.get(getattr(actor, method).remote(*args), timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - dead, missing, slow or failing: all mean "not now"
            raise StoreUnavailable(f"telemetry store actor: {type(exc).__name__}: {exc}") from exc

    def write(self, samples: Sequence[TelemetrySample]) -> int:
        return self._call("write", list(samples))

    def window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        return self._call("window", node_id, start, end, step_s)

    def latest(self, node_id: str | None = None) -> list[NodeLatest]:
        return self._call("latest", node_id)

    def nodes(self) -> list[str]:
        return self._call("nodes")

    def is_read_only(self) -> bool:
        """True when the backend only reads (Prometheus): collectors then only export their gauges."""
        return self._call("is_read_only")

    def close(self) -> None:
        """Nothing to release: the actor outlives its callers."""
