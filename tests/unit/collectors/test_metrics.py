"""A collector's metrics: every lost sample counted (warnings at once for a new reason, then at most once a
minute), and each round exported as device gauges, throughput, backlog and freshness."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

import pytest

from collectors.base import TelemetrySource
from collectors.collector import Collector
from collectors.metrics import CollectorMetrics, LossCounter
from collectors.settings import TelemetryConfig
from core import metrics_catalog
from core.metrics_catalog import TELEMETRY_DROPPED, MetricSpec
from core.stores.sqlite import SqliteStore
from core.telemetry import SourceKind, TelemetrySample


def test_losses_are_counted_and_their_warnings_rate_limited(caplog):
    clock = [1000.0]
    losses = LossCounter("rejected", "n1", clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="collectors.metrics"):
        losses.add("bmc_sentinel", 1, "e.g. 65535 W")
        losses.add("bmc_sentinel", 2)
        losses.add("future_timestamp", 4)
        losses.add("bmc_sentinel", 0)
        assert len(caplog.records) == 2  # the first of each reason at once
        clock[0] += 30
        losses.report()
        assert len(caplog.records) == 2
        clock[0] += 31
        losses.report()
        assert len(caplog.records) == 3 and "2 sample(s) rejected, reason bmc_sentinel" in caplog.text
        losses.add("bmc_sentinel", 5)
        losses.report(force=True)
    assert losses.counts == {"bmc_sentinel": 8, "future_timestamp": 4}
    assert caplog.records[-1].getMessage().startswith("telemetry n1: 5 sample(s) rejected, reason bmc_sentinel")
    assert "e.g. 65535 W" in caplog.records[0].getMessage()


def test_a_metric_counter_outside_ray_is_harmless():
    losses = LossCounter("dropped", "n1", metric=TELEMETRY_DROPPED)
    losses.add("spill_cap", 3)
    assert losses.counts == {"spill_cap": 3}


class FakeMetric:
    """Records what a Ray metric would export."""

    def __init__(self, spec: MetricSpec) -> None:
        self.spec, self.calls = spec, []

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append(("set", value, tags))

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("inc", value, tags))


@pytest.fixture()
def exported(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeMetric]:
    """Metric name -> the fake the collector's code created from the catalog."""
    made: dict[str, FakeMetric] = {}

    def create(spec: MetricSpec) -> FakeMetric:
        return made.setdefault(spec.name, FakeMetric(spec))

    monkeypatch.setattr(metrics_catalog, "create", create)
    return made


class GpuSource(TelemetrySource):
    kind = SourceKind.NVML
    min_interval_s = 0.0

    def available(self) -> tuple[bool, str]:
        return True, ""

    def sample(self) -> list[TelemetrySample]:
        now = datetime.now(UTC)
        return [TelemetrySample(timestamp=now - timedelta(seconds=i), node_id="n1", source=SourceKind.NVML,
                                device_id=f"gpu{i}", power_watts=300.0 + i, utilization=50.0, memory_usage=40.0 + i)
                for i in range(2)]


def test_a_round_exports_device_gauges_throughput_backlog_and_freshness(tmp_path, exported):
    store = SqliteStore(tmp_path / "db")
    settings = TelemetryConfig(sampling_interval=1, flush_interval=1, spill_dir=str(tmp_path / "spill"))
    collector = Collector("n1", [GpuSource()], store, settings, start=False)
    kept = collector.collect_once()
    memory = exported["kcloud_memory_usage_percent"].calls
    assert memory == [("set", 40.0, {"node_id": "n1", "source": "nvml", "device_id": "gpu0"}),
                      ("set", 41.0, {"node_id": "n1", "source": "nvml", "device_id": "gpu1"})]  # GPU memory per device
    assert len(exported["kcloud_power_watts"].calls) == 2
    assert exported["kcloud_telemetry_samples_total"].calls == [("inc", 2, {"node_id": "n1", "source": "nvml"})]
    assert exported["kcloud_telemetry_buffered_samples"].calls == [("set", 2, {"node_id": "n1"})]
    newest = max(s.timestamp for s in kept).timestamp()
    assert exported["kcloud_telemetry_last_sample_timestamp_seconds"].calls == [("set", newest, {"node_id": "n1"})]
    assert collector.flush() == 2 and collector.flush() == 0
    assert exported["kcloud_telemetry_stored_samples_total"].calls == [("inc", 2, {"node_id": "n1"})]
    collector.stop()


def test_a_device_gauge_goes_nan_once_its_device_has_been_silent_a_while(exported):
    """A gauge keeps its last value while the worker lives: a BMC gone silent showed its last watts as current. A
    device only skipped for a round (an NPU tool read every 5 s by a 1 s collector) keeps its value."""
    clock = [0.0]
    metrics = CollectorMetrics("n1", silent_after_s=10.0, clock=lambda: clock[0])
    both = GpuSource().sample()
    for at, samples in ((0.0, both), (5.0, both[:1]), (10.0, both[:1]), (10.5, both[:1]), (20.0, both[:1])):
        clock[0] = at
        metrics.publish_round(samples, 0)
    power = exported["kcloud_power_watts"].calls
    gpu1 = [value for _, value, tags in power if tags["device_id"] == "gpu1"]
    assert gpu1[0] == 301.0 and len(gpu1) == 2 and math.isnan(gpu1[1])  # once, when 10 s had passed (at 10.5 s)
    assert [value for _, value, tags in power if tags["device_id"] == "gpu0"] == [300.0] * 5
    assert [call for call in power if call[2]["device_id"] == "gpu1"][1] == power[-2]  # set NaN in the 10.5 s round


def test_the_collector_waits_out_its_slowest_source_before_a_gauge_reads_nan(tmp_path):
    settings = TelemetryConfig(sampling_interval=1, flush_interval=1, spill_dir=str(tmp_path / "spill"))
    slow = GpuSource()
    slow.min_interval_s = 5.0
    collector = Collector("n1", [slow], None, settings, start=False)
    assert collector.metrics.silent_after_s == 3 * 1.0 + 5.0
