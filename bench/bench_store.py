"""Telemetry store write throughput and window latency: 100 nodes x 7 days at 1-minute resolution.

    python bench/bench_store.py [--nodes 100] [--days 7] [--gpus 1] [--skip-victoria]

Each node sends, every minute, a BMC wall reading, a host sample (CPU, memory, RAPL) and one sample per
GPU: 3 samples per node-minute by default, 3.0 M in all. Writes go in batches of 10,000 (the durable
buffer's default) and only `write()` is timed, not building the samples.

- Embedded SQLite (SqliteStore, WAL, synchronous=FULL): write throughput, then `window()` latency for a
  7-day and a 1-hour window at 1 minute (the model's input), `latest()` over all nodes, file size, and the
  latency of one minute's writes while another thread reads the 7-day window again and again (a collector's
  flush during a retraining's read).
- InfluxDB-compatible path: InfluxStore's line-protocol writes to a local VictoriaMetrics (Debian
  `victoria-metrics`), timed until accepted and until every sample is queryable; reads through VM's PromQL
  (`query_range` of the four feature series a window needs), since no Flux server installs here.
Target: under 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.stores.base import TelemetryStore  # noqa: E402
from core.stores.influx import InfluxStore  # noqa: E402
from core.stores.sqlite import SqliteStore  # noqa: E402
from core.telemetry import Quality, SourceKind, TelemetrySample  # noqa: E402

BATCH = 10_000
CHUNK_MINUTES = 360  # samples are built and written six hours at a time to bound memory


def build(nodes: int, gpus: int, start: datetime, first_minute: int, minutes: int) -> list[TelemetrySample]:
    """Samples for all nodes over `minutes` minutes (model_construct: built already valid, like collectors')."""
    make = TelemetrySample.model_construct
    samples = []
    for minute in range(first_minute, first_minute + minutes):
        moment = start + timedelta(minutes=minute)
        load = (minute % 1440) / 1440
        for n in range(nodes):
            node = f"node-{n:03d}"
            samples.append(make(timestamp=moment, node_id=node, source=SourceKind.IPMI, device_id="node",
                                power_watts=900.0 + 600 * load + n, utilization=None, memory_usage=None,
                                temperature=30.0, power_limit_watts=None, energy_joules=None, quality=Quality.OK))
            samples.append(make(timestamp=moment, node_id=node, source=SourceKind.HOST, device_id="node",
                                power_watts=150.0 + 50 * load, utilization=20 + 60 * load, memory_usage=45.0,
                                temperature=55.0, power_limit_watts=None, energy_joules=None, quality=Quality.OK))
            for g in range(gpus):
                samples.append(make(timestamp=moment, node_id=node, source=SourceKind.NVML, device_id=f"GPU-{g}",
                                    power_watts=100.0 + 300 * load, utilization=100 * load, memory_usage=None,
                                    temperature=50.0 + 25 * load, power_limit_watts=400.0, energy_joules=None,
                                    quality=Quality.OK))
    return samples


def timed_writes(store: TelemetryStore, args: argparse.Namespace, start: datetime) -> tuple[int, float]:
    total, spent = 0, 0.0
    for first in range(0, args.days * 1440, CHUNK_MINUTES):
        samples = build(args.nodes, args.gpus, start, first, min(CHUNK_MINUTES, args.days * 1440 - first))
        began = time.perf_counter()
        for begin in range(0, len(samples), BATCH):
            store.write(samples[begin:begin + BATCH])
        spent += time.perf_counter() - began
        total += len(samples)
    return total, spent


def median_ms(action, runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        action()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def bench_sqlite(args: argparse.Namespace, start: datetime, scratch: Path) -> None:
    store = SqliteStore(scratch / "sqlite")
    total, spent = timed_writes(store, args, start)
    end = start + timedelta(days=args.days)
    node = f"node-{min(42, args.nodes - 1):03d}"
    frame = store.window(node, start, end, 60)
    assert len(frame) == args.days * 1440 and frame["power_watts"].notna().all()
    week = median_ms(lambda: store.window(node, start, end, 60), 5)
    hour = median_ms(lambda: store.window(node, end - timedelta(hours=1), end, 60), 50)
    latest = median_ms(store.latest, 5)
    write_p50, write_max, reads = writes_during_reads(store, node, start, end, args)
    size = sum(p.stat().st_size for p in store.path.parent.iterdir())
    store.close()
    out(f"SQLite (embedded, WAL, synchronous=FULL): {total:,} samples in {spent:.1f} s = {total / spent:,.0f} "
        f"samples/s ({size / total:.0f} B/sample on disk); window {args.days} d @ 1 min ({args.days * 1440:,} rows): "
        f"{week:.0f} ms; window 1 h @ 1 min: {hour:.1f} ms; latest() over {args.nodes} nodes: {latest:.0f} ms; "
        f"one minute's writes ({args.nodes * (2 + args.gpus)} samples) during {reads} {args.days}-day window reads: "
        f"median {write_p50:.0f} ms, max {write_max:.0f} ms")


def writes_during_reads(store: SqliteStore, node: str, start: datetime, end: datetime,
                        args: argparse.Namespace, rounds: int = 40) -> tuple[float, float, int]:
    """Median and longest write of one minute of samples (after the window) while another thread reads the whole
    window again and again; and how many reads ran meanwhile."""
    stop, reads = threading.Event(), [0]

    def reader() -> None:
        while not stop.is_set():
            store.window(node, start, end, 60)
            reads[0] += 1

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    times = []
    try:
        for minute in range(rounds):
            batch = build(args.nodes, args.gpus, end, minute, 1)
            began = time.perf_counter()
            store.write(batch)
            times.append((time.perf_counter() - began) * 1000)
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    return statistics.median(times), max(times), reads[0]


def promql(url: str, path: str, **params: str) -> dict:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=120) as response:
        return json.loads(response.read())["data"]


QUERYABLE_WITHIN_S = 300.0  # how long written samples may take to be counted before the run gives up


def bench_victoria(args: argparse.Namespace, start: datetime, scratch: Path) -> None:
    from tests.servers.victoria import VictoriaMetrics

    try:
        server = VictoriaMetrics(scratch / "vm", retention=f"{args.days + 2}d").start()  # every sample kept
    except BaseException as exc:  # noqa: BLE001 - pytest.fail's exception when the binary is missing
        out(f"VictoriaMetrics: skipped ({exc})")
        return
    try:
        store = InfluxStore(server.url, "bench", "bench", "telemetry", timeout_ms=120_000)
        total, spent = timed_writes(store, args, start)
        written_at = time.perf_counter()
        expected = args.nodes * args.days * 1440
        count_query = f'sum(count_over_time(telemetry_power_watts{{source="ipmi"}}[{args.days + 1}d]))'
        end = start + timedelta(days=args.days)
        deadline = time.perf_counter() + QUERYABLE_WITHIN_S
        while True:
            server.force_flush()
            result = promql(server.url, "/api/v1/query", query=count_query, time=str(end.timestamp()))["result"]
            found = int(float(result[0]["value"][1])) if result else 0
            if found >= expected:
                break
            if time.perf_counter() > deadline:
                out(f"VictoriaMetrics: only {found} of {expected} samples queryable {QUERYABLE_WITHIN_S:.0f} s after "
                    "the writes: not measured")
                return
            time.sleep(0.5)
        lag = time.perf_counter() - written_at
        node = f"node-{min(42, args.nodes - 1):03d}"
        series = [f'avg_over_time(telemetry_{field}{{node_id="{node}",source="{source}"}}[60s])'
                  for field, source in (("power_watts", "ipmi"), ("utilization", "nvml"), ("utilization", "host"),
                                        ("memory_usage", "host"))]

        def window(span: timedelta) -> None:
            for query in series:
                data = promql(server.url, "/api/v1/query_range", query=query, start=str((end - span).timestamp()),
                              end=str(end.timestamp()), step="60s")
                assert data["result"], query

        week = median_ms(lambda: window(timedelta(days=args.days)), 5)
        hour = median_ms(lambda: window(timedelta(hours=1)), 20)
        store.close()
        out(f"VictoriaMetrics via influxdb-client line protocol: {total:,} samples written in {spent:.1f} s = "
            f"{total / spent:,.0f} samples/s accepted, all queryable {lag:.1f} s after the last write; "
            f"PromQL window (4 query_range) {args.days} d @ 1 min: {week:.0f} ms, "
            f"1 h @ 1 min: {hour:.1f} ms")
    finally:
        server.stop()


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--gpus", type=int, default=1, help="GPU samples per node-minute")
    parser.add_argument("--skip-victoria", action="store_true")
    args = parser.parse_args()
    start = (datetime.now(UTC) - timedelta(days=args.days)).replace(second=0, microsecond=0)
    out(f"{args.nodes} nodes x {args.days} d at 1 min, {2 + args.gpus} samples per node-minute")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        bench_sqlite(args, start, Path(scratch))
        if not args.skip_victoria:
            bench_victoria(args, start, Path(scratch))
    out(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
