"""Sampling overhead of one node's collector: CPU % of a core while it samples and pushes.

    python bench/bench_collector.py [--seconds 30] [--interval 1s] [--sources host]

Runs the real Collector loop (sources -> durable buffer -> embedded SQLite store) in this process for
`--seconds` and reports process CPU time over wall time, per-round cost and samples written. The default
sampling interval in production is 5 s; 1 s here makes the overhead easier to see.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.collector import Collector  # noqa: E402
from collectors.settings import CollectorConfig, TelemetryConfig  # noqa: E402
from collectors.sources import build_sources  # noqa: E402
from core.stores.sqlite import SqliteStore  # noqa: E402
from training.cli import duration_arg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=duration_arg, default=1)
    parser.add_argument("--sources", default="host", help="comma-separated: host, nvml, npu, ipmi")
    args = parser.parse_args()
    selected = set(args.sources.split(","))
    with tempfile.TemporaryDirectory() as scratch:
        settings = TelemetryConfig(sampling_interval=args.interval, flush_interval=10,
                                   spill_dir=str(Path(scratch) / "spill"))
        store = SqliteStore(Path(scratch) / "db")
        sources = build_sources(CollectorConfig(), "bench-node", selected=selected)
        collector = Collector("bench-node", sources, store, settings)
        cpu_before, wall_before, rounds_before = time.process_time(), time.monotonic(), collector.rounds
        time.sleep(args.seconds)  # steady state: the loop samples, buffers and flushes on its own thread
        cpu, wall = time.process_time() - cpu_before, time.monotonic() - wall_before
        rounds = collector.rounds - rounds_before
        collector.stop()
        store.close()
    available = ", ".join(f"{getattr(s, 'label', s.kind.value)}={'yes' if s.available()[0] else 'no'}"
                          for s in sources)
    sys.stdout.write(
        f"collector overhead, sources {sorted(selected)} ({available}), interval {args.interval}s, {wall:.0f}s: "
        f"{100 * cpu / wall:.2f}% of one core, {1000 * cpu / max(rounds, 1):.2f} ms CPU per round, "
        f"{rounds} rounds, {collector.samples_taken} samples, {os.cpu_count()} cores\n")


if __name__ == "__main__":
    main()
