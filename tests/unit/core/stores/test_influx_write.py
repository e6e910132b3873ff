"""InfluxStore.write's failures: a batch refused for good (400/422, or points beyond the retention) is WriteRefused
after the other batches were written, counting what InfluxDB says it dropped; anything else is StoreUnavailable at
once (the caller writes everything again). No server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from influxdb_client.rest import ApiException

from core.stores import influx
from core.stores.base import StoreUnavailable, WriteRefused
from core.stores.influx import InfluxStore
from core.telemetry import TelemetrySample


class FakeWrites:
    """A write API that fails the batches whose number is in `failures` with that HTTP status."""

    def __init__(self, failures: dict[int, int], reason: str = "unable to parse 'telemetry,node_id=n1 x': bad"):
        self.failures, self.batches, self.calls, self.reason = failures, [], 0, reason

    def write(self, bucket, org, record, write_precision):
        self.calls += 1
        if (status := self.failures.get(self.calls)) is not None:
            raise ApiException(status=status, reason=self.reason)
        self.batches.append(record)


def store(writes: FakeWrites) -> InfluxStore:
    client = SimpleNamespace(write_api=lambda write_options: writes, query_api=lambda: None)
    return InfluxStore("http://user:pw@influx:8086", "token", "org", "bucket", client=client)


def samples(count: int) -> list[TelemetrySample]:
    start = datetime(2025, 3, 1, tzinfo=UTC)
    return [TelemetrySample(timestamp=start + timedelta(seconds=i), node_id="n1", source="ipmi", power_watts=100.0)
            for i in range(count)]


@pytest.mark.parametrize("status", [400, 422])
def test_a_refused_batch_does_not_stop_the_others(monkeypatch, status):
    monkeypatch.setattr(influx, "BATCH_LINES", 2)
    writes = FakeWrites({1: status})
    with pytest.raises(WriteRefused, match=f"refused 2 of 5 line\\(s\\): HTTP {status}") as refused:
        store(writes).write(samples(5))
    assert [len(batch) for batch in writes.batches] == [2, 1]  # the 2nd and 3rd batches were written
    assert (refused.value.refused, refused.value.written) == (2, 3)
    assert "pw" not in str(refused.value)


RETENTION = "failure writing points to database: partial write: points beyond retention policy dropped=1"


def test_a_partial_write_beyond_retention_counts_only_the_dropped_points(monkeypatch):
    """Regression: InfluxDB's 422 for points past the retention wrote the rest of the batch, but the whole batch
    counted as refused."""
    monkeypatch.setattr(influx, "BATCH_LINES", 2)
    with pytest.raises(WriteRefused, match="refused 1 of 5") as refused:
        store(FakeWrites({1: 422}, reason=RETENTION)).write(samples(5))
    assert (refused.value.refused, refused.value.written) == (1, 4)


def test_points_beyond_retention_are_refused_for_good_whatever_the_status(monkeypatch):
    """Regression: a 500 saying so was "not now", and the buffer retried the same points for ever."""
    monkeypatch.setattr(influx, "BATCH_LINES", 2)
    with pytest.raises(WriteRefused) as refused:
        store(FakeWrites({1: 500}, reason=RETENTION)).write(samples(5))
    assert (refused.value.refused, refused.value.written) == (1, 4)


@pytest.mark.parametrize("status", [401, 404, 429, 500, 503])
def test_any_other_failure_is_unavailable_at_once(monkeypatch, status):
    monkeypatch.setattr(influx, "BATCH_LINES", 2)
    writes = FakeWrites({1: status})
    with pytest.raises(StoreUnavailable, match=f"HTTP {status}"):
        store(writes).write(samples(5))
    assert writes.calls == 1


def test_a_400_that_is_not_about_the_lines_is_not_a_refusal(monkeypatch):
    """A 400 for a setting (not the data) must not make a buffer drop every sample it holds."""
    monkeypatch.setattr(influx, "BATCH_LINES", 2)
    writes = FakeWrites({1: 400}, reason="invalid: precision must be one of ms, s, us, ns")
    with pytest.raises(StoreUnavailable, match="HTTP 400"):
        store(writes).write(samples(5))
    assert writes.calls == 1
