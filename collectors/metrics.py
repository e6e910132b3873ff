"""A collector's Ray metrics (exported on Ray's Prometheus endpoint, as Kepler or dcgm-exporter would):
node/device power gauges, and counters of samples that were not stored, by reason, never silent."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from core.telemetry import TelemetrySample

logger = logging.getLogger(__name__)

REJECTED_METRIC = "kcloud_telemetry_rejected_samples_total"
DROPPED_METRIC = "kcloud_telemetry_dropped_samples_total"
LOG_EVERY_S = 60.0


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


class LossCounter:
    """Samples one node did not store, by reason: totals (`counts`), an optional Ray metrics counter tagged
    node_id and reason, and warnings: the first loss of a reason at once, later ones summed into one warning
    per reason every `log_every_s` (by the next `add` or `report` after that).

    Args:
        what: the verb the log uses, e.g. "rejected" or "dropped".
        node_id: the node the samples came from (or the buffer's directory when there is no node).
        metric: the Ray counter's name, None for none.
    """

    def __init__(self, what: str, node_id: str, *, metric: str | None = None, log_every_s: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.node_id, self.log_every_s = what, node_id, log_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._unlogged: dict[str, tuple[int, str]] = {}  # reason -> (count, latest detail)
        self._next_log: dict[str, float] = {}
        self._counter = None
        if metric is not None:
            try:
                from ray.util.metrics import Counter

                self._counter = Counter(metric, f"telemetry samples {what}, by node and reason",
                                        tag_keys=("node_id", "reason"))
            except Exception:  # noqa: BLE001 - metrics are optional; the counts and the log remain
                self._counter = None

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
