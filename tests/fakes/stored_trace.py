"""A recorded trace put into a telemetry store as recent telemetry, the way the replay collector stores it."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from core.stores.base import TelemetryStore
from core.stores.window import replay_samples
from core.telemetry import TelemetrySample


def trace_samples(frame: pd.DataFrame, end: datetime, prefix: str = "") -> list[TelemetrySample]:
    """The replay samples of a canonical frame, every series moved in time to end at `end`, node ids prefixed."""
    samples: list[TelemetrySample] = []
    for node, series in frame.groupby("node_id", sort=True):
        shift = pd.Timestamp(end) - series["timestamp"].max()
        for row in series.to_dict("records"):
            samples.extend(replay_samples((row["timestamp"] + shift).to_pydatetime(), f"{prefix}{node}", row))
    return samples


def store_trace(store: TelemetryStore, frame: pd.DataFrame, end: datetime, prefix: str = "",
                batch: int = 5000) -> int:
    """Write `trace_samples` into `store` in batches; how many samples were written."""
    samples = trace_samples(frame, end, prefix)
    return sum(store.write(samples[i:i + batch]) for i in range(0, len(samples), batch))
