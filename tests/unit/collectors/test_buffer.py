"""DurableBuffer: in order, exactly once, through store outages, overflow and process restarts."""

from __future__ import annotations

import builtins
import errno
import logging
import os
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import collectors.buffer as buffer_module
from collectors.buffer import DurableBuffer
from core.stores.base import StoreUnavailable, TelemetryStore, WriteRefused
from core.stores.sqlite import SqliteStore
from core.telemetry import TelemetrySample
from tests.paths import REPO_ROOT

T0 = datetime(2025, 3, 1, tzinfo=UTC)
REPO = REPO_ROOT


def make_samples(count: int, start: int = 0, node: str = "n1") -> list[TelemetrySample]:
    return [TelemetrySample(timestamp=T0 + timedelta(seconds=i), node_id=node, source="ipmi", power_watts=100.0 + i)
            for i in range(start, start + count)]


class FlakyStore(TelemetryStore):
    """Fails its first `failures` writes, then records every batch it is given."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[TelemetrySample]] = []
        self.calls = 0

    @property
    def stored(self) -> list[TelemetrySample]:
        return [s for batch in self.batches for s in batch]

    def write(self, samples):
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("connection refused")
        self.batches.append(list(samples))
        return len(samples)

    def window(self, node_id, start, end, step_s):
        raise NotImplementedError

    def latest(self, node_id=None):
        return []

    def nodes(self):
        return []


def segments(spill_dir: Path) -> list[Path]:
    return sorted(spill_dir.glob("segment-*.jsonl"))


def test_store_failing_then_recovering_gets_every_sample_once_in_order(tmp_path):
    store = FlakyStore(failures=3)
    buffer = DurableBuffer(store, tmp_path / "spill", max_memory=1000)
    accepted = []
    for batch in range(5):
        new = make_samples(7, start=batch * 7)
        accepted += new
        buffer.put(new)
        written = buffer.flush()
        assert written == (0 if batch < 3 else len(accepted) if batch == 3 else 7)
    assert store.stored == accepted
    assert buffer.pending == 0 and buffer.last_error is None
    assert segments(tmp_path / "spill") == []


def test_failed_flush_spills_memory_to_fsynced_segments(tmp_path):
    store = FlakyStore(failures=2)
    buffer = DurableBuffer(store, tmp_path, max_memory=1000)
    buffer.put(make_samples(5))
    assert buffer.flush() == 0
    assert "connection refused" in buffer.last_error
    assert buffer.memory_pending == 0 and buffer.disk_pending == 5
    buffer.put(make_samples(5, start=5))
    buffer.flush()
    files = segments(tmp_path)
    assert len(files) == 1, "appends go to the open segment"
    assert sum(1 for _ in files[0].open()) == 10
    assert buffer.flush() == 10
    assert store.stored == make_samples(10)


def test_overflow_spills_to_disk_and_replays_disk_before_memory(tmp_path):
    store = FlakyStore()
    buffer = DurableBuffer(store, tmp_path, max_memory=10)
    for start in range(0, 25, 5):
        buffer.put(make_samples(5, start=start))
    assert buffer.memory_pending <= 10
    assert buffer.disk_pending >= 15 and segments(tmp_path)
    assert buffer.pending == 25
    assert buffer.flush() == 25
    assert store.stored == make_samples(25)
    assert segments(tmp_path) == []


def test_segment_is_deleted_only_after_its_write_succeeded(tmp_path):
    buffer = DurableBuffer(FlakyStore(failures=1), tmp_path, max_memory=4)
    buffer.put(make_samples(5))
    buffer.put(make_samples(5, start=5))
    buffer.flush()  # fails: everything is on disk, in segments of at most 4+1
    files = segments(tmp_path)
    assert len(files) == 2

    class FailSecond(FlakyStore):
        def write(self, samples):
            if self.batches:
                raise StoreUnavailable("down again")
            return super().write(samples)

    store = FailSecond()
    buffer.store = store
    buffer.put(make_samples(2, start=10))
    assert buffer.flush() == 5
    assert not files[0].exists() and files[1].exists()
    store.write = FlakyStore.write.__get__(store)
    assert buffer.flush() == 7
    assert store.stored == make_samples(12)


def test_restart_finds_old_segments_and_replays_them_first(tmp_path):
    first = DurableBuffer(FlakyStore(failures=99), tmp_path / "spill", max_memory=100)
    first.put(make_samples(30))
    first.flush()
    first.put(make_samples(10, start=30))
    first.close()  # store still down: memory spills too
    sqlite = SqliteStore(tmp_path / "db")
    second = DurableBuffer(sqlite, tmp_path / "spill", max_memory=100)
    assert second.pending == 40
    second.put(make_samples(5, start=40))
    assert second.flush() == 45
    frame = sqlite.window("n1", T0, T0 + timedelta(seconds=45), 1)
    assert frame["power_watts"].tolist() == [100.0 + i for i in range(45)]
    second.close()
    sqlite.close()


def test_hard_crash_keeps_spilled_samples_and_releases_the_directory(tmp_path):
    child = textwrap.dedent("""
        import os, sys
        from datetime import UTC, datetime, timedelta
        from collectors.buffer import DurableBuffer
        from core.telemetry import TelemetrySample
        class Down:
            read_only = False
            def write(self, samples):
                raise ConnectionError("store down")
        buffer = DurableBuffer(Down(), sys.argv[1], max_memory=50)
        t0 = datetime(2025, 3, 1, tzinfo=UTC)
        buffer.put(TelemetrySample(timestamp=t0 + timedelta(seconds=i), node_id="n1", source="ipmi",
                                   power_watts=100.0 + i) for i in range(120))
        buffer.flush()
        os._exit(9)  # no close(), no atexit: a crash
    """)
    result = subprocess.run([sys.executable, "-c", child, str(tmp_path / "spill")], cwd=REPO, timeout=60,
                            capture_output=True, text=True)
    assert result.returncode == 9, result.stderr
    store = FlakyStore()
    buffer = DurableBuffer(store, tmp_path / "spill")
    assert buffer.flush() == 120
    assert store.stored == make_samples(120)


def test_replayed_duplicate_is_harmless_with_the_sqlite_store(tmp_path):
    class LostAck(SqliteStore):
        """Commits the batch, then fails as if the acknowledgement was lost."""

        lost = 1

        def write(self, samples):
            written = super().write(samples)
            if self.lost:
                self.lost -= 1
                raise StoreUnavailable("timeout after commit")
            return written

    store = LostAck(tmp_path / "db")
    buffer = DurableBuffer(store, tmp_path / "spill")
    buffer.put(make_samples(50))
    assert buffer.flush() == 0
    assert buffer.flush() == 50
    rows = store._conn.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]
    assert rows == 50
    store.close()


def test_torn_last_line_is_skipped_with_an_error(tmp_path, caplog):
    buffer = DurableBuffer(FlakyStore(failures=2), tmp_path, max_memory=100)
    buffer.put(make_samples(3))
    buffer.flush()
    buffer.close()  # fails again: still on disk
    with segments(tmp_path)[0].open("a") as handle:
        handle.write('{"timestamp": "2025-03-01T00:00:03Z", "node_id": "n1", "sour')
    store = FlakyStore()
    with caplog.at_level(logging.ERROR, logger="collectors.buffer"):
        reopened = DurableBuffer(store, tmp_path)
        assert reopened.flush() == 3
    assert store.stored == make_samples(3)
    assert "line 4 is not a sample" in caplog.text


def test_concurrent_puts_during_flushes_lose_nothing(tmp_path):
    store = FlakyStore(failures=5)
    buffer = DurableBuffer(store, tmp_path, max_memory=20)

    def producer(node: str) -> None:
        for start in range(0, 200, 10):
            buffer.put(make_samples(10, start=start, node=node))

    threads = [threading.Thread(target=producer, args=(f"n{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        buffer.flush()
    for thread in threads:
        thread.join()
    while buffer.pending:
        buffer.flush()
    for node in ("n0", "n1", "n2"):
        assert [s for s in store.stored if s.node_id == node] == make_samples(200, node=node)


def test_refuses_read_only_stores_and_a_directory_in_use(tmp_path):
    class ReadOnly(FlakyStore):
        read_only = True

    with pytest.raises(ValueError, match="read-only"):
        DurableBuffer(ReadOnly(), tmp_path)
    first = DurableBuffer(FlakyStore(), tmp_path)
    with pytest.raises(RuntimeError, match="in use"):
        DurableBuffer(FlakyStore(), tmp_path)
    first.close()
    DurableBuffer(FlakyStore(), tmp_path).close()


LINE_BYTES = len(make_samples(1)[0].model_dump_json()) + 1  # every make_samples line has this size


def test_spill_cap_drops_the_oldest_spilled_samples_first_and_counts_them(tmp_path, caplog):
    store = FlakyStore(failures=99)
    cap = 80 * LINE_BYTES  # segments roll over at 10 samples
    buffer = DurableBuffer(store, tmp_path, max_memory=1000, max_spill_bytes=cap)
    with caplog.at_level(logging.WARNING, logger="collectors.metrics"):
        for start in range(0, 200, 20):
            buffer.put(make_samples(20, start=start))
            buffer.flush()  # the store is down: every batch spills
    assert buffer.disk_bytes <= cap
    assert buffer.drops.counts == {"spill_cap": 200 - buffer.pending}
    assert buffer.pending >= 60  # whole oldest segments went, never more than needed
    assert "dropped, reason spill_cap" in caplog.text
    store.failures = 0
    kept = buffer.pending
    assert buffer.flush() == kept
    assert store.stored == make_samples(kept, start=200 - kept)  # the newest, in order


def test_a_batch_larger_than_the_cap_keeps_its_newest_samples(tmp_path):
    buffer = DurableBuffer(FlakyStore(failures=1), tmp_path, max_memory=1000, max_spill_bytes=10 * LINE_BYTES)
    buffer.put(make_samples(25))
    buffer.flush()
    assert buffer.drops.counts == {"spill_cap": 15} and buffer.pending == 10
    assert buffer.flush() == 10
    assert buffer.store.stored == make_samples(10, start=15)


def test_a_smaller_cap_after_a_restart_applies_at_once(tmp_path):
    first = DurableBuffer(FlakyStore(failures=99), tmp_path, max_memory=10)
    for start in range(0, 100, 10):
        first.put(make_samples(10, start=start))
        first.flush()
    first.close()
    store = FlakyStore()
    second = DurableBuffer(store, tmp_path, max_memory=10, max_spill_bytes=40 * LINE_BYTES)
    assert second.drops.counts == {"spill_cap": 60} and second.pending == 40
    assert second.flush() == 40 and store.stored == make_samples(40, start=60)


def test_without_a_cap_nothing_is_dropped(tmp_path):
    buffer = DurableBuffer(FlakyStore(failures=99), tmp_path, max_memory=10)
    for start in range(0, 500, 50):
        buffer.put(make_samples(50, start=start))
        buffer.flush()
    assert buffer.pending == 500 and buffer.drops.counts == {}


def test_files_set_aside_count_under_the_cap_and_go_before_any_segment(tmp_path, monkeypatch):
    """Regression: `*.unreadable` files were neither counted under the cap nor deleted, so a spill directory the cap
    bounds could fill its volume with them. They go first, oldest first, and no accepted sample goes for them."""
    line = make_samples(1)[0].model_dump_json() + "\n"
    older, newer = (tmp_path / f"segment-00000000000{n}.jsonl.unreadable" for n in (1, 2))
    older.write_text(line * 30)
    newer.write_text(line * 5)
    os.utime(older, (1_000_000, 1_000_000))
    store = FlakyStore(failures=99)
    buffer = DurableBuffer(store, tmp_path, max_memory=1000, max_spill_bytes=40 * LINE_BYTES)
    buffer.put(make_samples(20))
    buffer.flush()
    assert list(tmp_path.glob("*.unreadable")) == [newer]  # 30 + 5 + 20 did not fit: the older went
    buffer.put(make_samples(20, start=20))
    buffer.flush()
    assert not list(tmp_path.glob("*.unreadable")) and buffer.drops.counts == {} and buffer.pending == 40

    reader, failed = buffer_module._read_segment, []

    def failing_once(path):
        if not failed:
            failed.append(path)
            raise FileNotFoundError(path)
        return reader(path)

    monkeypatch.setattr(buffer_module, "_read_segment", failing_once)
    store.failures = 0
    assert buffer.flush() == 20 and buffer.drops.counts == {"unreadable": 20}  # set aside during this run
    store.failures = 99
    buffer.put(make_samples(30, start=40))
    buffer.flush()
    assert not list(tmp_path.glob("*.unreadable")) and buffer.pending == 30
    assert buffer.drops.counts == {"unreadable": 20}
    assert sum(path.stat().st_size for path in tmp_path.glob("segment-*")) <= 40 * LINE_BYTES


def test_a_flush_whose_spill_does_not_go_ahead_deletes_no_file_set_aside(tmp_path):
    """Review: the files set aside were deleted before a flush found its memory did not fit beside the segments it
    was about to write; it then wrote memory directly, and the deletion gained nothing."""
    line = make_samples(1)[0].model_dump_json() + "\n"
    aside = tmp_path / "segment-000000000009.jsonl.unreadable"
    aside.write_text(line * 10)
    store = FlakyStore(failures=1)
    buffer = DurableBuffer(store, tmp_path, max_memory=1000, max_spill_bytes=40 * LINE_BYTES)
    buffer.put(make_samples(30))
    buffer.flush()  # the store is down: 30 spilled beside the 10 set aside
    assert aside.exists() and buffer.pending == 30
    buffer.put(make_samples(15, start=30))  # 30 + 15 do not fit: this flush writes memory directly, no spill
    assert buffer.flush() == 45 and aside.exists()
    assert store.stored == make_samples(45) and buffer.drops.counts == {}


def test_unreadable_lines_are_counted_once_when_their_segment_is_done(tmp_path):
    buffer = DurableBuffer(FlakyStore(failures=99), tmp_path, max_memory=100)
    buffer.put(make_samples(3))
    buffer.close()
    with segments(tmp_path)[0].open("a") as handle:
        handle.write("not json\n")
    store = FlakyStore(failures=1)
    reopened = DurableBuffer(store, tmp_path)
    assert reopened.flush() == 0 and reopened.drops.counts == {}  # the retry reads the segment again
    assert reopened.flush() == 3 and reopened.drops.counts == {"unreadable": 1}


def test_a_line_that_is_not_utf8_is_skipped_not_a_segment_retried_forever(tmp_path):
    """A torn write can leave bytes that are not text: reading the segment as text failed every flush, and the
    node's backlog never reached the store."""
    buffer = DurableBuffer(FlakyStore(failures=99), tmp_path, max_memory=100)
    buffer.put(make_samples(3))
    buffer.close()
    with segments(tmp_path)[0].open("ab") as handle:
        handle.write(b'{"node_id": "\xff\xfe"}\n')
    store = FlakyStore(failures=0)
    reopened = DurableBuffer(store, tmp_path)
    assert reopened.flush() == 3 and reopened.drops.counts == {"unreadable": 1} and reopened.pending == 0


