"""Stored telemetry as one canonical frame: what `train_lstm --from-store` trains on."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta

import pandas as pd
from pydantic import Field

from core.settings import EnvSettings
from core.stores.base import TelemetryStore
from core.stores.window import MAX_BINS, bin_starts, to_ms
from core.telemetry_csv import validate_telemetry


def open_store() -> TelemetryStore:
    """The cluster's store actor when Ray runs one (read in its retraining group), else the backend the environment
    names, opened only to read (an embedded store's rows are deleted by the service's retention, never by a
    reader's)."""
    import ray

    from core.stores.factory import create_store
    from core.stores.remote import RETRAINING_TIMEOUT_S, RemoteStore

    if ray.is_initialized() and (remote := RemoteStore(RETRAINING_TIMEOUT_S, reader="retraining")).actor.exists():
        return remote
    return create_store(expire=False)


MAX_ROWS = 8_000_000  # nodes × bins one read may take: a retraining on them peaks near 20 GiB (README, Benchmarks)


class ReadLimits(EnvSettings):
    """How much of the store one read for a retraining (or an idle-draw measurement) may take."""

    max_rows: int = Field(MAX_ROWS, ge=1, le=10**10, alias="KCLOUD_MAX_STORE_ROWS",
                          description="nodes × bins at most (a host with more memory may take more)")


def stored_frame(store: TelemetryStore, since_s: int, step_s: int, now: datetime | None = None,
                 only: Collection[str] | None = None) -> pd.DataFrame:
    """Every node's window (or only those of the nodes named) over the last `since_s` seconds at `step_s`, validated
    like a CSV; refused (ValueError) before any window is read when the nodes × bins exceed $KCLOUD_MAX_STORE_ROWS
    (`MAX_ROWS`), or one node's bins the MAX_BINS a window read takes."""
    end = now or datetime.now(UTC)
    start = end - timedelta(seconds=since_s)
    nodes = [node for node in store.nodes(start) if only is None or node in only]
    bins = len(bin_starts(to_ms(start), to_ms(end), step_s))  # one more than since_s // step_s off a bin's start
    if bins > MAX_BINS:  # else every node's read failed in the store, as if it were down
        raise ValueError(f"{bins:,} bins of {step_s} s ({since_s} s) in each node's window, more than the "
                         f"{MAX_BINS:,} one window read takes: shorten since or take a longer step")
    rows, limit = len(nodes) * bins, ReadLimits.from_env().max_rows
    if rows > limit:
        raise ValueError(f"{len(nodes)} node(s) × {bins:,} bins of {step_s} s ({since_s} s) is {rows:,} "
                         f"rows, more than the {limit:,} one read takes (KCLOUD_MAX_STORE_ROWS; at about 2.5 KiB a "
                         "row at the training's peak): shorten since, take a longer step, or name fewer nodes")
    parts = [store.long_window(node, start, end, step_s) for node in nodes]  # weeks of a node: given time
    parts = [p.dropna(subset=["power_watts"]) for p in parts]
    parts = [p for p in parts if not p.empty]
    if not parts:
        of = "" if only is None else f" of {', '.join(map(repr, sorted(only)))}"
        raise ValueError(f"the telemetry store holds no power readings{of} in the last {since_s} s")
    return validate_telemetry(pd.concat(parts, ignore_index=True), source="telemetry store")
