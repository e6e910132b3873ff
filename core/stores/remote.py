"""A TelemetryStore whose calls go to the cluster's store actor (collectors/store_actor.py runs it)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from core.actors import ActorUnavailable, NamedActor
from core.names import STORE_ACTOR
from core.stores.base import NodeLatest, StoreUnavailable, TelemetryStore, WriteRefused
from core.telemetry import TelemetrySample

CALL_TIMEOUT_S = 10.0


class StoreActorUnavailable(StoreUnavailable, ActorUnavailable):
    """The store actor is not running, did not answer, or its backend failed."""


class RemoteStore(TelemetryStore):
    """Forwards every call to the named store actor; any failure is StoreUnavailable (StoreActorUnavailable),
    except a write the backend refuses for good (WriteRefused)."""

    def __init__(self, timeout_s: float = CALL_TIMEOUT_S):
        self.actor = NamedActor(STORE_ACTOR, "the telemetry store", timeout_s=timeout_s, error=StoreActorUnavailable)

    def _call(self, method: str, *args):
        try:
            return self.actor.call(method, *args)
        except StoreActorUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - the backend failed behind the actor: "not now" too
            cause = getattr(exc, "cause", None) or exc  # Ray wraps the actor's exception
            if isinstance(cause, WriteRefused):  # for good, not "not now": the caller must not retry
                raise WriteRefused(str(cause)) from exc
            raise StoreActorUnavailable(f"the telemetry store failed: {type(cause).__name__}") from exc

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