def test_samples_the_store_refuses_for_good_are_counted_and_do_not_block_the_rest(tmp_path):
    """InfluxDB refuses points older than its bucket's retention (422) after a long outage: the oldest segment was
    retried first on every flush, so nothing newer ever reached the store."""

    class RefusesOldest(FlakyStore):
        def write(self, samples):
            if samples[0].timestamp < T0 + timedelta(seconds=5):
                raise WriteRefused("InfluxDB refused 6 of 6 line(s): HTTP 422: points beyond retention", 6, 0)
            return super().write(samples)

    down = DurableBuffer(FlakyStore(failures=99), tmp_path, max_memory=5)
    down.put(make_samples(6))  # the oldest segment
    down.put(make_samples(6, start=6))  # the next one
    down.close()
    assert len(segments(tmp_path)) == 2
    store = RefusesOldest()
    buffer = DurableBuffer(store, tmp_path, max_memory=5)
    buffer.put(make_samples(3, start=12))
    assert buffer.flush() == 9
    assert [s.power_watts for s in store.stored] == [100.0 + i for i in range(6, 15)]
    assert buffer.pending == 0 and buffer.drops.counts == {"refused": 6} and buffer.last_error is None


def test_memory_is_bounded_while_the_spill_directory_cannot_be_written(tmp_path, monkeypatch):
    """Disk full and the store down: memory grew without bound and every put serialised the whole backlog again,
    until the process ran out of memory and lost it all."""
    import collectors.buffer as buffer_module

    buffer = DurableBuffer(FlakyStore(failures=99), tmp_path, max_memory=5)
    attempts = []

    def disk_full(path, mode="r", *args, **kwargs):
        attempts.append(path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(buffer_module, "open", disk_full, raising=False)
    for start in range(0, 200, 10):
        buffer.put(make_samples(10, start=start))
    assert len(attempts) == 1  # one try, then a pause before the disk is tried again
    assert buffer.memory_pending == 50 and buffer.drops.counts == {"spill_failed": 150}
    monkeypatch.delattr(buffer_module, "open")
    buffer.close()  # the disk is back: close spills what memory holds, whatever the pause
    store = FlakyStore()
    reopened = DurableBuffer(store, tmp_path)
    assert reopened.flush() == 50
    assert [s.power_watts for s in store.stored] == [100.0 + i for i in range(150, 200)]


def test_a_partly_refused_write_counts_only_what_was_refused(tmp_path):
    """InfluxDB took some batches of a write and refused others: the taken ones are written, not dropped."""

    class RefusesSome(FlakyStore):
        def write(self, samples):
            raise WriteRefused("InfluxDB refused 2 of 7 line(s): HTTP 422", refused=2, written=5)

    buffer = DurableBuffer(RefusesSome(), tmp_path, max_memory=100)
    buffer.put(make_samples(7))
    assert buffer.flush() == 5 and buffer.drops.counts == {"refused": 2} and buffer.pending == 0


def test_closing_near_the_cap_deletes_no_segment_before_the_store_had_its_chance(tmp_path):
    """close() spills memory first (a kill during the last write then loses nothing), but not at the cost of the
    oldest segments: with the store back, everything on disk and in memory reaches it."""
    down = DurableBuffer(FlakyStore(failures=99), tmp_path, max_memory=100, max_spill_bytes=8 * 600)
    down.put(make_samples(20))
    down.close()
    on_disk = len(make_samples(20))
    store = FlakyStore()
    buffer = DurableBuffer(store, tmp_path, max_memory=100, max_spill_bytes=8 * 600)
    kept = buffer.disk_pending
    buffer.put(make_samples(8, start=20))
    buffer.close()
    assert len(store.stored) == kept + 8 and buffer.drops.counts.get("spill_cap", 0) == on_disk - kept


def test_a_segment_that_cannot_be_read_is_set_aside_and_the_rest_still_flows(tmp_path, monkeypatch):
    """Regression: a spilled segment deleted by hand (or failing with EIO) failed every later flush, so nothing
    reached the store again until the actor restarted."""
    from collectors import buffer as buffer_module

    store = FlakyStore(failures=1)
    buffer = DurableBuffer(store, tmp_path, max_memory=4)
    for start in (0, 5, 10):
        buffer.put(make_samples(5, start=start))
    buffer.flush()  # fails: three segments on disk
    first, second, third = segments(tmp_path)
    first.unlink()  # an operator freeing disk
    reader = buffer_module._read_segment

    def failing(path):
        if path == second:
            raise OSError(5, "Input/output error")
        return reader(path)

    monkeypatch.setattr(buffer_module, "_read_segment", failing)
    assert buffer.flush() == 0 and buffer.flush() == 0  # a passing error keeps it: tried again at the next flushes
    assert second.exists() and buffer.drops.counts == {"unreadable": 5}  # the deleted one is set aside at once
    assert buffer.flush() == 5  # the third failure in a row sets it aside
    assert store.stored == make_samples(5, start=10) and buffer.pending == 0
    assert buffer.drops.counts == {"unreadable": 10}
    assert second.with_name(second.name + ".unreadable").exists()  # kept for the operator, out of the replay


def test_an_append_that_fails_half_way_leaves_no_torn_line(tmp_path, monkeypatch):
    """Regression: a spill that failed mid-write (disk full) left a partial line at the end of the open segment; the
    next spill appended to it, fusing the two lines (a good sample became unreadable) and the size count drifted."""
    import builtins

    import collectors.buffer as buffer_module

    class Tears:
        """A segment file whose appends stop half-way, as on a full disk (reads as usual)."""

        def __new__(cls, path, mode="r"):
            return super().__new__(cls) if "a" in mode else builtins.open(path, mode)

        def __init__(self, path, mode):
            self.handle = builtins.open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[:len(data) // 2])
            self.handle.flush()
            raise OSError(28, "No space left on device")

    buffer = DurableBuffer(FlakyStore(failures=99), tmp_path, max_memory=100)
    buffer.put(make_samples(3))
    buffer.flush()  # the store is down: on disk
    monkeypatch.setattr(buffer_module, "open", Tears, raising=False)
    buffer.put(make_samples(3, start=3))
    buffer.flush()  # the spill fails half-way: memory keeps the samples
    monkeypatch.delattr(buffer_module, "open")
    assert buffer.disk_bytes == sum(path.stat().st_size for path in segments(tmp_path))
    buffer.close()  # the disk is back: memory spills
    store = FlakyStore()
    assert DurableBuffer(store, tmp_path).flush() == 6 and store.stored == make_samples(6)


def test_release_deletes_only_what_this_buffer_spilled_and_held(tmp_path):
    """Regression: a buffer let go for a read-only store left the segments it spilled meanwhile on disk, to be
    replayed into a writable store configured later; an earlier buffer's segments still stay for that store."""
    earlier = DurableBuffer(FlakyStore(failures=99), tmp_path / "spill", max_memory=100)
    earlier.put(make_samples(3))
    earlier.close()  # store down: spilled, for the next buffer
    old = segments(tmp_path / "spill")
    buffer = DurableBuffer(FlakyStore(), tmp_path / "spill", max_memory=4)
    buffer.put(make_samples(5, start=3))  # past max_memory: spills
    buffer.spill()
    buffer.put(make_samples(2, start=8))  # memory only
    spilled = sum(path.stat().st_size for path in segments(tmp_path / "spill") if path not in old)
    released = buffer.release()
    assert (released.discarded_samples, released.discarded_bytes) == (7, spilled)
    assert (released.kept_samples, released.kept_segments) == (3, len(old))
    assert segments(tmp_path / "spill") == old
    store = FlakyStore()
    DurableBuffer(store, tmp_path / "spill").close()  # the directory was let go; only the earlier spill replays
    assert store.stored == make_samples(3)


def test_release_after_close_leaves_the_directory_alone(tmp_path):
    """A buffer closed first (a stop racing the store's answer) let the directory go: a later owner may hold it."""
    buffer = DurableBuffer(FlakyStore(failures=99), tmp_path / "spill", max_memory=100)
    buffer.put(make_samples(3))
    buffer.close()
    kept = segments(tmp_path / "spill")
    assert buffer.release().discarded_samples == 0
    assert segments(tmp_path / "spill") == kept


def _spill_and_stop(spill_dir: Path, samples: list[TelemetrySample], **marks) -> list[Path]:
    """An earlier collector's buffer that spilled `samples` and stopped with the store down; its new segments."""
    before = segments(spill_dir)
    buffer = DurableBuffer(FlakyStore(failures=99), spill_dir, max_memory=100, **marks)
    buffer.put(samples)
    buffer.spill()
    buffer.close()
    return [path for path in segments(spill_dir) if path not in before]


def test_release_deletes_what_an_earlier_buffer_spilled_for_the_same_store_before_it_answered(tmp_path):
    """Regression: a collector that stopped before the store answered left its segments to the next one, which took
    them for an earlier store's and kept them for ever once this store turned out read-only. Segments pending for
    another store, confirmed for a writable one, or from before store keys (no mark) still stay."""
    spill = tmp_path / "spill"
    legacy = _spill_and_stop(spill, make_samples(1))
    other = _spill_and_stop(spill, make_samples(2, start=1), store_key="influx", confirmed=False)
    same = _spill_and_stop(spill, make_samples(3, start=3), store_key="prometheus", confirmed=False)
    assert [path.name.count(".pending-") for path in legacy + other + same] == [0, 1, 1]
    size = sum(path.stat().st_size for path in same)
    released = DurableBuffer(FlakyStore(), spill, store_key="prometheus", confirmed=False).release()
    assert (released.discarded_samples, released.discarded_bytes) == (3, size)
    assert (released.kept_samples, released.kept_segments) == (3, 2)
    assert segments(spill) == legacy + other
    store = FlakyStore()
    DurableBuffer(store, spill).close()  # a writable store configured later gets the other two
    assert store.stored == make_samples(3)


def test_segments_confirmed_for_a_writable_store_stay_when_a_store_under_that_key_turns_read_only(tmp_path):
    """Once the store said it takes writes, what was spilled for it while that was unknown is meant for a writable
    store: it loses its pending mark (also an earlier buffer's), and no later release under the key deletes it."""
    spill = tmp_path / "spill"
    _spill_and_stop(spill, make_samples(2), store_key="k", confirmed=False)
    buffer = DurableBuffer(FlakyStore(failures=99), spill, max_memory=100, store_key="k", confirmed=False)
    buffer.put(make_samples(3, start=2))
    buffer.spill()
    assert all(".pending-" in path.name for path in segments(spill))
    buffer.confirm_writable()
    buffer.put(make_samples(1, start=5))
    buffer.close()  # the store is down: everything stays on disk, the last sample in the renamed open segment
    assert [path.name for path in segments(spill)] == ["segment-000000000001.jsonl", "segment-000000000002.jsonl"]
    released = DurableBuffer(FlakyStore(), spill, store_key="k", confirmed=False).release()
    assert (released.discarded_samples, released.kept_samples) == (0, 6)
    store = FlakyStore()
    DurableBuffer(store, spill).close()
    assert store.stored == make_samples(6)


def test_a_pending_segment_never_overwrites_one_an_older_version_spilled_under_its_number(tmp_path):
    """An older version, blind to pending segments, numbers its own from 1 again: confirming leaves the pending one
    as it is rather than renaming it over the other."""
    spill = tmp_path / "spill"
    pending = _spill_and_stop(spill, make_samples(2), store_key="k", confirmed=False)
    (spill / "segment-000000000001.jsonl").write_text("".join(s.model_dump_json() + "\n" for s in make_samples(
        1, start=2)))
    store = FlakyStore()
    buffer = DurableBuffer(store, spill, store_key="k", confirmed=False)
    buffer.confirm_writable()
    assert pending[0].exists()
    assert buffer.flush() == 3 and sorted(store.stored, key=lambda s: s.timestamp) == make_samples(3)
    buffer.close()


def test_before_the_store_confirms_writes_the_cap_drops_the_newest_samples_not_older_segments(tmp_path, caplog):
    """Regression: at the cap, a buffer whose store had not said yet whether it takes writes deleted the oldest
    segments (an earlier collector's, maybe for a writable store) to make room for samples that are discarded if
    the store is read-only. Once the store takes writes, the oldest go first again."""
    cap = 80 * LINE_BYTES  # segments roll over at 10 samples
    spill = tmp_path / "spill"
    earlier = DurableBuffer(FlakyStore(failures=99), spill, max_memory=10, max_spill_bytes=cap)
    for start in range(0, 60, 20):
        earlier.put(make_samples(20, start=start))  # past max_memory: spills
    earlier.close()
    old = segments(spill)
    store = FlakyStore(failures=99)
    buffer = DurableBuffer(store, spill, max_memory=10, max_spill_bytes=cap, confirmed=False)
    with caplog.at_level(logging.WARNING, logger="collectors.metrics"):
        buffer.put(make_samples(20, start=60))  # fits
        buffer.put(make_samples(15, start=80))  # does not fit: the newest go
    assert set(old) <= set(segments(spill)) and buffer.pending == 80
    assert buffer.drops.counts == {"spill_cap": 15} and "not known yet whether the store takes writes" in caplog.text
    buffer.confirm_writable()
    buffer.put(make_samples(20, start=95))  # the oldest segment goes
    assert old[0] not in segments(spill) and buffer.drops.counts == {"spill_cap": 35}
    store.failures = 0
    assert buffer.flush() == 80
    assert store.stored == make_samples(60, start=20) + make_samples(20, start=95)


def test_before_the_store_confirms_writes_the_spill_keeps_its_oldest_samples_that_fit(tmp_path):
    """A spill that only partly fits keeps the samples accepted first, in order (the ones after them wait for
    nothing: they are dropped, and counted)."""
    store = FlakyStore(failures=99)
    buffer = DurableBuffer(store, tmp_path, max_memory=10, max_spill_bytes=16 * LINE_BYTES, confirmed=False)
    buffer.put(make_samples(25))
    assert buffer.drops.counts == {"spill_cap": 9} and buffer.pending == 16
    store.failures = 0
    assert buffer.flush() == 16 and store.stored == make_samples(16)


def _read_only(path, *args, **kwargs):
    """Path.unlink on a read-only spill volume."""
    raise OSError(errno.EROFS, "Read-only file system", str(path))


def _read_only_open(path, mode="r", *args, **kwargs):
    """open() on a read-only spill volume: reads only."""
    if mode not in ("r", "rb"):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    return builtins.open(path, mode, *args, **kwargs)


def test_a_segment_the_store_has_but_a_read_only_disk_cannot_delete_is_written_once_and_memory_flows(
        tmp_path, monkeypatch, caplog):
    """Regression: on a read-only spill volume the delete after a segment's write raised: the flush stopped there,
    wrote the same segment again at every later flush, and newer samples never reached the store (memory filled up
    and was dropped as `spill_failed`)."""
    store = FlakyStore(failures=1)
    buffer = DurableBuffer(store, tmp_path, max_memory=100)
    buffer.put(make_samples(5))
    buffer.flush()  # the store is down: on disk
    monkeypatch.setattr(Path, "unlink", _read_only)
    monkeypatch.setattr(buffer_module, "open", _read_only_open, raising=False)
    with caplog.at_level(logging.ERROR, logger="collectors.buffer"):
        for start in range(5, 50, 5):
            buffer.put(make_samples(5, start=start))
            assert buffer.flush() == (10 if start == 5 else 5)  # the segment once, then memory written directly
    assert store.stored == make_samples(50)
    assert buffer.pending == 0 and buffer.drops.counts == {} and buffer.last_error is None
    assert caplog.text.count("cannot delete") == 1
    monkeypatch.undo()  # the volume is writable again: the next flush deletes what the store has
    assert buffer.flush() == 0 and segments(tmp_path) == []


def test_a_segment_left_on_disk_after_its_write_is_never_appended_to_again(tmp_path, monkeypatch):
    """A directory whose files can be written but not deleted (`chattr +a`): the next spill reused the number of
    the segment the store already had and appended to it, so its samples were written again."""
    store = FlakyStore()
    buffer = DurableBuffer(store, tmp_path, max_memory=100)
    monkeypatch.setattr(Path, "unlink", _read_only)
    for start in range(0, 30, 10):
        buffer.put(make_samples(10, start=start))
        assert buffer.flush() == 10
    assert store.stored == make_samples(30) and len(segments(tmp_path)) == 3


def test_puts_never_raise_and_memory_stays_bounded_when_the_cap_cannot_delete_a_segment(tmp_path, monkeypatch):
    """Regression: at the cap on a read-only volume, deleting the oldest segment raised out of put() (the
    collector's round was cut short) before memory was limited, so memory grew without bound; flush() raised too."""
    store = FlakyStore(failures=99)
    buffer = DurableBuffer(store, tmp_path, max_memory=10, max_spill_bytes=40 * LINE_BYTES)
    for start in range(0, 40, 10):
        buffer.put(make_samples(10, start=start))
        buffer.flush()  # the store is down: on disk, up to the cap
    deletes = []
    unlink = Path.unlink

    def read_only_after_one_delete(path, **kwargs):
        deletes.append(path)
        return unlink(path, **kwargs) if len(deletes) == 1 else _read_only(path)

    monkeypatch.setattr(Path, "unlink", read_only_after_one_delete)
    for start in range(40, 370, 11):
        buffer.put(make_samples(11, start=start))  # the first needs two segments' room: one goes, then the disk fails
    assert buffer.flush() == 0
    assert len(deletes) == 2  # one failed try, then a pause before the disk is tried again
    assert buffer.disk_pending == 30 and buffer.memory_pending == 100
    assert buffer.drops.counts == {"spill_cap": 10, "spill_failed": 230}
    store.failures = 0
    assert buffer.flush() == 130  # the segments, then memory written directly
    assert store.stored == make_samples(30, start=10) + make_samples(100, start=270)


def test_a_smaller_cap_that_cannot_delete_old_segments_at_start_keeps_them(tmp_path, monkeypatch):
    """A buffer that starts on a volume where the cap cannot delete the oldest segments starts anyway; they stay."""
    earlier = DurableBuffer(FlakyStore(failures=99), tmp_path, max_memory=10)
    for start in range(0, 30, 10):
        earlier.put(make_samples(10, start=start))
        earlier.flush()
    earlier.close()
    monkeypatch.setattr(Path, "unlink", _read_only)
    store = FlakyStore()
    buffer = DurableBuffer(store, tmp_path, max_memory=10, max_spill_bytes=10 * LINE_BYTES)
    assert buffer.pending == 30 and buffer.drops.counts == {}
    assert buffer.flush() == 30 and store.stored == make_samples(30)


def test_a_spill_directory_on_a_read_only_volume_leaves_the_buffer_memory_only(tmp_path, monkeypatch, caplog):
    """Regression: a spill directory whose lock file could not be opened (a read-only volume) stopped the collector
    from starting. Memory-only, it writes from memory, keeps at most 10 x max_memory samples while the store is
    down, and leaves the directory (and an earlier buffer's segments in it) to a later buffer."""
    earlier = DurableBuffer(FlakyStore(failures=99), tmp_path, max_memory=10)
    earlier.put(make_samples(5, start=1000))
    earlier.close()  # the store is down: on disk
    monkeypatch.setattr(buffer_module, "open", _read_only_open, raising=False)
    store = FlakyStore(failures=1)
    with caplog.at_level(logging.ERROR, logger="collectors.buffer"):
        buffer = DurableBuffer(store, tmp_path, max_memory=10)
    assert "memory only" in caplog.text and buffer.pending == 0
    for start in range(0, 200, 10):
        buffer.put(make_samples(10, start=start))
    assert buffer.flush() == 0  # the store is down
    assert buffer.memory_pending == 100 and buffer.drops.counts == {"spill_failed": 100}
    assert buffer.flush() == 100 and store.stored == make_samples(100, start=100)
    buffer.close()
    monkeypatch.undo()
    later = FlakyStore()
    DurableBuffer(later, tmp_path).close()  # the directory was never held: the earlier spill replays
    assert later.stored == make_samples(5, start=1000)


def test_samples_a_memory_only_buffer_closes_with_while_the_store_is_down_are_counted_lost(tmp_path):
    """Regression: they went with the process, and neither the status nor the metric said so."""
    (tmp_path / "file").touch()
    buffer = DurableBuffer(FlakyStore(failures=100), tmp_path / "file" / "spill", max_memory=100)
    buffer.put(make_samples(50))
    buffer.close()
    assert buffer.drops.counts == {"spill_failed": 50} and buffer.memory_pending == 0


def test_a_spill_directory_that_cannot_be_created_leaves_the_buffer_memory_only(tmp_path):
    """A file where the spill directory should be: the buffer starts memory-only and writes from memory."""
    (tmp_path / "file").touch()
    store = FlakyStore()
    buffer = DurableBuffer(store, tmp_path / "file" / "spill", max_memory=10)
    buffer.put(make_samples(25))
    assert buffer.flush() == 25 and store.stored == make_samples(25)
    buffer.close()


def test_samples_put_while_a_flush_writes_wait_for_the_next_flush_not_written_under_the_lock(tmp_path):
    """Memory put during a flush's segment writes was written straight after them, under the buffer's lock: each
    put (and the collector's sampling round behind it) waited as long as the store took to write it."""
    class PutDuringWrite(FlakyStore):
        def write(self, samples):
            if self.calls == 0:
                buffer.put(make_samples(2, start=5))  # a sampling round, while the segment is being written
            return super().write(samples)

    store = PutDuringWrite()
    buffer = DurableBuffer(store, tmp_path / "spill")
    buffer.put(make_samples(5))
    assert buffer.flush() == 5
    assert len(store.batches) == 1 and buffer.memory_pending == 2  # no second write, under the lock, this flush
    assert buffer.flush() == 2 and store.stored == make_samples(7) and buffer.pending == 0


def test_memory_the_disk_would_not_take_is_still_written_behind_the_segments(tmp_path):
    """What the flush could not spill (memory only here) is written directly, after every segment, as before; what
    was put meanwhile waits for the next flush."""
    class PutDuringWrite(FlakyStore):
        def write(self, samples):
            if self.calls == 0:
                buffer.put(make_samples(1, start=3))
            return super().write(samples)

    (tmp_path / "file").write_text("")
    store = PutDuringWrite()
    buffer = DurableBuffer(store, tmp_path / "file" / "spill")  # cannot be created: memory only
    buffer.put(make_samples(3))
    assert buffer.flush() == 3 and store.stored == make_samples(3) and buffer.memory_pending == 1
    assert buffer.flush() == 1 and store.stored == make_samples(4)


def test_a_memory_only_buffer_takes_puts_while_the_store_writes_and_keeps_the_order_on_a_failure(tmp_path):
    """A memory-only buffer wrote its memory under the lock: every put, and the sampling round behind it, waited as
    long as the store took (up to its timeout while it was down) (review)."""
    entered, release = threading.Event(), threading.Event()

    class Slow(FlakyStore):
        def write(self, samples):
            entered.set()
            release.wait(10)
            return super().write(samples)

    (tmp_path / "file").write_text("")
    store = Slow(failures=1)
    buffer = DurableBuffer(store, tmp_path / "file" / "spill")  # cannot be created: memory only
    buffer.put(make_samples(3))
    flusher = threading.Thread(target=buffer.flush)
    flusher.start()
    assert entered.wait(10)
    putter = threading.Thread(target=buffer.put, args=(make_samples(1, start=3),))
    putter.start()
    putter.join(10)  # returns at once unless the put waits on the store's write
    took_the_put = not putter.is_alive()
    release.set()
    flusher.join(10)
    assert took_the_put
    assert buffer.last_error is not None and buffer.memory_pending == 4  # the failed write's samples back in front
    assert buffer.flush() == 4 and store.stored == make_samples(4)


def test_a_segment_set_aside_under_a_name_used_before_keeps_the_earlier_one(tmp_path, monkeypatch):
    """Segment numbers start again at 1 once the folder drains: a second unreadable segment 1 replaced the first
    one kept for the operator."""
    from collectors import buffer as buffer_module

    monkeypatch.setattr(buffer_module, "_read_segment", lambda path: (_ for _ in ()).throw(FileNotFoundError(path)))
    for round_ in range(2):
        buffer = DurableBuffer(FlakyStore(), tmp_path, max_memory=4)
        buffer.put(make_samples(5, start=0))  # past max_memory: spilled to segment 1
        [segment] = segments(tmp_path)
        segment.write_text(f"round {round_}\n")
        buffer.flush()  # the segment cannot be read (gone, as this test reads it): set aside at once
        buffer.close()
    kept = sorted(path.read_text() for path in tmp_path.rglob("*.unreadable"))
    assert kept == ["round 0\n", "round 1\n"]


def test_a_segment_that_cannot_be_read_at_start_keeps_no_collector_from_starting(tmp_path):
    """Its size was read unguarded: a dangling link (or one deleted by hand at that moment) failed the constructor,
    and the node sent no telemetry until the collector could start."""
    (tmp_path / "segment-000000000001.jsonl").symlink_to(tmp_path / "gone")
    store = FlakyStore()
    buffer = DurableBuffer(store, tmp_path, max_memory=4)
    buffer.put(make_samples(5, start=0))
    buffer.flush()
    assert store.stored == make_samples(5, start=0) and buffer.pending == 0
    buffer.close()
