"""A node's recent telemetry from the store as a forecaster input (used by the API and the controller).

The window ends at the node's newest stored sample, covers the model's sequence length at its step, and is
sample-and-hold filled over gaps (never from later samples), so a forecast from stored telemetry sees what
a forecast from a client's history list would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from collectors.stores.base import TelemetryStore
from training.data import NUMERIC_FEATURES
from training.inference import PowerHistory


class NoStoredTelemetry(LookupError):
    """The store has no recent power readings for the node; the message says which."""


class UnknownNode(NoStoredTelemetry):
    """The store has never seen the node."""


@dataclass(frozen=True)
class StoredHistory:
    history: PowerHistory
    age_s: float  # seconds since the newest power reading in the window


def stored_history(store: TelemetryStore, node_id: str, *, step_s: int, sequence_length: int, horizon_s: int,
                   workload_type: str | None = None, now: datetime | None = None) -> StoredHistory:
    """The forecaster input for `node_id` ending at its newest stored sample.

    Raises:
        UnknownNode: nothing stored for the node.
        NoStoredTelemetry: no power in its latest window.
        StoreUnavailable: the store could not be read.
    """
    latest = store.latest(node_id)
    if not latest:
        raise UnknownNode(f"no telemetry stored for node {node_id!r}")
    newest = latest[0].timestamp.timestamp()
    end = datetime.fromtimestamp(newest - newest % step_s + step_s, UTC)
    window = store.window(node_id, end - timedelta(seconds=step_s * sequence_length), end, step_s)
    observed = window[window["power_watts"].notna()]
    if observed.empty:
        raise NoStoredTelemetry(f"no recent power telemetry stored for node {node_id!r}")
    window = window.loc[observed.index[0]:].ffill()
    numeric = {name: tuple(window[name]) for name in NUMERIC_FEATURES if window[name].notna().all()}
    history = PowerHistory(power_watts=tuple(window["power_watts"]), numeric=numeric, workload_type=workload_type,
                           end_time=window["timestamp"].iloc[-1].to_pydatetime(), horizon_s=horizon_s)
    last = observed["timestamp"].iloc[-1].to_pydatetime()
    return StoredHistory(history, ((now or datetime.now(UTC)) - last).total_seconds())
