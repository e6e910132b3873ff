"""SqliteStore: the embedded default (no server), one file under the data directory.

One table keyed on the idempotency key, ordered (node_id, ts_ms, source, device_id): a replayed sample
replaces itself instead of duplicating, and the key's (node_id, ts_ms) prefix is the index that serves
windows and latest readings (a clustered table, so no second index to maintain on every insert). WAL journal with
synchronous=FULL: a committed batch survives a crash or power loss, which the durable buffer relies on
before it drops its copy. Writes go through one connection behind a lock; reads through a small pool of read-only
connections of their own, so a long read (two weeks of a node for a retraining) neither waits for the writers nor
holds them up (WAL lets readers and one writer work at once). The store is safe to share between threads.

Latest readings ignore rows stamped more than `future_tolerance_s` ahead of now, so one sample from a
clock far ahead never freezes its node as fresh. With a `retention_s`, a background thread deletes rows
older than that every PRUNE_INTERVAL_S, node by node in chunks of PRUNE_CHUNK rows, one transaction each,
so writers wait at most one chunk; each pass that deletes rows says how many in a log line.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from core.stores.base import NodeLatest, StoreUnavailable, TelemetryStore
from core.stores.window import (
    DEVICE_BIN_COLUMNS,
    EXPECT_DEVICE_S,
    LATEST_COLUMNS,
    ceil_ms,
    check_window,
    combine_latest,
    node_frame,
    to_ms,
)
from core.telemetry import TelemetrySample
from core.telemetry_screen import DEFAULT_FUTURE_TOLERANCE_S

logger = logging.getLogger(__name__)

DB_FILENAME = "telemetry.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS telemetry (
    node_id TEXT NOT NULL,
    source TEXT NOT NULL,
    device_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    power_watts REAL,
    utilization REAL,
    memory_usage REAL,
    temperature REAL,
    power_limit_watts REAL,
    energy_joules REAL,
    quality TEXT NOT NULL,
    PRIMARY KEY (node_id, ts_ms, source, device_id)
) WITHOUT ROWID;
"""
_INSERT = "INSERT OR REPLACE INTO telemetry VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_WINDOW = """
SELECT (ts_ms / :step_ms) * :step_s AS bin_s, source, device_id,
       AVG(power_watts), AVG(utilization), AVG(memory_usage), AVG(temperature)
FROM telemetry WHERE node_id = :node AND ts_ms >= :start AND ts_ms < :end
GROUP BY bin_s, source, device_id
"""
# Loose index scan: one index seek per node instead of reading every row.
_NODES = """
WITH RECURSIVE walk(node_id) AS (
    SELECT MIN(node_id) FROM telemetry
    UNION ALL
    SELECT (SELECT MIN(node_id) FROM telemetry WHERE node_id > walk.node_id) FROM walk WHERE node_id IS NOT NULL
)
SELECT node_id FROM walk WHERE node_id IS NOT NULL
"""
_SINCE = "SELECT 1 FROM telemetry WHERE node_id = ? AND ts_ms >= ? LIMIT 1"  # one index seek
_NEWEST_ROW = "SELECT MAX(ts_ms) FROM telemetry WHERE node_id = ? AND ts_ms <= ?"
# The newest row with power within POWER_LOOKBACK_S of the node's newest row (walking the (node_id, ts_ms) index
# back): a node whose power feed stopped while another source still writes (CPU utilization) shows its last power
# reading, stale, instead of vanishing; the bound keeps a node that never reports power (a VM) from a long scan.
_NEWEST = """
SELECT ts_ms FROM telemetry WHERE node_id = ? AND ts_ms BETWEEN ? AND ? AND power_watts IS NOT NULL
ORDER BY ts_ms DESC LIMIT 1
"""
POWER_LOOKBACK_S = 3600  # as InfluxStore's latest_lookback_s
_RECENT_POWER = """
SELECT node_id, source, device_id, MAX(ts_ms), power_watts FROM telemetry
WHERE node_id = ? AND ts_ms BETWEEN ? AND ? AND power_watts IS NOT NULL
GROUP BY source, device_id
"""  # each device's last power reading (SQLite takes the bare columns from the row of the MAX)
# One chunk of one node's expired rows (the primary key's (node_id, ts_ms) prefix finds them).
_EXPIRE = """
DELETE FROM telemetry WHERE (node_id, ts_ms, source, device_id) IN (
    SELECT node_id, ts_ms, source, device_id FROM telemetry WHERE node_id = ? AND ts_ms < ? LIMIT ?)
