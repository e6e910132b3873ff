"""TelemetryStore: the one interface behind the embedded, InfluxDB and Prometheus backends."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime

import pandas as pd
from pydantic import BaseModel, ConfigDict

from core.telemetry import TelemetrySample


class StoreUnavailable(RuntimeError):
    """The backend could not be reached or refused the request; the data may be retried later."""


class WriteRefused(RuntimeError):
    """The backend refuses samples for good (InfluxDB's 400 or 422: points outside the bucket's retention, a line it
    cannot parse): writing them again cannot succeed, so a buffer drops and counts them. `refused` and `written`
    count the samples of the write each way (the backend wrote the others)."""

    def __init__(self, message: str, refused: int = 0, written: int = 0):
        super().__init__(message, refused, written)  # all in args: the error survives pickling (Ray) whole
        self.refused, self.written = refused, written

    def __str__(self) -> str:
        return str(self.args[0])


class ReadOnlyStore(RuntimeError):
    """A write was sent to a backend that only reads (Prometheus)."""


class NodeLatest(BaseModel):
    """A node's most recent power reading and how old it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str
    timestamp: datetime  # UTC, of the oldest reading that went into `power_watts`
    power_watts: float
    age_s: float  # seconds between `timestamp` and the call


class TelemetryStore(ABC):
    """Where telemetry samples go and where model windows come from.

    `write` is idempotent on (node_id, source, device_id, timestamp): replaying a sample stores it once.
    `window` returns the canonical columns (core.telemetry_csv.CANONICAL_COLUMNS), one row per `step_s` bin from
    the bin holding `start` up to `end` (exclusive), NaN where a bin had no data; see
    `core.stores.window` for how device samples become node rows.
    """

    read_only: bool = False

    @abstractmethod
    def write(self, samples: Sequence[TelemetrySample]) -> int:
        """Store the samples; return how many were accepted. Raises StoreUnavailable when it cannot."""

    @abstractmethod
    def window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        """The node's telemetry in [start, end), resampled to `step_s`, in the canonical columns."""

    def long_window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        """`window` for a reader that waits minutes (a retraining's weeks of telemetry): a backend whose requests time
        out sooner than such a read may take gives it longer."""
        return self.window(node_id, start, end, step_s)

    @abstractmethod
    def latest(self, node_id: str | None = None) -> list[NodeLatest]:
        """The newest power reading of one node, or of every node, sorted by node id."""

    @abstractmethod
    def nodes(self, since: datetime | None = None) -> list[str]:
        """Every node id with stored telemetry, sorted; `since`: those with telemetry from then on (a backend that
        looks back only so far by default, InfluxDB's 30 days, looks back to it instead)."""

    def is_read_only(self) -> bool:
        """Whether the backend only reads (`read_only`; RemoteStore asks the store actor, StoreUnavailable when it
        does not answer)."""
        return self.read_only

    def close(self) -> None:  # noqa: B027 - optional hook, not every backend holds a connection
        """Release connections (default: nothing to release)."""

    def __enter__(self) -> TelemetryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
