"""Stored telemetry as one canonical frame: what `train_lstm --from-store` trains on."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta

import pandas as pd

from core.stores.base import TelemetryStore
from core.telemetry_csv import validate_telemetry


def open_store() -> TelemetryStore:
    """The cluster's store actor when Ray runs one (read in its retraining group), else the backend the environment
    names."""
    import ray

    from core.stores.factory import create_store
    from core.stores.remote import RETRAINING_TIMEOUT_S, RemoteStore

    if ray.is_initialized() and (remote := RemoteStore(RETRAINING_TIMEOUT_S, reader="retraining")).actor.exists():
        return remote
    return create_store()


def stored_frame(store: TelemetryStore, since_s: int, step_s: int, now: datetime | None = None,
                 only: Collection[str] | None = None) -> pd.DataFrame:
    """Every node's window (or only those of the nodes named) over the last `since_s` seconds at `step_s`, validated
    like a CSV."""
    end = now or datetime.now(UTC)
    start = end - timedelta(seconds=since_s)
    parts = [store.window(node, start, end, step_s) for node in store.nodes(start) if only is None or node in only]
    parts = [p.dropna(subset=["power_watts"]) for p in parts]
    parts = [p for p in parts if not p.empty]
    if not parts:
        of = "" if only is None else f" of {', '.join(map(repr, sorted(only)))}"
        raise ValueError(f"the telemetry store holds no power readings{of} in the last {since_s} s")
    return validate_telemetry(pd.concat(parts, ignore_index=True), source="telemetry store")
