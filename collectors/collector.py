"""CollectorActor: samples one node's sources on an interval and pushes batches to the store.

It runs a background thread: sample every source (a slow or failing source costs only its own reading),
put the samples into a DurableBuffer (memory, then disk), flush to the store every `flush_interval`, and
publish node power as Ray metrics gauges (exported on Ray's Prometheus endpoint, as Kepler or dcgm-exporter
would). A store outage never loses samples: they wait in the buffer and replay in order.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from collectors.base import TelemetrySource
from collectors.buffer import DurableBuffer
from collectors.settings import TelemetryConfig
from core.stores.base import TelemetryStore
from core.telemetry import TelemetrySample

logger = logging.getLogger(__name__)


class PowerGauges:
    """Ray metrics gauges for node/device power; a no-op outside a Ray worker."""

    def __init__(self) -> None:
        try:
            from ray.util.metrics import Gauge

            self._power = Gauge("kcloud_power_watts", "power draw by node, source and device",
                                tag_keys=("node_id", "source", "device_id"))
            self._util = Gauge("kcloud_utilization_percent", "utilization by node, source and device",
                               tag_keys=("node_id", "source", "device_id"))
        except Exception:  # noqa: BLE001 - metrics are optional
            self._power = self._util = None

    def publish(self, samples: list[TelemetrySample]) -> None:
        if self._power is None:
            return
        for sample in samples:
            tags = {"node_id": sample.node_id, "source": sample.source.value, "device_id": sample.device_id}
            if sample.power_watts is not None:
                self._power.set(sample.power_watts, tags=tags)
            if sample.utilization is not None:
                self._util.set(sample.utilization, tags=tags)


class Collector:
    """The actor body (plain class: tests drive it without Ray)."""

    def __init__(self, node_id: str, sources: list[TelemetrySource], store: TelemetryStore | None,
                 settings: TelemetryConfig, *, start: bool = True):
        """`store` None: export gauges only (the telemetry already reaches a read-only store, e.g. Prometheus)."""
        self.node_id = node_id
        self.sources = sources
        self.settings = settings
        slowest = max((s.min_interval_s for s in sources), default=0.0)
        self.interval_s = max(float(settings.sampling_interval), slowest)  # never faster than a source refreshes
        self.buffer = (DurableBuffer(store, Path(settings.spill_dir) / node_id,
                                     max_memory=settings.max_buffered_samples) if store is not None else None)
        self.gauges = PowerGauges()
        self.rounds = 0
        self.samples_taken = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"collector-{node_id}", daemon=True)
        if start:
            self._thread.start()

    def collect_once(self) -> list[TelemetrySample]:
        """One round over every available source; `samples` in `status()` counts every sample kept."""
        samples: list[TelemetrySample] = []
        for source in self.sources:
            try:
                samples.extend(source.sample())
            except Exception:  # noqa: BLE001 - one bad source never stops the others
                logger.exception("collector %s: source %s failed", self.node_id, source.kind.value)
        if self._stop.is_set():  # a round that finished after stop() was asked for is not kept
            return []
        if self.buffer is not None:
            self.buffer.put(samples)
        self.gauges.publish(samples)
        self.rounds += 1
        self.samples_taken += len(samples)
        return samples

    def flush(self) -> int:
        """Push what is buffered; on a store failure the buffer keeps it (in order) for the next try."""
        return self.buffer.flush() if self.buffer is not None else 0

    def _run(self) -> None:
        next_flush = time.monotonic() + self.settings.flush_interval
        while not self._stop.is_set():
            started = time.monotonic()
            self.collect_once()
            if time.monotonic() >= next_flush:
                self.flush()
                next_flush = time.monotonic() + self.settings.flush_interval
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def status(self) -> dict:
        available = {getattr(s, "label", s.kind.value): s.available() for s in self.sources}
        return {
            "node_id": self.node_id,
            "interval_s": self.interval_s,
            "rounds": self.rounds,
            "samples": self.samples_taken,
            "buffered": self.buffer.pending if self.buffer is not None else 0,
            "last_flush_error": self.buffer.last_error if self.buffer is not None else None,
            "sources": {name: {"available": ok, "reason": why} for name, (ok, why) in available.items()},
        }

    def stop(self) -> None:
        """Stop sampling and push what is left (kept on disk if the store is still down)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 30)
        if self.buffer is not None:
            self.buffer.close()  # flushes, or keeps the rest on disk for the next collector
        for source in self.sources:
            source.close()
