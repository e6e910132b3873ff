"""InfluxStore's write path against a real line-protocol server (VictoriaMetrics), read back via PromQL.

VictoriaMetrics stores each line-protocol field as the series `<measurement>_<field>` (here
`telemetry_power_watts`, ...) with the tags node_id/source/device_id as labels; bucket, org and token are
ignored. Flux reads are covered in tests/unit/test_flux.py (no Flux server installs here). No Ray.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from collectors.buffer import DurableBuffer
from core.stores.base import StoreUnavailable
from core.stores.influx import InfluxStore
from core.telemetry import TelemetrySample
from tests.servers.victoria import VictoriaMetrics

pytestmark = pytest.mark.integration


@pytest.fixture
def victoria(tmp_path):
    server = VictoriaMetrics(tmp_path).start()
    yield server
    server.stop()


def recent(count: int, node: str = "n1", source: str = "ipmi", device: str = "node", start_s: int = 0,
           **fields) -> list[TelemetrySample]:
    """`count` samples 250 ms apart, ending a few minutes ago (inside VictoriaMetrics' retention)."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    return [TelemetrySample(timestamp=base + timedelta(milliseconds=250 * (start_s + i)), node_id=node,
                            source=source, device_id=device, power_watts=100.0 + start_s + i, **fields)
            for i in range(count)]


def counts(server: VictoriaMetrics, selector: str, expect: int) -> dict[tuple[str, str, str], int]:
    result = server.query_until(f"count_over_time({selector}[2h])", expect)
    return {(r["metric"]["node_id"], r["metric"]["source"], r["metric"]["device_id"]): int(r["value"][1])
            for r in result}


def test_influxdb_client_writes_land_as_measurement_field_series(victoria):
    store = InfluxStore(victoria.url, "any-token", "any-org", "telemetry")
    bmc = recent(40)
    gpu = recent(40, source="nvml", device="GPU-0", utilization=87.5, temperature=66.0)
    assert store.write(bmc + gpu) == 80
    assert store.write(bmc) == 40  # a replay: same series and timestamps
    assert counts(victoria, "telemetry_power_watts", 2) == {("n1", "ipmi", "node"): 40, ("n1", "nvml", "GPU-0"): 40}
    assert counts(victoria, "telemetry_utilization", 1) == {("n1", "nvml", "GPU-0"): 40}
    exported = victoria.export('telemetry_power_watts{source="ipmi"}')
    assert len(exported) == 1
    stamps = sorted(set(exported[0]["timestamps"]))
    assert stamps == [int(s.timestamp.timestamp() * 1000) for s in bmc]  # millisecond precision kept
    temperature = victoria.query('telemetry_temperature{device_id="GPU-0"}', at=bmc[-1].timestamp.timestamp())
    assert float(temperature[0]["value"][1]) == 66.0
    store.close()


def test_durable_buffer_rides_out_a_server_outage_without_loss_or_duplicates(victoria, tmp_path):
    store = InfluxStore(victoria.url, "any-token", "any-org", "telemetry", timeout_ms=3000)
    buffer = DurableBuffer(store, tmp_path / "spill", max_memory=25)
    written: dict[str, int] = {}

    def put(node: str, count: int, start_s: int) -> None:
        buffer.put(recent(count, node=node, start_s=start_s))
        written[node] = written.get(node, 0) + count

    put("a", 30, 0)
    assert buffer.flush() == 30

    victoria.stop()  # by its own PID
    for round_ in range(4):  # collectors keep producing while the server is down
        put("a", 20, 30 + 20 * round_)
        put("b", 15, 15 * round_)
        assert buffer.flush() == 0
        assert isinstance(buffer.last_error, str) and "StoreUnavailable" in buffer.last_error
    assert buffer.pending == 4 * 35 and buffer.memory_pending == 0  # everything went to disk
    assert list((tmp_path / "spill").glob("segment-*.jsonl"))
    buffer.close()  # the collector process restarts too

    victoria.start()  # same data directory and port
    buffer = DurableBuffer(InfluxStore(victoria.url, "t", "o", "telemetry"), tmp_path / "spill", max_memory=25)
    assert buffer.pending == 4 * 35
    put("b", 5, 60)
    assert buffer.flush() == 4 * 35 + 5
    assert buffer.pending == 0 and not list((tmp_path / "spill").glob("segment-*.jsonl"))
    time.sleep(0.2)
    found = counts(victoria, "telemetry_power_watts", 2)
    assert found == {("a", "ipmi", "node"): written["a"], ("b", "ipmi", "node"): written["b"]}
    buffer.close()


def test_writes_to_a_stopped_server_raise_store_unavailable(victoria):
    store = InfluxStore(victoria.url, "any-token", "o", "b", timeout_ms=2000)
    victoria.stop()
    with pytest.raises(StoreUnavailable, match="InfluxDB write"):
        store.write(recent(1))
    store.close()
