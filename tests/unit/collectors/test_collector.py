"""Collector (the collector actor's body) without Ray: sampling, buffering through a store outage, stop."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from collectors import collector_actor
from collectors.base import TelemetrySource
from collectors.buffer import DurableBuffer
from collectors.collector import Collector
from collectors.settings import CollectorConfig, TelemetryConfig
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


def test_a_slower_source_is_read_at_its_own_pace_and_the_others_at_the_interval(tmp_path):
    """Regression: the slowest source set every source's interval, so a node without NPUs sampled its GPUs every
    5 s (npu-smi's pace) whatever sampling_interval said."""
    slow, fast = CountingSource(), CountingSource()
    slow.min_interval_s = 15.0
    collector = Collector("n1", [slow, fast], None, _settings(tmp_path), start=False)
    assert collector.interval_s == 1.0
    assert collector.collect_once() and collector.flush() == 0  # no store: gauges only
    collector.collect_once()
    assert (slow.n, fast.n) == (1, 2)  # never poll faster than the device refreshes
    collector._next_read[0] = 0.0  # its 15 s have passed
    collector.collect_once()
    assert (slow.n, fast.n) == (2, 3)
    collector.stop()


def test_background_loop_samples_and_stops_cleanly(tmp_path):
    store = SqliteStore(tmp_path / "db")
    collector = Collector("n1", [CountingSource()], store, _settings(tmp_path))
    deadline = time.monotonic() + 10
    while collector.rounds < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    collector.stop()
    assert collector.rounds >= 2 and store.latest("n1")


class GlitchySource(CountingSource):
    """A BMC that answers one round with a real reading, its 0xFFFF glitch and a reading from a clock 30 days ahead."""

    kind = SourceKind.IPMI

    def sample(self) -> list[TelemetrySample]:
        now = datetime.now(UTC)
        return [TelemetrySample(timestamp=now, node_id="n1", source=SourceKind.IPMI, power_watts=watts)
                for watts in (640.0, 65_535.0)] + [
            TelemetrySample(timestamp=now + timedelta(days=30), node_id="n1", source=SourceKind.IPMI,
                            power_watts=650.0)]


def test_glitched_and_future_readings_are_refused_counted_and_logged(tmp_path, caplog):
    store = SqliteStore(tmp_path / "db")
    collector = Collector("n1", [GlitchySource()], store, _settings(tmp_path), start=False)
    with caplog.at_level(logging.WARNING, logger="collectors.metrics"):
        kept = collector.collect_once()
        collector.collect_once()
    assert [s.power_watts for s in kept] == [640.0]
    assert collector.flush() == 2
    status = collector.status()
    assert status["rejected"] == {"bmc_sentinel": 2, "future_timestamp": 2}
    assert status["samples"] == 2 and status["dropped"] == {}
    [latest] = store.latest("n1")
    assert latest.power_watts == 640.0 and latest.age_s < 60
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, "one warning per reason in the first round, then summed once a minute"
    assert any("bmc_sentinel" in w and "65535.0 W" in w for w in warnings)
    collector.stop()


def test_the_spill_cap_from_the_settings_drops_and_shows_in_status(tmp_path):
    store = FlakyStore(tmp_path / "db")
    settings = _settings(tmp_path).model_copy(update={"max_spill_mib": 1})  # about 4,600 samples
    collector = Collector("n1", [], store, settings, start=False)
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    for start in range(0, 8000, 2000):
        collector.buffer.put([TelemetrySample(timestamp=t0 + timedelta(seconds=i), node_id="n1", source="ipmi",
                                              power_watts=100.0) for i in range(start, start + 2000)])
        collector.flush()
    status = collector.status()
    assert status["dropped"]["spill_cap"] > 3000
    assert status["dropped"]["spill_cap"] + status["buffered"] == 8000
    assert collector.buffer.disk_bytes <= 2**20
    collector.stop()


def test_round_age_tells_a_stalled_sampling_thread(tmp_path):
    """The supervisor's health check: the age grows while a source's read hangs, and is small after a round."""
    import threading as _threading

    release = _threading.Event()

    class Hangs:
        kind = SourceKind.NVML
        min_interval_s = 0.0

        def sample(self):
            release.wait(5)
            return []

        def available(self):
            return True, ""

        def close(self):
            pass

    settings = TelemetryConfig(sampling_interval=1, flush_interval=60, spill_dir=str(tmp_path))
    collector = Collector("n1", [Hangs()], None, settings)
    try:
        time.sleep(1.5)
        assert collector.rounds == 0 and collector.round_age_s() >= 1.5  # the first round still hangs
        release.set()
        deadline = time.monotonic() + 5
        while collector.rounds == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert collector.round_age_s() < 1.0  # within one interval of the round that finished
    finally:
        release.set()
        collector.stop()


def test_a_read_hung_in_a_driver_costs_only_its_own_source(tmp_path, caplog):
    """Regression: sources were read one after the other, so a GPU read hung in the driver stopped the node's BMC
    wall power too, round after round (and in the collector the supervisor started in its place)."""
    import threading as _threading

    release = _threading.Event()

    class Hangs(CountingSource):
        kind = SourceKind.NVML

        def sample(self):
            self.n += 1
            release.wait(10)
            return []

    hangs, counting = Hangs(), CountingSource()
    settings = TelemetryConfig(sampling_interval=1, flush_interval=60, spill_dir=str(tmp_path), read_timeout=1)
    collector = Collector("n1", [hangs, counting], None, settings, start=False)
    try:
        started = time.monotonic()
        assert len(collector.collect_once()) == 1  # the host's reading, after the 1 s deadline
        assert 1.0 <= time.monotonic() - started < 10.0  # at the deadline, not when the hang ends
        started = time.monotonic()
        assert len(collector.collect_once()) == 1 and time.monotonic() - started < 1.0  # skipped, no deadline
        assert hangs.n == 1 and caplog.text.count("did not answer within 1 s") == 1  # said once, no second read
        sources = collector.status()["sources"]  # it said "available" (the status never asked about the hang)
        assert sources["nvml"]["available"] is False and "did not return within read_timeout (1 s)" in sources[
            "nvml"]["reason"]
        assert sources["host"]["available"] is True
        release.set()
        deadline = time.monotonic() + 10
        while hangs.n < 2 and time.monotonic() < deadline:  # read again once its stuck read has returned
            collector.collect_once()
        assert hangs.n == 2 and counting.n >= 3
        assert collector.status()["sources"]["nvml"]["available"] is True
    finally:
        release.set()
        collector.stop()


class HungStore(FlakyStore):
    """Its writes hang until `release` is set (a store actor stuck in its backend), then store."""

    down = False

    def __init__(self, path) -> None:
        super().__init__(path)
        self.release = threading.Event()

    writes_started = 0

    def write(self, samples):
        self.writes_started += 1
        self.release.wait(30)
        return super().write(samples)


def test_sampling_keeps_its_interval_while_a_flush_hangs_in_the_store(tmp_path):
    """Regression: the sampling thread flushed inline (and the buffer held its lock during the write), so a hung
    store stopped sampling: rounds were lost, uncounted."""
    store = HungStore(tmp_path / "db")
    source = CountingSource()
    collector = Collector("n1", [source], store, _settings(tmp_path))
    try:
        deadline = time.monotonic() + 20  # the first flush starts at 1 s and hangs; sampling goes on meanwhile
        while collector.rounds < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert collector.rounds >= 3 and store.writes_started >= 1
    finally:
        store.release.set()
        collector.stop()
    assert len(store.window("n1", datetime.fromtimestamp(1_700_000_000, UTC),
                            datetime.fromtimestamp(1_700_000_100, UTC), 1).dropna(subset=["power_watts"])) == source.n


def test_stop_spills_memory_before_it_waits_for_a_round_still_reading(tmp_path):
    """Regression: stop() joined the sampling thread (up to interval + 30 s) before it spilled memory, and the
    supervisor ends a collector after 10 s: the samples in memory were lost, uncounted."""
    reading, release = threading.Event(), threading.Event()

    class HangsSecond(CountingSource):
        def sample(self):
            if self.n >= 1:
                reading.set()
                release.wait(30)
            return super().sample()

    settings = TelemetryConfig(sampling_interval=1, flush_interval=60, read_timeout=30, spill_dir=str(tmp_path))
    collector = Collector("n1", [HangsSecond()], FlakyStore(tmp_path / "db"), settings)
    stopping = threading.Thread(target=collector.stop)
    try:
        assert reading.wait(10)  # the first round is in memory, the second one reading
        stopping.start()

        def spilled() -> int:
            return sum(1 for path in (tmp_path / "n1").glob("segment-*.jsonl") for _ in path.open())
        deadline = time.monotonic() + 10  # spilled while the round still reads (stop waits for it after)
        while spilled() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spilled() == 1 and stopping.is_alive()
    finally:
        release.set()
        if stopping.is_alive():
            stopping.join()


class AsksTwice(SqliteStore):
    """A store actor busy when first asked whether it takes writes."""

    def __init__(self, path, read_only: bool) -> None:
        super().__init__(path)
        self.answers = [StoreUnavailable("the telemetry store did not answer: GetTimeoutError"), read_only]

    def is_read_only(self) -> bool:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_store_that_does_not_answer_yet_is_asked_again_at_the_next_flush(tmp_path):
    collector = Collector("n1", [CountingSource()], AsksTwice(tmp_path / "db", read_only=False),
                          _settings(tmp_path), start=False)
    collector.collect_once()
    assert collector.flush() == 0 and collector.status()["buffered"] == 1  # kept, not decided
    assert collector.buffer.disk_pending == 1  # on disk meanwhile: a collector killed then loses nothing
    collector.collect_once()
    assert collector.flush() == 2
    collector.stop()



def test_a_read_only_store_ends_the_buffering_once_it_answers(tmp_path):
    collector = Collector("n1", [CountingSource()], AsksTwice(tmp_path / "db", read_only=True),
                          _settings(tmp_path), start=False)
    collector.collect_once()
    collector.flush()
    assert collector.buffer is not None
    collector.flush()
    assert collector.buffer is None and collector.status()["buffered"] == 0  # gauges only
    assert collector.collect_once()
    DurableBuffer(SqliteStore(tmp_path / "db2"), tmp_path / "spill" / "n1").close()  # the directory was let go
    collector.stop()


class Recording(SqliteStore):
    """Keeps every sample written to it, in order."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.written: list[TelemetrySample] = []

    def write(self, samples):
        self.written.extend(samples)
        return super().write(samples)


def test_a_read_only_store_discards_what_was_spilled_while_unknown_and_keeps_older_segments(tmp_path, caplog):
    """Regression: segments spilled while the store had not answered stayed on disk once it turned out read-only
    (and replayed into a writable store configured later); an earlier collector's segments stay for that store."""
    spill = tmp_path / "spill" / "n1"
    earlier = DurableBuffer(FlakyStore(tmp_path / "old-db"), spill)  # an earlier, writable store that was down
    earlier.put([TelemetrySample(timestamp=datetime.fromtimestamp(1_600_000_000, UTC), node_id="n1",
                                 source=SourceKind.HOST, power_watts=90.0)])
    earlier.close()
    old = sorted(spill.glob("segment-*.jsonl"))
    collector = Collector("n1", [CountingSource()], AsksTwice(tmp_path / "db", read_only=True),
                          _settings(tmp_path), start=False)
    collector.collect_once()
    collector.flush()  # not answered: memory spills
    spilled = [path for path in sorted(spill.glob("segment-*.jsonl")) if path not in old]
    assert len(spilled) == 1
    size = spilled[0].stat().st_size
    collector.collect_once()
    with caplog.at_level(logging.INFO, logger="collectors.collector"):
        collector.flush()  # read-only
        collector.collect_once()
        collector.flush()
        collector.stop()
    assert sorted(spill.glob("segment-*.jsonl")) == old  # this collector's spill deleted, nothing spilled since
    said = [r.getMessage() for r in caplog.records if "discarded" in r.getMessage()]
    assert len(said) == 1 and f"discarded 2 sample(s) ({size} bytes spilled)" in said[0]
    assert any("1 sample(s) in 1 segment(s)" in r.getMessage() and "kept" in r.getMessage() for r in caplog.records)
    later = Recording(tmp_path / "later-db")
    DurableBuffer(later, spill).close()  # a writable store configured later gets only the earlier spill
    assert [sample.power_watts for sample in later.written] == [90.0]


class NeverAnswers(FlakyStore):
    """A store actor that is down for good: it neither answers nor takes writes."""

    def is_read_only(self) -> bool:
        raise StoreUnavailable("the telemetry store did not answer: GetTimeoutError")


def _stopped_before_the_store_answered(tmp_path, store_key: str) -> list:
    """A collector (for the store `store_key`) that spilled and stopped before the store answered; its segments."""
    spill = tmp_path / "spill" / "n1"
    before = sorted(spill.glob("segment-*.jsonl"))
    collector = Collector("n1", [CountingSource()], NeverAnswers(tmp_path / store_key), _settings(tmp_path),
                          start=False, store_key=store_key)
    collector.collect_once()
    collector.flush()
    collector.stop()
    return [path for path in sorted(spill.glob("segment-*.jsonl")) if path not in before]


def test_a_read_only_store_discards_what_an_earlier_collector_spilled_for_it_before_it_answered(tmp_path):
    """Regression: a collector that stopped before the store answered left its spill to the next collector, which
    took it for an earlier store's and kept it for ever once the store turned out read-only; a spill for another
    store still stays."""
    other = _stopped_before_the_store_answered(tmp_path, "influx")
    same = _stopped_before_the_store_answered(tmp_path, "prometheus")
    assert len(other) == len(same) == 1
    collector = Collector("n1", [CountingSource()], AsksTwice(tmp_path / "db", read_only=True), _settings(tmp_path),
                          start=False, store_key="prometheus")
    collector.flush()
    collector.flush()  # read-only
    assert collector.buffer is None
    assert sorted((tmp_path / "spill" / "n1").glob("segment-*.jsonl")) == other
    collector.stop()


class DownButAnswers(AsksTwice):
    """A store actor that answers whether it takes writes, while its backend is down."""

    def write(self, samples):
        raise StoreUnavailable("down for maintenance")


def test_a_writable_answer_clears_the_pending_mark_of_what_was_spilled_meanwhile(tmp_path):
    collector = Collector("n1", [CountingSource()], DownButAnswers(tmp_path / "db", read_only=False),
                          _settings(tmp_path), start=False, store_key="influx")
    spill = tmp_path / "spill" / "n1"
    collector.collect_once()
    collector.flush()  # not answered: spilled, pending for this store
    assert [".pending-" in path.name for path in spill.glob("segment-*.jsonl")] == [True]
    collector.flush()  # writable (the write fails): kept, for a writable store
    assert [path.name for path in spill.glob("segment-*.jsonl")] == ["segment-000000000001.jsonl"]
    collector.stop()


def test_the_collector_actor_starts_while_the_store_actor_is_busy(monkeypatch, tmp_path):
    """Regression: the actor asked the store actor whether it takes writes in its constructor, so a busy or
    restarting store actor failed the collector's start."""

    def busy():
        raise StoreUnavailable("the telemetry store did not answer: GetTimeoutError")

    monkeypatch.setattr(collector_actor, "RemoteStore", lambda: SimpleNamespace(is_read_only=busy))
    config = CollectorConfig(telemetry=TelemetryConfig(spill_dir=str(tmp_path)))
    actor = collector_actor.CollectorActor(config.model_dump(mode="json"), ["host"], None)
    try:
        assert actor.flush() == 0  # not decided yet: it buffers meanwhile
    finally:
        actor.stop()


def test_a_status_once_stopping_probes_no_source(tmp_path):
    """A status probe beside the stop could reopen a source the stop had just closed (NVML, a BMC session)."""
    class Probed:
        kind, label = SourceKind.IPMI, "ipmi (bmc)"

        def __init__(self) -> None:
            self.probes = 0

        def available(self) -> tuple[bool, str]:
            self.probes += 1
            return True, ""

        def sample(self) -> list:
            return []

        def close(self) -> None:
            pass

    source = Probed()
    collector = Collector("n1", [source], FlakyStore(tmp_path / "db"), _settings(tmp_path), start=False)
    assert collector.status()["sources"]["ipmi (bmc)"] == {"available": True, "reason": ""} and source.probes == 1
    collector.stop()
    assert collector.status()["sources"]["ipmi (bmc)"] == {"available": False, "reason": "the collector is stopping"}
    assert source.probes == 1



def test_a_stop_closes_the_sources_only_after_a_status_probe_under_way(tmp_path):
    """The probe ran beside the stop and could reopen a source closed under it (an NVML init, a BMC session)."""
    import threading

    events: list[str] = []
    probing, release = threading.Event(), threading.Event()

    class Slow:
        kind, label = SourceKind.NPU, "npu (npu-smi)"

        def available(self) -> tuple[bool, str]:
            probing.set()
            release.wait(5)
            events.append("probed")
            return True, ""

        def sample(self) -> list:
            return []

        def close(self) -> None:
            events.append("closed")

    collector = Collector("n1", [Slow()], FlakyStore(tmp_path / "db"), _settings(tmp_path), start=False)
    status = threading.Thread(target=collector.status)
    status.start()
    assert probing.wait(5)
    stop = threading.Thread(target=collector.stop)
    stop.start()
    stop.join(0.3)
    assert stop.is_alive() and events == []  # waiting for the probe
    release.set()
    stop.join(5)
    status.join(5)
    assert events == ["probed", "closed"]


def test_a_source_without_a_refresh_interval_is_read_every_round(tmp_path):
    """A source that does not say how often its device refreshes (no min_interval_s) is read every round; the
    collector built with one once failed every round on the missing attribute."""
    class Plain:
        kind, label = SourceKind.HOST, "host"

        def available(self) -> tuple[bool, str]:
            return True, ""

        def sample(self) -> list:
            return [TelemetrySample(timestamp=datetime.now(UTC), node_id="n1", source=SourceKind.HOST,
                                    device_id="cpu", power_watts=100.0)]

        def close(self) -> None:
            pass

    collector = Collector("n1", [Plain()], FlakyStore(tmp_path / "db"), _settings(tmp_path), start=False)
    assert [len(collector.collect_once()) for _ in range(2)] == [1, 1]
    collector.stop()
