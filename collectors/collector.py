"""CollectorActor: samples one node's sources on an interval and pushes batches to the store.

It runs a background thread: every `sampling_interval`, sample every source due (each at most every
`min_interval_s`, how often its device refreshes: an NPU tool on a node without NPUs never slows the GPU reads),
each on a thread of its own against one deadline per round
(`read_timeout`: a read hung in a driver is left behind and that source skipped until it returns, so the others,
the BMC's wall power among them, go on; a failing source costs only its own reading),
screen each round (core/telemetry_screen.py: implausible power and future timestamps are refused and
counted), put the rest into a DurableBuffer (memory, then disk) and publish the round as Ray metrics
(collectors/metrics.py). A second thread flushes the buffer to the store every `flush_interval`, so a slow or
hung store never delays a sampling round. A store outage never loses samples: they wait in the buffer and replay
in order, unless the spill directory reaches its cap (counted). Whether the store takes writes at all is asked
at the first flush it answers (memory spills to disk meanwhile, and the cap then deletes no older segment: the
newest samples that do not fit are dropped): a read-only one (Prometheus) ends the buffering, deleting what this
collector buffered meanwhile and what an earlier collector spilled for the same store (`store_key`) before it
answered; other segments an earlier collector spilled stay, for a writable store configured later. The collector
then only exports its gauges.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from collectors.base import TelemetrySource
from collectors.buffer import DurableBuffer
from collectors.metrics import CollectorMetrics, LossCounter
from collectors.settings import TelemetryConfig
from core.bounded import BoundedCall, StillRunning
from core.metrics_catalog import TELEMETRY_DROPPED, TELEMETRY_REJECTED
from core.stores.base import StoreUnavailable, TelemetryStore
from core.telemetry import TelemetrySample
from core.telemetry_screen import screen_samples

logger = logging.getLogger(__name__)
SILENT_ROUNDS = 3  # a device without a reading for this many rounds (and its source's own interval): gauges NaN


class Collector:
    """The actor body (plain class: tests drive it without Ray)."""

    def __init__(self, node_id: str, sources: list[TelemetrySource], store: TelemetryStore | None,
                 settings: TelemetryConfig, *, start: bool = True, store_key: str | None = None):
        """`store` None: export gauges only (the telemetry already reaches a read-only store, e.g. Prometheus).
        `store_key` names the store (collectors/supervisor.py `store_key`: the store actor's fingerprint and the store
        its settings reach) in what is spilled before it answers."""
        self.node_id = node_id
        self.store = store
        self.sources = sources
        self.settings = settings
        self.interval_s = float(settings.sampling_interval)
        self.rejected = LossCounter("rejected", node_id, metric=TELEMETRY_REJECTED)
        self.dropped = LossCounter("dropped", node_id, metric=TELEMETRY_DROPPED)
        self.buffer = (DurableBuffer(store, Path(settings.spill_dir) / node_id, settings.max_buffered_samples,
                                     max_spill_bytes=settings.max_spill_mib * 2**20, drops=self.dropped,
                                     store_key=store_key, confirmed=False)
                       if store is not None else None)
        self._min_intervals = [getattr(source, "min_interval_s", 0.0) for source in sources]  # how often each refreshes
        self.metrics = CollectorMetrics(node_id, silent_after_s=SILENT_ROUNDS * self.interval_s +
                                        max(self._min_intervals, default=0.0))
        self._calls = [BoundedCall(f"collector-{node_id}-{_name(s)}") for s in sources]
        self._next_read = [0.0] * len(sources)  # monotonic time a source may be read again (its min_interval_s)
        self._hung: set[int] = set()  # sources whose last read outlasted its round and has not returned
        self.rounds = 0
        self.samples_taken = 0
        self._store_asked = store is None  # whether the store said if it takes writes (`_stores`)
        self._stop = threading.Event()
        self._keeping = threading.Lock()  # a round's stop check and put: stop() and `_stores` wait for them
        self._probes = threading.Condition()  # status probes under way: stop() closes the sources after them
        self._probing = 0
        self._alive_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"collector-{node_id}", daemon=True)
        self._flusher = threading.Thread(target=self._flush_loop, name=f"collector-{node_id}-flush", daemon=True)
        if start:
            self._thread.start()
            if self.buffer is not None:
                self._flusher.start()

    def collect_once(self) -> list[TelemetrySample]:
        """One round over every available source; returns the samples kept (`samples` in `status()` counts
        them, `rejected` the ones the screen refused)."""
        taken: list[TelemetrySample] = []
        reads = []
        now = time.monotonic()
        for index, (source, call) in enumerate(zip(self.sources, self._calls, strict=True)):
            if now < self._next_read[index] - 0.05:  # never faster than the device refreshes (a jitter's grace)
                continue
            self._next_read[index] = now + self._min_intervals[index]
            try:
                reads.append((index, call.start(source.sample)))
            except StillRunning:  # said once, when it hung
                continue
            except RuntimeError as exc:  # no thread to read it on: this source misses the round, the others not
                logger.warning("collector %s: source %s not read: %s", self.node_id, _name(source), exc)
                continue
            if index in self._hung:
                self._hung.discard(index)
                logger.info("collector %s: source %s answers again", self.node_id, _name(source))
        deadline = time.monotonic() + float(self.settings.read_timeout)
        for index, read in reads:
            source = self.sources[index]
            try:
                taken.extend(read.result(timeout=max(0.0, deadline - time.monotonic())))
            except Exception:  # noqa: BLE001 - one bad source never stops the others
                if read.done():
                    logger.exception("collector %s: source %s failed", self.node_id, _name(source))
                else:
                    self._hung.add(index)
                    logger.warning("collector %s: source %s did not answer within %g s; skipped until its read "
                                   "returns", self.node_id, _name(source), float(self.settings.read_timeout))
        with self._keeping:
            if self._stop.is_set():  # a round that finished after stop() was asked for is not kept
                return []
            screened = screen_samples(taken, datetime.now(UTC), future_tolerance_s=self.settings.future_tolerance,
                                      max_node_watts=self.settings.max_node_watts)
            for reason, count in screened.rejected.items():
                self.rejected.add(reason.value, count, f"e.g. {_describe(screened.examples[reason])}")
            samples = screened.accepted
            self._beat()
            buffer = self.buffer
            if buffer is not None:
                buffer.put(samples)
        self.metrics.publish_round(samples, buffer.pending if buffer is not None else 0)
        self.rounds += 1
        self.samples_taken += len(samples)
        return samples

    def flush(self) -> int:
        """Push what is buffered; on a store failure the buffer keeps it (in order) for the next try."""
        stores, buffer = self._stores(), self.buffer
        if buffer is None:
            return 0
        if not stores:  # the store has not said yet whether it takes writes: memory goes to disk meanwhile
            buffer.spill()
            return 0
        written = buffer.flush()
        self.metrics.stored(written)
        return written

    def _stores(self) -> bool:
        """Whether this collector writes to the store. The store is asked once it answers (a store actor busy or
        restarting is asked again at the next flush); a read-only one ends the buffering: gauges only."""
        if not self._store_asked:
            try:
                read_only = self.store.is_read_only()  # type: ignore[union-attr]
            except StoreUnavailable as exc:
                logger.warning("collector %s: cannot tell yet whether the store takes writes (asked again at the "
                               "next flush): %s", self.node_id, exc)
                return False
            self._store_asked = True
            if read_only:
                self._end_buffering()
            elif self.buffer is not None:
                self.buffer.confirm_writable()
        return self.buffer is not None

    def _end_buffering(self) -> None:
        """The store is read-only: stop buffering and delete what this collector buffered while that was unknown
        (it is never to be stored); said once."""
        with self._keeping:
            buffer, self.buffer = self.buffer, None
        if buffer is None:
            return
        released = buffer.release()
        logger.info("collector %s: the store is read-only: exporting gauges only; discarded %d sample(s) (%d bytes "
                    "spilled) buffered while it was unknown whether the store takes writes", self.node_id,
                    released.discarded_samples, released.discarded_bytes)
        if released.kept_segments:
            logger.info("collector %s: %d sample(s) in %d segment(s) under %s, spilled before this collector "
                        "started, are kept for a writable store", self.node_id, released.kept_samples,
                        released.kept_segments, buffer.spill_dir)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.collect_once()
                self.rejected.report()
                self.dropped.report()
            except Exception:  # noqa: BLE001 - logged; a dead thread would stop the node's telemetry unseen
                logger.exception("collector %s: round failed", self.node_id)
            self._beat()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def _flush_loop(self) -> None:
        while not self._stop.wait(float(self.settings.flush_interval)):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - logged; tried again at the next interval
                logger.exception("collector %s: flush failed", self.node_id)

    def _beat(self) -> None:
        self._alive_at = time.monotonic()

    def _availability(self, index: int, source: TelemetrySource) -> tuple[bool, str]:
        """A source whose read hangs is unavailable, and not probed (a probe could hang on the same driver)."""
        if index in self._hung:
            return False, (f"its read did not return within read_timeout ({float(self.settings.read_timeout):g} s) "
                           "and has not returned since; skipped until it does")
        return source.available()

    def round_age_s(self) -> float:
        """Seconds since the sampling thread last made progress (finished its sources' reads; since start, before
        the first round): the supervisor replaces a collector whose sampling has stalled (stuck outside its bounded
        source reads). Flushes run on a thread of their own: a long one is no stall."""
        return time.monotonic() - self._alive_at

    def status(self) -> dict:
        """Counts, buffer and each source's availability (probed: a first read, a tool's run; not once stopping,
        when the sources are being closed: a stop waits for the probes under way before it closes them)."""
        with self._probes:
            stopping = self._stop.is_set()
            self._probing += not stopping
        try:
            available = {_name(s): (False, "the collector is stopping") if stopping else self._availability(i, s)
                         for i, s in enumerate(self.sources)}
        finally:
            if not stopping:
                with self._probes:
                    self._probing -= 1
                    self._probes.notify_all()
        buffer = self.buffer
        return {
            "node_id": self.node_id,
            "interval_s": self.interval_s,
            "rounds": self.rounds,
            "samples": self.samples_taken,
            "buffered": buffer.pending if buffer is not None else 0,
            "rejected": self.rejected.counts,
            "dropped": self.dropped.counts,
            "last_flush_error": buffer.last_error if buffer is not None else None,
            "sources": {name: {"available": ok, "reason": why} for name, (ok, why) in available.items()},
        }

    def stop(self) -> None:
        """Stop sampling and push what is left (kept on disk if the store is still down). Memory is spilled
        first, before any wait: the supervisor ends a collector whose stop takes long, and what was on disk then
        is replayed by the next one."""
        with self._keeping:
            self._stop.set()  # no round keeps samples from now on
        buffer = self.buffer  # read once: the flusher may end the buffering meanwhile (a read-only store)
        if buffer is not None:
            buffer.close()  # spills, flushes, and keeps the rest on disk for the next collector
        if self._thread.is_alive():  # a round still reading: its sources are closed once it is over
            self._thread.join(timeout=float(self.settings.read_timeout) + 1)
        self.rejected.report(force=True)
        self.dropped.report(force=True)
        with self._probes:  # a probe under way would reopen what is closed under it (an NVML init, a BMC session)
            self._probes.wait_for(lambda: self._probing == 0, timeout=float(self.settings.read_timeout) + 1)
        for source in self.sources:
            source.close()


def _describe(sample: TelemetrySample) -> str:
    return (f"{sample.source.value}/{sample.device_id} at {sample.timestamp.isoformat()}: {sample.power_watts} W"
            f" (limit {sample.power_limit_watts} W)")


def _name(source: TelemetrySource) -> str:
    return getattr(source, "label", source.kind.value)
