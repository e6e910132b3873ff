"""A collector's Ray metrics (exported on Ray's Prometheus endpoint; core/metrics_catalog.py has the names):
device power, utilization and memory gauges, the pipeline's throughput, backlog and freshness, and counters of
samples that were not stored, by reason, never silent."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from core import metrics_catalog as catalog
from core.metrics_catalog import MetricSpec
from core.telemetry import TelemetrySample

logger = logging.getLogger(__name__)

LOG_EVERY_S = 60.0


class CollectorMetrics:
    """One node's collector metrics; every call is a no-op where Ray metrics are unavailable."""

    def __init__(self, node_id: str, silent_after_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`silent_after_s`: how long a device may go without a reading before its gauges read NaN (longer than
        any source's time between reads: the collector's interval and the slowest source's `min_interval_s`)."""
        self.node_id, self.silent_after_s, self._clock = node_id, silent_after_s, clock
        self._devices = [(catalog.create(spec), field) for spec, field in (
            (catalog.POWER_WATTS, "power_watts"), (catalog.UTILIZATION_PERCENT, "utilization"),
            (catalog.MEMORY_USAGE_PERCENT, "memory_usage"))]
        self._samples = catalog.create(catalog.TELEMETRY_SAMPLES)
        self._stored = catalog.create(catalog.TELEMETRY_STORED)
        self._buffered = catalog.create(catalog.TELEMETRY_BUFFERED)
        self._last_sample = catalog.create(catalog.TELEMETRY_LAST_SAMPLE)
        self._set_at: dict[tuple[int, tuple[tuple[str, str], ...]], float] = {}  # (device gauge, tags) -> when set

    def publish_round(self, samples: list[TelemetrySample], buffered: int) -> None:
        """One round's accepted samples: device gauges, samples by source, the newest time, the backlog. A device
        gauge not set for `silent_after_s` (a BMC gone silent, a GPU lost) is set to NaN: a gauge keeps its last
        value for as long as the worker lives, which a dashboard would show as the device's current draw."""
        by_source: dict[str, int] = {}
        now = self._clock()
        for sample in samples:
            tags = {"node_id": sample.node_id, "source": sample.source.value, "device_id": sample.device_id}
            for index, (gauge, field) in enumerate(self._devices):
                value = getattr(sample, field)
                if gauge is not None and value is not None:
                    gauge.set(value, tags=tags)
                    self._set_at[(index, tuple(tags.items()))] = now
            by_source[sample.source.value] = by_source.get(sample.source.value, 0) + 1
        for key in [key for key, at in self._set_at.items() if now - at > self.silent_after_s]:
            index, tags_set = key
            self._devices[index][0].set(math.nan, tags=dict(tags_set))
            del self._set_at[key]
        node = {"node_id": self.node_id}
        if self._samples is not None:
            for source, count in by_source.items():
                self._samples.inc(count, tags={**node, "source": source})
        if samples and self._last_sample is not None:
            self._last_sample.set(max(sample.timestamp for sample in samples).timestamp(), tags=node)
        if self._buffered is not None:
            self._buffered.set(buffered, tags=node)

    def stored(self, count: int) -> None:
        """`count` samples reached the store."""
        if count > 0 and self._stored is not None:
            self._stored.inc(count, tags={"node_id": self.node_id})


class LossCounter:
    """Samples one node did not store, by reason: totals (`counts`), an optional Ray metrics counter tagged
    node_id and reason, and warnings: the first loss of a reason at once, later ones summed into one warning
    per reason every `log_every_s` (by the next `add` or `report` after that).

    Args:
        what: the verb the log uses, e.g. "rejected" or "dropped".
        node_id: the node the samples came from (or the buffer's directory when there is no node).
        metric: the Ray counter (core/metrics_catalog.py), None for none.
    """

    def __init__(self, what: str, node_id: str, *, metric: MetricSpec | None = None,
                 log_every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.node_id, self.log_every_s = what, node_id, log_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._unlogged: dict[str, tuple[int, str]] = {}  # reason -> (count, latest detail)
        self._next_log: dict[str, float] = {}
        self._counter = catalog.create(metric) if metric is not None else None

    @property
    def counts(self) -> dict[str, int]:
        """Samples counted so far, by reason."""
        with self._lock:
            return dict(self._counts)

    def add(self, reason: str, count: int, detail: str = "") -> None:
        """Count `count` samples lost for `reason`; `detail` (an example, a cause) goes into the warning."""
        if count <= 0:
            return
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + count
            self._unlogged[reason] = (self._unlogged.get(reason, (0, ""))[0] + count, detail)
        if self._counter is not None:
            self._counter.inc(count, tags={"node_id": self.node_id, "reason": reason})
        self.report()

    def report(self, *, force: bool = False) -> None:
        """Warn about the losses not logged yet, for each reason whose interval has passed (`force`: all)."""
        now = self._clock()
        due = []
        with self._lock:
            for reason, (count, detail) in list(self._unlogged.items()):
                if force or now >= self._next_log.get(reason, float("-inf")):
                    due.append((reason, count, detail))
                    del self._unlogged[reason]
                    self._next_log[reason] = now + self.log_every_s
        for reason, count, detail in due:
            logger.warning("telemetry %s: %d sample(s) %s, reason %s%s (later ones: one summed warning per %.0f s)",
                           self.node_id, count, self.what, reason, f": {detail}" if detail else "", self.log_every_s)
