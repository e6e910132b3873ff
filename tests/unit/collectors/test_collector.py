"""Collector (the collector actor's body) without Ray: sampling, buffering through a store outage, stop."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from collectors.base import TelemetrySource
from collectors.collector import Collector
from collectors.settings import TelemetryConfig
from core.stores.base import StoreUnavailable
from core.stores.sqlite import SqliteStore
from core.telemetry import SourceKind, TelemetrySample


class CountingSource(TelemetrySource):
    kind = SourceKind.HOST
    min_interval_s = 0.0

    def __init__(self) -> None:
        self.n = 0

    def available(self) -> tuple[bool, str]:
        return True, ""

    def sample(self) -> list[TelemetrySample]:
        self.n += 1
        return [TelemetrySample(timestamp=datetime.fromtimestamp(1_700_000_000 + self.n, UTC), node_id="n1",
                                source=SourceKind.HOST, power_watts=100.0 + self.n)]


class BrokenSource(CountingSource):
    def sample(self) -> list[TelemetrySample]:
        raise OSError("device gone")


class FlakyStore(SqliteStore):
    down = True

    def write(self, samples):
        if self.down:
            raise StoreUnavailable("down for maintenance")
        return super().write(samples)


def _settings(tmp_path) -> TelemetryConfig:
    return TelemetryConfig(sampling_interval=1, flush_interval=1, spill_dir=str(tmp_path / "spill"))


def test_outage_keeps_every_sample_until_the_store_is_back(tmp_path):
    store = FlakyStore(tmp_path / "db")
    collector = Collector("n1", [CountingSource(), BrokenSource()], store, _settings(tmp_path), start=False)
    for _ in range(5):
        collector.collect_once()
        assert collector.flush() == 0
    assert collector.status()["buffered"] == 5 and "maintenance" in collector.status()["last_flush_error"]
    store.down = False
    collector.collect_once()
    assert collector.flush() == 6
    assert collector.flush() == 0  # nothing twice
    assert [n.power_watts for n in store.latest("n1")] == [106.0]
    collector.stop()


def test_slower_source_sets_the_interval(tmp_path):
    slow = CountingSource()
    slow.min_interval_s = 15.0
    collector = Collector("n1", [slow], None, _settings(tmp_path), start=False)
    assert collector.interval_s == 15.0  # never poll faster than the device refreshes
    assert collector.collect_once() and collector.flush() == 0  # no store: gauges only
    collector.stop()


def test_background_loop_samples_and_stops_cleanly(tmp_path):
    store = SqliteStore(tmp_path / "db")
    collector = Collector("n1", [CountingSource()], store, _settings(tmp_path))
    deadline = time.monotonic() + 10
    while collector.rounds < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    collector.stop()
    assert collector.rounds >= 2 and store.latest("n1")
