"""SqliteStore against bad and old data: a future row never freezes a node as fresh; retention deletes old rows."""

from __future__ import annotations

import logging
import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import pytest

from core.stores import create_store, sqlite
from core.stores.base import StoreUnavailable
from core.stores.sqlite import SqliteStore
from core.telemetry import TelemetrySample

DAY = 86400


def power(moment: datetime, watts: float, node: str = "n1", source: str = "ipmi", device: str = "node"):
    return TelemetrySample(timestamp=moment, node_id=node, source=source, device_id=device, power_watts=watts)


def count(store: SqliteStore) -> int:
    return store._conn.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]


def test_a_row_thirty_days_ahead_does_not_make_its_node_fresh(tmp_path):
    now = datetime.now(UTC)
    with SqliteStore(tmp_path) as store:
        store.write([power(now - timedelta(minutes=10), 610.0), power(now - timedelta(seconds=30), 620.0),
                     power(now + timedelta(days=30), 65_535.0)])
        [latest] = store.latest("n1")
        assert latest.power_watts == 620.0
        assert 30 <= latest.age_s < 90  # the real age, not 0
        assert [item.power_watts for item in store.latest()] == [620.0]


def test_clock_skew_within_the_tolerance_still_counts_as_latest(tmp_path):
    now = datetime.now(UTC)
    with SqliteStore(tmp_path, future_tolerance_s=300) as store:
        store.write([power(now - timedelta(seconds=30), 620.0), power(now + timedelta(seconds=60), 630.0)])
        [latest] = store.latest("n1")
        assert latest.power_watts == 630.0 and latest.age_s == 0.0


def test_device_sums_leave_out_future_devices(tmp_path):
    now = datetime.now(UTC)
    with SqliteStore(tmp_path) as store:
        store.write([power(now - timedelta(seconds=5), 300.0, source="nvml", device="0"),
                     power(now - timedelta(seconds=5), 200.0, source="nvml", device="1"),
                     power(now + timedelta(days=1), 900.0, source="nvml", device="2")])
        assert [item.power_watts for item in store.latest("n1")] == [500.0]


def retained(tmp_path, retention_s: int) -> SqliteStore:
    """A store that prunes only when the test calls prune() (no background pass racing the test's clock)."""
    store = SqliteStore(tmp_path)
    store.retention_s = retention_s
    return store


def test_retention_deletes_only_rows_older_than_the_retention(tmp_path, caplog):
    now = datetime(2025, 3, 31, tzinfo=UTC)
    ages_days = [40, 31, 30.01, 29.99, 10, 0]
    with retained(tmp_path, 30 * DAY) as store:
        store.write([power(now - timedelta(days=age), 100.0 + i, node=node)
                     for i, age in enumerate(ages_days) for node in ("a", "b")])
        with caplog.at_level(logging.INFO, logger="core.stores.sqlite"):
            assert store.prune(now) == 6
        kept = store._conn.execute("SELECT DISTINCT power_watts FROM telemetry ORDER BY 1").fetchall()
        assert [row[0] for row in kept] == [103.0, 104.0, 105.0]
        assert "deleted 6 row(s) older than 2025-03-01T00:00:00+00:00" in caplog.text
        assert store.prune(now) == 0


def test_retention_deletes_in_chunks_and_lets_writers_in_between(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite, "PRUNE_CHUNK", 7)
    now = datetime(2025, 3, 31, tzinfo=UTC)
    chunks: list[int] = []
    with retained(tmp_path, DAY) as store:
        store.write([power(now - timedelta(days=2, seconds=i), 1.0) for i in range(30)])
        expire = store._expire_chunk

        def watched(node: str, cutoff_ms: int) -> int:
            assert not store._lock.locked()  # nobody holds the lock between chunks
            chunks.append(expire(node, cutoff_ms))
            return chunks[-1]

        monkeypatch.setattr(store, "_expire_chunk", watched)
        assert store.prune(now) == 30
        assert chunks == [7, 7, 7, 7, 2]
        assert count(store) == 0


def test_the_background_pass_runs_at_start_and_stops_with_the_store(tmp_path):
    old = datetime.now(UTC) - timedelta(days=60)
    with SqliteStore(tmp_path) as unlimited:
        unlimited.write([power(old, 100.0), power(datetime.now(UTC), 200.0)])
    store = SqliteStore(tmp_path, retention_s=30 * DAY)
    for _ in range(100):
        if count(store) == 1:
            break
        store._closed.wait(0.05)
    assert count(store) == 1
    store.close()
    assert not store._pruner.is_alive()


