"""InfluxStore: InfluxDB 2.x through influxdb-client (line-protocol writes, Flux reads).

Writes: measurement `telemetry`, tags node_id/source/device_id, numeric fields power_watts, utilization,
memory_usage, temperature, power_limit_watts, energy_joules and a string field quality, millisecond
timestamps. InfluxDB keeps one value per (series, field, timestamp), so a replayed sample overwrites
itself: writes are idempotent by construction. Reads run the Flux of core.stores.flux and parse
the annotated CSV it returns. The token is never logged or shown in repr().
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from core.settings import without_url_password
from core.stores import flux
from core.stores.base import NodeLatest, StoreUnavailable, TelemetryStore, WriteRefused
from core.stores.window import DEVICE_BIN_COLUMNS, LATEST_COLUMNS, check_window, combine_latest, node_frame, to_ms
from core.telemetry import TelemetrySample

logger = logging.getLogger(__name__)

NUMERIC_FIELDS = ("power_watts", "utilization", "memory_usage", "temperature", "power_limit_watts", "energy_joules")
BATCH_LINES = 5000
LONG_READ_TIMEOUT_MS = 110_000  # a long window's: within the 120 s its caller waits (RETRAINING_TIMEOUT_S)
NODES_LOOKBACK_S = 30 * 86400  # how far back `nodes()` looks for node ids by default
_UNPARSABLE = ("unable to parse", "partial write")  # what InfluxDB's 400 says of lines it will never take
_BEYOND_RETENTION = "points beyond retention"  # refused for good whatever the status says
_DROPPED = re.compile(r"dropped=(\d+)")  # a partial write's count of the lines InfluxDB did not take
_TAG_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\\n"})


def _seconds_back(since: datetime) -> int:
    """Whole seconds from `since` (aware) to now, rounded up: a look-back that reaches it."""
    return max(1, math.ceil((datetime.now(UTC) - since).total_seconds()))


def _tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def to_line(sample: TelemetrySample) -> str:
    """One sample as a line of InfluxDB line protocol (millisecond precision)."""
    fields = []
    for name in NUMERIC_FIELDS:
        value = getattr(sample, name)
        if value is not None and math.isfinite(value):
            fields.append(f"{name}={float(value)!r}")
    fields.append(f'quality="{sample.quality.value}"')
    tags = f"node_id={_tag(sample.node_id)},source={_tag(sample.source.value)},device_id={_tag(sample.device_id)}"
    return f"{flux.MEASUREMENT},{tags} {','.join(fields)} {to_ms(sample.timestamp)}"


class InfluxStore(TelemetryStore):
    """Telemetry in one InfluxDB 2.x bucket.

    Args:
        url: server address, e.g. http://influxdb:8086.
        token, org, bucket: InfluxDB credentials and destination.
        timeout_ms: per-request timeout; a write that times out raises StoreUnavailable.
        long_read_timeout_ms: the timeout of a `long_window` (a retraining's weeks of one node, which InfluxDB must
            read whole before it answers at all; its caller waits RETRAINING_TIMEOUT_S).
        latest_lookback_s: how far back `latest()` looks for readings.
    """

    def __init__(self, url: str, token: str, org: str, bucket: str, *, timeout_ms: int = 10_000,
                 long_read_timeout_ms: int = LONG_READ_TIMEOUT_MS, latest_lookback_s: int = 3600,
                 client: InfluxDBClient | None = None) -> None:
        self.url, self.org, self.bucket = url, org, bucket
        self.shown_url = without_url_password(url)  # for logs and errors
        self.latest_lookback_s = latest_lookback_s
        self._client = client or InfluxDBClient(url=url, token=token, org=org, timeout=timeout_ms)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._query_api = self._client.query_api()
        # a client of its own: the library sets one timeout per client
        self._long_client = None if client else InfluxDBClient(url=url, token=token, org=org,
                                                               timeout=long_read_timeout_ms)
        self._long_query_api = self._long_client.query_api() if self._long_client else self._query_api
        logger.info("telemetry store: InfluxDB at %s, org %s, bucket %s", self.shown_url, org, bucket)

    def write(self, samples: Sequence[TelemetrySample]) -> int:
        """Write in batches of BATCH_LINES. StoreUnavailable at the first batch that fails for now (the caller
        writes everything again; the key makes repeats harmless); WriteRefused, after every other batch was
        written, when InfluxDB refused some for good."""
        lines = [to_line(s) for s in samples]
        refused, reason = 0, ""
        for begin in range(0, len(lines), BATCH_LINES):
            batch = lines[begin:begin + BATCH_LINES]
            try:
                self._write_api.write(bucket=self.bucket, org=self.org, record=batch,
                                      write_precision=WritePrecision.MS)
            except Exception as exc:  # urllib3 connection errors and ApiException alike
                reason = without_url_password(_reason(exc))
                if not _refused_for_good(exc):
                    raise StoreUnavailable(f"InfluxDB write to {self.shown_url} failed: {reason}") from exc
                refused += _dropped(exc, len(batch))
        if refused:
            raise WriteRefused(f"InfluxDB at {self.shown_url} refused {refused} of {len(lines)} line(s): {reason}",
                               refused=refused, written=len(lines) - refused)
        return len(lines)

    def query_csv(self, query: str, *, long: bool = False) -> pd.DataFrame:
        """Run a Flux query (`long`: under the long read timeout); return its parsed annotated-CSV result."""
        try:
            response = (self._long_query_api if long else self._query_api).query_raw(query, org=self.org)
            text = response.data.decode("utf-8")
        except Exception as exc:
            reason = without_url_password(_reason(exc))
            raise StoreUnavailable(f"InfluxDB query at {self.shown_url} failed: {reason}") from exc
        return flux.parse_annotated_csv(text)

    def window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        return self._window(node_id, start, end, step_s, long=False)

    def long_window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        return self._window(node_id, start, end, step_s, long=True)

    def _window(self, node_id: str, start: datetime, end: datetime, step_s: int, *, long: bool) -> pd.DataFrame:
        check_window(start, end, step_s)
        result = self.query_csv(flux.window_query(self.bucket, node_id, start, end, step_s), long=long)
        bins = pd.DataFrame(columns=list(DEVICE_BIN_COLUMNS))
        if not result.empty:
            seconds = (result["_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
            # aggregateWindow clips the first window to the range start; label it by its aligned bin.
            bins = result.reindex(columns=list(DEVICE_BIN_COLUMNS)).assign(
                bin_s=(seconds.to_numpy(dtype=np.int64) // step_s) * step_s)
        return node_frame(bins, node_id, start, end, step_s)

    def latest(self, node_id: str | None = None) -> list[NodeLatest]:
        """Future rows never count: the Flux range has no stop, and range() stops at now() by default."""
        result = self.query_csv(flux.latest_query(self.bucket, node_id, self.latest_lookback_s))
        if result.empty:
            return []
        readings = result.rename(columns={"_value": "power_watts"}).assign(
            ts_ms=(result["_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1))
        return combine_latest(readings.reindex(columns=list(LATEST_COLUMNS)))

    def nodes(self, since: datetime | None = None) -> list[str]:
        # to `since` itself, as the embedded store: the nodes gone before it would each count towards a retraining
        # read's row limit and get a window query of their own
        lookback = NODES_LOOKBACK_S if since is None else _seconds_back(since)
        result = self.query_csv(flux.nodes_query(self.bucket, lookback))
        return sorted(set(result["_value"].dropna().astype(str))) if "_value" in result else []

    def close(self) -> None:
        self._client.close()
        if self._long_client is not None:
            self._long_client.close()

    def __repr__(self) -> str:
        return f"InfluxStore(url={self.shown_url!r}, org={self.org!r}, bucket={self.bucket!r})"


def _refused_for_good(exc: Exception) -> bool:
    """Whether InfluxDB refused a write's lines for good: 422 (points outside the bucket's retention), a 400 that
    says it cannot parse them, or any answer that says they are beyond the retention (a 500 with it would otherwise
    hold the queue for ever). Any other 400 (a wrong setting, say) is "not now": dropping every sample for a
    configuration mistake would lose them all."""
    status = getattr(exc, "status", None)
    text = _text(exc)
    return (status == 422 or _BEYOND_RETENTION in text
            or (status == 400 and any(words in text for words in _UNPARSABLE)))


def _dropped(exc: Exception, lines: int) -> int:
    """How many of a batch's `lines` a refusal dropped: a partial write says `dropped=N` (InfluxDB wrote the
    rest); without it, the whole batch."""
    found = _DROPPED.search(_text(exc))
    return min(int(found.group(1)), lines) if found else lines


def _text(exc: Exception) -> str:
    return f"{getattr(exc, 'body', '') or ''} {getattr(exc, 'message', '') or ''} {exc}".lower()


def _reason(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status}: {getattr(exc, 'message', None) or exc}" if status else f"{type(exc).__name__}: {exc}"