"""
PRUNE_INTERVAL_S = 300.0
PRUNE_CHUNK = 5000
MAX_IDLE_READERS = 8  # read connections kept open between reads (as many as the store actor's concurrent calls)


class SqliteStore(TelemetryStore):
    """Telemetry in `<data_dir>/telemetry.sqlite3`; `retention_s` None keeps every row."""

    def __init__(self, data_dir: str | Path, *, synchronous: str = "FULL", retention_s: int | None = None,
                 future_tolerance_s: float = DEFAULT_FUTURE_TOLERANCE_S) -> None:
        if retention_s is not None and retention_s <= 0:
            raise ValueError(f"retention_s must be positive, not {retention_s}")
        self.retention_s = retention_s
        self.future_tolerance_s = future_tolerance_s
        self.path = Path(data_dir) / DB_FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._idle_readers: list[sqlite3.Connection] = []  # under _readers_lock
        self._readers_lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:  # an unreadable file, a folder without write access
            raise StoreUnavailable(f"the embedded telemetry store {self.path} cannot be opened: {exc}") from exc
        try:
            [(mode,)] = self._conn.execute("PRAGMA journal_mode=WAL").fetchall()
            if str(mode).lower() != "wal":  # SQLite keeps the old mode where it cannot switch (no shared memory)
                logger.warning("telemetry store: SQLite at %s stays in %s journal mode, not WAL (a file system "
                               "without shared memory, NFS?): a long read holds collector writes back; put the "
                               "store on a local disk", self.path, mode)
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            self._conn.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache: batch inserts stay in memory
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:  # damaged, not a database, locked, read-only: said plainly, never a traceback
            self._conn.close()
            damaged = isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)
            advice = " (a damaged file: move it aside to start an empty one)" if damaged else ""
            raise StoreUnavailable(f"the embedded telemetry store {self.path} cannot be opened: {exc}{advice}") from exc
        self._closed = threading.Event()
        self._pruner = None
        if retention_s is not None:
            self._pruner = threading.Thread(target=self._prune_loop, name="telemetry-retention", daemon=True)
            self._pruner.start()
        logger.info("telemetry store: SQLite at %s, %s", self.path,
                    f"rows kept {retention_s} s" if retention_s is not None else "rows kept forever")

    def write(self, samples: Sequence[TelemetrySample]) -> int:
        rows = [
            (s.node_id, s.source.value, s.device_id, to_ms(s.timestamp), s.power_watts, s.utilization,
             s.memory_usage, s.temperature, s.power_limit_watts, s.energy_joules, s.quality.value)
            for s in samples
        ]
        if not rows:
            return 0
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(_INSERT, rows)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if not self._closed.is_set() and self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StoreUnavailable(f"SQLite write to {self.path} failed: {exc}") from exc
        return len(rows)

    def window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        _, end_ms = check_window(start, end, step_s)
        step_s = int(step_s)  # sqlite3 binds a numpy integer as NULL
        # rows are kept to the millisecond: one at or after `start` has ts_ms at or after its millisecond rounded up
        # (rounded down took a row from before a start carrying microseconds, which InfluxDB, filtering on the full
        # time, leaves out); the end needs none: the bins laid out end before its millisecond (window.bin_starts)
        params = {"step_ms": step_s * 1000, "step_s": step_s, "node": node_id, "start": ceil_ms(start),
                  "end": end_ms}
        with self._reading() as conn:
            rows = conn.execute(_WINDOW, params).fetchall()
        return node_frame(pd.DataFrame(rows, columns=list(DEVICE_BIN_COLUMNS)), node_id, start, end, step_s)

    def latest(self, node_id: str | None = None) -> list[NodeLatest]:
        now = datetime.now(UTC)
        until = to_ms(now + timedelta(seconds=self.future_tolerance_s))
        rows: list[tuple] = []
        with self._reading() as conn:
            targets = [node_id] if node_id is not None else [r[0] for r in conn.execute(_NODES)]
            for node in targets:
                newest_row = conn.execute(_NEWEST_ROW, (node, until)).fetchone()[0]
                found = None if newest_row is None else conn.execute(
                    _NEWEST, (node, newest_row - POWER_LOOKBACK_S * 1000, newest_row)).fetchone()
                if found is not None:
                    newest = found[0]
                    since = newest - int(EXPECT_DEVICE_S * 1000)  # devices silent for a while still count as missing
                    rows.extend(conn.execute(_RECENT_POWER, (node, since, newest)).fetchall())
        return combine_latest(pd.DataFrame(rows, columns=list(LATEST_COLUMNS)), now)

    def prune(self, now: datetime | None = None) -> int:
        """Delete the rows older than the retention (none without one); return how many, and log it."""
        if self.retention_s is None:
            return 0
        cutoff = to_ms((now or datetime.now(UTC)) - timedelta(seconds=self.retention_s))
        deleted = 0
        for node in self.nodes():
            chunk = PRUNE_CHUNK
            while chunk == PRUNE_CHUNK:
                chunk = self._expire_chunk(node, cutoff)
                deleted += chunk
        if deleted:
            logger.info("telemetry store: deleted %d row(s) older than %s (retention %d s)", deleted,
                        datetime.fromtimestamp(cutoff / 1000, UTC).isoformat(), self.retention_s)
        return deleted

    def _expire_chunk(self, node: str, cutoff_ms: int) -> int:
        with self._lock:  # taken per chunk: a writer waits for one chunk at most
            if self._closed.is_set():
                return 0
            return self._conn.execute(_EXPIRE, (node, cutoff_ms, PRUNE_CHUNK)).rowcount

    def _prune_loop(self) -> None:
        while not self._closed.is_set():
            try:
                self.prune()
            except (sqlite3.Error, StoreUnavailable) as exc:  # e.g. the disk is full: retry; or closed meanwhile
                if self._closed.is_set():
                    return
                logger.warning("telemetry store: retention pass failed, retried in %.0f s: %s", PRUNE_INTERVAL_S, exc)
            if self._closed.wait(PRUNE_INTERVAL_S):
                return

    def nodes(self, since: datetime | None = None) -> list[str]:
        """Every node with stored telemetry, or (`since`) with telemetry from then on: the nodes gone within the
        retention do not count towards a retraining's read."""
        with self._reading() as conn:
            found = [row[0] for row in conn.execute(_NODES)]
            if since is None:
                return found
            cutoff = to_ms(since)
            return [node for node in found if conn.execute(_SINCE, (node, cutoff)).fetchone() is not None]

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection for one read: an idle one, else a new one; at most MAX_IDLE_READERS are kept. A
        read SQLite fails (locked past its timeout, an I/O error) is StoreUnavailable, and its connection closed."""
        with self._readers_lock:
            if self._closed.is_set():
                raise StoreUnavailable(f"the SQLite store {self.path} is closed")
            conn = self._idle_readers.pop() if self._idle_readers else None
        failed = False
        try:
            if conn is None:
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
                conn.execute("PRAGMA query_only=ON")
            yield conn
        except sqlite3.Error as exc:
            failed = True
            raise StoreUnavailable(f"the SQLite store {self.path} could not be read: {exc}") from exc
        finally:
            with self._readers_lock:
                keep = conn is not None and not failed and not self._closed.is_set() and (
                    len(self._idle_readers) < MAX_IDLE_READERS)
                if keep:
                    self._idle_readers.append(conn)
            if conn is not None and not keep:
                conn.close()

    def close(self) -> None:
        with self._readers_lock:
            self._closed.set()  # a read under way closes its connection when it ends
            idle, self._idle_readers = self._idle_readers, []
        for conn in idle:
            conn.close()
        with self._lock:
            self._conn.close()
        if self._pruner is not None and self._pruner is not threading.current_thread():
            self._pruner.join(timeout=10)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"