def test_without_a_retention_nothing_is_deleted(tmp_path):
    with SqliteStore(tmp_path) as store:
        store.write([power(datetime(2020, 1, 1, tzinfo=UTC), 1.0)])
        assert store.prune() == 0 and count(store) == 1
    with pytest.raises(ValueError, match="retention_s"):
        SqliteStore(tmp_path, retention_s=0)


def test_the_factory_gives_the_embedded_store_its_retention(tmp_path):
    with create_store({"TELEMETRY_DATA_DIR": str(tmp_path / "a")}) as default:
        assert default.retention_s == 30 * DAY
    with create_store({"TELEMETRY_DATA_DIR": str(tmp_path / "b"), "TELEMETRY_RETENTION": "7d"}) as week:
        assert week.retention_s == 7 * DAY


def test_reads_neither_wait_for_a_writer_nor_hold_one_up(tmp_path):
    """Regression: reads shared the writers' one connection and lock, so two weeks of a node read for a retraining
    held every collector's write (and every forecast's read) up until it ended."""
    now = datetime.now(UTC)
    with SqliteStore(tmp_path) as store:
        store.write([power(now - timedelta(minutes=m), 100.0 + m) for m in range(10)])
        read: dict = {}

        def reads() -> None:
            read["window"] = store.window("n1", now - timedelta(minutes=10), now, 60)
            read["nodes"], read["latest"] = store.nodes(), [n.node_id for n in store.latest()]

        with store._lock:  # a writer (or a retention chunk) holds the write connection
            reader = threading.Thread(target=reads, daemon=True)
            reader.start()
            reader.join(timeout=5)
            assert not reader.is_alive(), "the reads waited for the writer"
        assert read["window"]["power_watts"].notna().sum() >= 9
        assert read["nodes"] == ["n1"] and read["latest"] == ["n1"]
        with store._reading() as reader:  # a long read under way, its snapshot open
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM telemetry").fetchone()
            assert store.write([power(now + timedelta(seconds=1), 300.0)]) == 1  # the writer goes on
            reader.execute("COMMIT")
        assert count(store) == 11
        with store._reading() as reader, pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("DELETE FROM telemetry")  # read connections never write
    with pytest.raises(StoreUnavailable, match="closed"):
        store.nodes()


def test_idle_read_connections_are_kept_up_to_a_bound_and_closed_with_the_store(tmp_path):
    store = SqliteStore(tmp_path)
    opened = [store._reading() for _ in range(sqlite.MAX_IDLE_READERS + 3)]
    for reading in opened:
        reading.__enter__()
    for reading in opened:
        reading.__exit__(None, None, None)
    assert len(store._idle_readers) == sqlite.MAX_IDLE_READERS
    idle = list(store._idle_readers)
    store.close()
    assert store._idle_readers == []
    with pytest.raises(sqlite3.ProgrammingError):
        idle[0].execute("SELECT 1")


def test_a_read_sqlite_fails_is_store_unavailable_and_its_connection_is_dropped(tmp_path):
    """Regression: a read SQLite failed (locked past its timeout, an I/O error) escaped as sqlite3's own error, past
    every caller that handles a store that cannot answer, and its connection went back to the pool."""
    store = SqliteStore(tmp_path)
    with pytest.raises(StoreUnavailable, match="could not be read: no such table"), store._reading() as conn:
        conn.execute("SELECT * FROM no_such_table")
    assert store._idle_readers == []
    assert store.nodes() == [] and len(store._idle_readers) == 1  # a fresh one for the next read, kept
    store.close()


def test_a_store_sqlite_cannot_switch_to_wal_says_so(tmp_path, monkeypatch, caplog):
    """Regression: SQLite answers the mode it keeps where it cannot switch (a file system without shared memory);
    the store went on in rollback-journal mode, where a long read holds the collectors' writes back, unsaid."""
    real = sqlite3.connect

    class NoWal:
        def __init__(self, conn):
            self._conn = conn

        def execute(self, sql, *args):
            if sql == "PRAGMA journal_mode=WAL":
                return self._conn.execute("PRAGMA journal_mode")  # what SQLite answers when it cannot switch
            return self._conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._conn, name)

    monkeypatch.setattr(sqlite.sqlite3, "connect", lambda *a, **kw: NoWal(real(*a, **kw)))
    with caplog.at_level("WARNING"), SqliteStore(tmp_path / "telemetry"):
        pass
    assert "stays in delete journal mode, not WAL" in caplog.text
