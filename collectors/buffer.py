"""DurableBuffer: accepted telemetry reaches the store exactly in order, through outages and restarts.

Collectors `put()` samples; `flush()` writes them to the store. Every flush first appends what memory holds
to an append-only JSON-lines segment in `spill_dir` (fsync'd), then writes the segments to the store oldest first;
memory also spills when it passes `max_memory`. So the store sees samples in the order they were accepted, and
while the store is down (its write raises) nothing is dropped; a segment is deleted only after its write
succeeded. A new buffer on the same `spill_dir` (after a restart or a crash) finds the old segments and replays
them first. A write that failed half-way is replayed whole: the store's idempotent key makes the repeat
harmless. Only samples put since the last flush or spill live in RAM alone (and memory that cannot be spilled:
a flush then writes it directly, after every segment).

The spill directory is capped at `max_spill_bytes`: when a spill would pass the cap, the oldest segments
are deleted first (a segment rolls over at an eighth of the cap, so one drop is small; never the one a flush is
writing), and only if that is not enough the oldest samples of the spill itself. Until the store has said that it
takes writes (`confirmed`), the cap deletes no segment for a spill: the newest samples that do not fit are dropped
instead, as older segments may be meant for a writable store and these samples are discarded if this one is
read-only (a smaller cap than the last process had still applies at once, oldest first). Dropped samples are counted by
reason in `drops` (a LossCounter: status, metric, rate-limited warning); lines of a segment that no longer parse
count as `unreadable` (a segment that cannot be read at all is renamed `*.unreadable` for the operator; such files
count under the cap and are the first deleted to make room, their samples already counted), and samples the store
refuses for good (`WriteRefused`: InfluxDB's 400 or 422, e.g. points older than the bucket's retention after a long
outage) as `refused`, so they never hold back what came after them.
While the spill directory cannot be written (disk full, read-only volume) memory keeps at most 10 x `max_memory`
samples, the oldest dropped first as `spill_failed`; an append that failed half-way is cut off again, so the
segment keeps no torn line. A segment the store has that cannot be deleted is not written again (deleting it is
tried again at each flush; a later buffer replays it, harmlessly), and one the cap cannot delete stays (the spill
failed). A spill directory that cannot be created, locked or listed at start leaves the buffer memory-only (logged):
nothing is spilled or replayed, and memory keeps at most 10 x `max_memory` samples while the store is down.
What memory still holds when the buffer closes with the store down and no spill possible is lost with the
process, and counted as `spill_failed`. Nothing else that was accepted is ever dropped, unless the store turns out
read-only:
`release()` then deletes what this buffer holds (memory and the segments it spilled), and the segments an earlier
buffer spilled for the same store (`store_key`) before it was known whether that store takes writes: such a segment
is named `segment-<n>.pending-<digest of the key>.jsonl` until the store says it takes writes (`confirm_writable`
renames it `segment-<n>.jsonl`). Every other earlier segment stays: one pending for another store, and every unmarked
one (spilled for a store known to take writes, without a `store_key`, or by an older version).

A flush writes segments to the store outside the buffer's lock: `put()` does not wait for a slow store (only
for a spill to disk, or, with a spill directory, for the direct write of memory that could not be spilled); samples
put while a flush writes wait in memory for the next one. One flush runs at a time;
one process owns a spill directory at a time (an advisory lock on `spill_dir/.lock`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from collectors.metrics import LossCounter
from core.stores.base import TelemetryStore, WriteRefused
from core.telemetry import TelemetrySample

logger = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^segment-(\d{12})(?:\.pending-([0-9a-f]{16}))?\.jsonl$")  # sequence, store key digest
_SET_ASIDE = re.compile(r"^segment-\d{12}(?:\.pending-[0-9a-f]{16})?\.jsonl(?:\.\d+)?\.unreadable$")
_SEGMENTS_PER_CAP = 8
SPILL_CAP = "spill_cap"
UNREADABLE = "unreadable"
REFUSED = "refused"
SPILL_FAILED = "spill_failed"
SEGMENT_READ_TRIES = 3  # flushes a segment that cannot be read is tried in before it is set aside (*.unreadable)
SPILL_RETRY_S = 30.0  # after a failed spill, how long puts wait before they try the disk again
MEMORY_LIMIT_FACTOR = 10  # while spilling fails, memory keeps at most this many x max_memory samples


@dataclass(frozen=True)
class Released:
    """What `DurableBuffer.release` deleted (this buffer's memory and spill, segments pending for its store) and left
    (the other segments of earlier buffers)."""

    discarded_samples: int = 0
    discarded_bytes: int = 0
    kept_samples: int = 0
    kept_segments: int = 0


class DurableBuffer:
    """Buffer between collectors and a TelemetryStore that never loses accepted samples.

    Args:
        store: a writable TelemetryStore.
        spill_dir: directory for spilled segments (created if missing; one that cannot be used: memory only).
        max_memory: samples held in memory before they spill; also the most samples in one segment file.
        max_spill_bytes: cap on the total size of the segments and the `*.unreadable` files set aside (None: no cap).
        drops: counts dropped samples (default: a LossCounter named after `spill_dir`, without a metric).
        store_key: names the store (e.g. the digest of its settings); segments spilled before it is `confirmed`
            carry it, so a later buffer for the same store that finds it read-only deletes them (`release`).
        confirmed: whether the store is known to take writes; if not, until `confirm_writable()`, no spill
            deletes a segment (the newest samples that do not fit under the cap are dropped instead).
    """

    def __init__(self, store: TelemetryStore, spill_dir: str | Path, max_memory: int = 10_000, *,
                 max_spill_bytes: int | None = None, drops: LossCounter | None = None,
                 store_key: str | None = None, confirmed: bool = True) -> None:
        if getattr(store, "read_only", False):
            raise ValueError(f"{store!r} is read-only; collectors need a writable store")
        if max_memory < 1:
            raise ValueError(f"max_memory must be at least 1, not {max_memory}")
        if max_spill_bytes is not None and max_spill_bytes < _SEGMENTS_PER_CAP:
            raise ValueError(f"max_spill_bytes must be at least {_SEGMENTS_PER_CAP}, not {max_spill_bytes}")
        self.store = store
        self.spill_dir = Path(spill_dir)
        self.max_memory = max_memory
        self.max_spill_bytes = max_spill_bytes
        self.drops = drops or LossCounter("dropped", str(self.spill_dir))
        self.last_error: str | None = None
        self._store_tag = _digest(store_key) if store_key is not None else None
        self._confirmed = confirmed
        self._lock_file, self._segments, set_aside = self._take_spill_dir()  # no lock file: memory only
        self._lock = threading.RLock()
        self._flushing = threading.Lock()  # one flush at a time; taken before `_lock`, never while holding it
        self._memory: list[TelemetrySample] = []
        self._spilled: set[Path] = set()  # segments this buffer created (the others are an earlier buffer's)
        self._written: set[Path] = set()  # segments the store has that could not be deleted (out of `_segments`)
        self._on_disk = {p: _count_lines(p) for p in self._segments}
        self._bytes = {p: _size(p) for p in self._segments}
        self._set_aside_bytes = {p: _size(p) for p in set_aside}  # `*.unreadable` files, oldest first
        self._open: Path | None = None  # the segment this process appends to
        self._writing: Path | None = None  # the segment a flush is writing to the store (no spill touches it)
        self._spill_retry_at = 0.0  # monotonic time before which a failed spill is not tried again
        self._read_failures: dict[Path, int] = {}  # segments that could not be read, and how many flushes in a row
        self._closed = False
        try:  # a smaller cap than the last process had applies at once, whether or not the store is confirmed
            self._drop_oldest_segments(0)
        except OSError as exc:
            logger.error("buffer: %s stays over its cap of %s bytes: %s", self.spill_dir, self.max_spill_bytes, exc)
        if self._segments:
            logger.info("buffer: %d spilled sample(s) in %d segment(s) under %s will be replayed first",
                        self.disk_pending, len(self._segments), self.spill_dir)

    def _take_spill_dir(self) -> tuple[IO[str] | None, list[Path], list[Path]]:
        """Create and lock `spill_dir` (the lock file is held open: its flock marks the directory in use); the lock
        file, the segments found and the files set aside (`*.unreadable`), each oldest first. One that cannot be
        created, locked or listed (a read-only volume) is logged and left alone: no lock file and no segments, the
        buffer keeps memory only."""
        lock_file = None
        try:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            lock_file = open(self.spill_dir / ".lock", "w")
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            found = list(self.spill_dir.iterdir())
            return (lock_file, sorted(p for p in found if _SEGMENT.match(p.name)),
                    sorted((p for p in found if _SET_ASIDE.match(p.name)), key=_set_aside_order))
        except OSError as exc:
            if lock_file is not None:
                lock_file.close()
            if isinstance(exc, BlockingIOError):  # flock: another buffer holds it
                raise RuntimeError(f"{self.spill_dir} is in use by another buffer") from exc
            logger.error("buffer: cannot use %s (%s): memory only, nothing is spilled or replayed until a restart; "
                         "while the store is down at most %d samples are kept", self.spill_dir, exc,
                         MEMORY_LIMIT_FACTOR * self.max_memory)
            return None, [], []

    @property
    def memory_pending(self) -> int:
        return len(self._memory)

    @property
    def disk_pending(self) -> int:
        return sum(self._on_disk.values())

    @property
    def disk_bytes(self) -> int:
        return sum(self._bytes.values())

    def _used_bytes(self) -> int:
        """What counts under the cap: the segments and the files set aside."""
        return self.disk_bytes + sum(self._set_aside_bytes.values())

    @property
    def pending(self) -> int:
        """Samples accepted and not yet written to the store."""
        with self._lock:
            return self.memory_pending + self.disk_pending

    def put(self, samples: Iterable[TelemetrySample]) -> None:
        """Accept samples (kept in order); spills to disk when memory passes `max_memory`."""
        with self._lock:
            if self._closed:
                raise RuntimeError("buffer is closed")
            self._memory.extend(samples)
            if len(self._memory) > self.max_memory:
                self._spill()

    def flush(self) -> int:
        """Spill memory, then write the segments to the store oldest first (each outside the lock, so puts go on
        while the store is slow), then memory that could not be spilled; return how many samples were written.

        Never raises for a store failure (the samples stay, on disk, and `last_error` says why) nor for a disk
        failure (logged; the samples stay in memory, or on disk).
        """
        with self._flushing:
            with self._lock:
                if self._closed:
                    return 0  # close() already flushed or spilled everything
                self._delete_written()
                self._spill(keep_segments=True)
                unspilled = len(self._memory)  # what the disk did not take: written directly, behind the segments
                segments = list(self._segments)  # segments spilled meanwhile wait for the next flush
            written = 0
            try:
                for segment in segments:
                    written += self._flush_segment(segment)
                written += self._flush_memory(unspilled)
                self.last_error = None
            except Exception as exc:  # any store failure: keep everything, retry on the next flush
                with self._lock:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self._spill()
                logger.warning("buffer: flush failed, %d sample(s) kept for retry: %s", self.pending, self.last_error)
            return written

    def _flush_segment(self, segment: Path) -> int:
        """Write one segment to the store and delete it; how many samples the store took. One that cannot be read
        is tried again at the next flushes, and set aside when gone or after SEGMENT_READ_TRIES flushes."""
        with self._lock:
            if segment not in self._on_disk:
                return 0  # dropped meanwhile (the spill cap)
            self._writing = segment  # spills from now on go to a new segment
        try:
            try:
                samples, unreadable = _read_segment(segment)
            except OSError as exc:  # deleted by hand, or a disk error that persists: never block the rest
                with self._lock:
                    failures = self._read_failures[segment] = self._read_failures.get(segment, 0) + 1
                    if isinstance(exc, FileNotFoundError) or failures >= SEGMENT_READ_TRIES:
                        self._set_aside(segment, exc)
                        return 0
                raise  # a passing error (EMFILE, a network file system's hiccup): tried again next flush
            written = self._write(samples, f"segment {segment.name}")
            with self._lock:
                self.drops.add(UNREADABLE, unreadable, f"{segment} had lines that are not samples")
                try:
                    self._drop_segment(segment)
                except OSError as exc:
                    self._keep_written(segment, exc)
            return written
        finally:
            self._writing = None

    def _flush_memory(self, unspilled: int) -> int:
        """Write the first `unspilled` samples of memory, which this flush could not spill (memory only, the disk
        fails, or they do not fit under the cap), behind every segment: with segments left (spilled during this
        flush) they wait for the next flush. Samples put since wait for it too: written here they held up puts (and
        the sampling rounds behind them) for as long as the store took. A memory-only buffer writes them outside the
        lock (no segment can come between them and later samples; on a failure they go back in front); one with a
        spill directory under it, so that no spill of later samples can go ahead of them."""
        with self._lock:
            count = min(unspilled, len(self._memory))
            if not count or self._segments:
                return 0
            if self._lock_file is not None:
                written = self._write(self._memory[:count], "samples in memory")
                self._memory = self._memory[count:]
                return written
            batch, self._memory = self._memory[:count], self._memory[count:]
        try:
            return self._write(batch, "samples in memory")
        except Exception:
            with self._lock:
                self._memory[:0] = batch
                self._limit_memory()
            raise

    def _write(self, samples: list[TelemetrySample], what: str) -> int:
        """Write `samples`; how many the store took. What the store refuses for good (WriteRefused) counts as
        `refused` and is not written again, so the samples after it are not held back behind it for ever; any
        other failure raises (the samples stay for the next flush)."""
        if not samples:
            return 0
        try:
            self.store.write(samples)
        except WriteRefused as exc:
            refused = exc.refused or len(samples) - exc.written
            self.drops.add(REFUSED, refused, f"the store refused {refused} of the {what} for good: {exc}")
            return exc.written
        return len(samples)

    def _keep_written(self, segment: Path, error: OSError) -> None:
        """A segment the store has that cannot be deleted (a read-only volume): out of the index, so it is not written
        again and nothing counts as dropped; deleting it is tried again at each flush. Logged once, until the
        deletes work again."""
        if not self._written:
            logger.error("buffer: cannot delete %s, written to the store: it is not written again, and deleting it "
                         "(and any later one) is tried again at each flush: %s", segment, error)
        self._forget(segment)
        self._written.add(segment)

    def _delete_written(self) -> None:
        """Try again to delete the segments the store has that could not be deleted."""
        for segment in list(self._written):
            with suppress(OSError):
                segment.unlink(missing_ok=True)
                self._written.discard(segment)

    def close(self) -> None:
        """Spill memory to disk (where it fits without deleting older segments), then flush what can be flushed,
        spill the rest and release the spill directory: a process killed during the last store write (a stop that
        waits no longer, or a flush still writing) leaves its samples on disk, not lost."""
        with self._lock:
            if self._closed:
                return
            self._spill(force=True, keep_segments=True)
        self.flush()
        with self._flushing, self._lock:
            if self._closed:
                return
            self._spill(force=True)
            if self._memory:  # neither written nor spilled (memory-only, or the disk refused): lost with the process
                self.drops.add(SPILL_FAILED, len(self._memory), "closed while the store was down and the samples "
                               f"could not be spilled to {self.spill_dir}")
                self._memory = []
            self._closed = True
            self.drops.report(force=True)
            self._release_lock()

    def spill(self) -> None:
        """Move memory to disk now, writing nothing to the store (one that cannot be asked yet)."""
        with self._lock:
            if not self._closed:
                self._spill(keep_segments=True)

    def confirm_writable(self) -> None:
        """The store said it takes writes: the cap deletes the oldest segments again, and the segments spilled for
        it meanwhile (by this buffer or an earlier one) lose their pending mark, so no buffer deletes them if a
        store under the same key later turns out read-only. A buffer already closed is left as it is."""
        with self._flushing, self._lock:
            if self._closed or self._confirmed:
                return
            self._confirmed = True
            for segment in [segment for segment in self._segments if self._pending_here(segment)]:
                self._unmark(segment)

    def release(self) -> Released:
        """Let the spill directory go, writing nothing (the store turned out read-only: nothing is to be stored):
        memory, the segments this buffer spilled and those pending for the same store (`store_key`) are deleted;
        the other segments an earlier buffer spilled stay, to be replayed into a writable store configured later.
        A buffer already closed is left as it is."""
        with self._flushing, self._lock:
            if self._closed:
                return Released()
            samples, size = self._delete_spilled()
            samples += len(self._memory)
            self._memory = []
            self._closed = True
            self._release_lock()
            return Released(samples, size, self.disk_pending, len(self._segments))

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()

    def _delete_spilled(self) -> tuple[int, int]:
        """Delete the segments this buffer spilled and those pending for its store; how many samples and bytes they
        held (one that cannot be deleted is logged and stays)."""
        samples = size = 0
        for segment in [s for s in self._segments if s in self._spilled or self._pending_here(s)]:
            try:
                segment.unlink(missing_ok=True)
            except OSError as exc:
                logger.error("buffer: cannot delete %s: %s", segment, exc)
                continue
            samples += self._on_disk.get(segment, 0)
            size += self._bytes.get(segment, 0)
            self._forget(segment)
        if size:
            with suppress(OSError):
                _fsync_dir(self.spill_dir)
        return samples, size

    def _spill(self, *, force: bool = False, keep_segments: bool = False) -> None:
        """Append memory to the open segment (a new one when full or absent) and fsync it, within the cap. After
        a failed spill (disk full, read-only) the next tries wait SPILL_RETRY_S unless `force`d, and memory keeps
        at most MEMORY_LIMIT_FACTOR x max_memory samples, the oldest dropped first (counted as `spill_failed`).
        `keep_segments`: spill only what fits without deleting a segment (else leave memory as it is). A buffer
        without a spill directory (memory only) just limits memory."""
        if not self._memory:
            return
        if self._lock_file is None or (not force and time.monotonic() < self._spill_retry_at):
            self._limit_memory()
            return
        lines = [(sample.model_dump_json() + "\n").encode() for sample in self._memory]
        if keep_segments and self.max_spill_bytes is not None and (
                self.disk_bytes + sum(len(line) for line in lines) > self.max_spill_bytes):
            return  # it would delete spilled segments the flush may still write
        try:
            lines = self._make_room(lines)
        except OSError as exc:  # a segment the cap was to delete cannot be
            self._spill_failed(self.spill_dir, exc)
            return
        if not lines:
            self._memory = []
            return
        if self._open is None or self._open == self._writing or self._segment_full(self._open):
            self._open = self._new_segment()
        path, is_new = self._open, self._open not in self._on_disk
        data = b"".join(lines)
        try:
            with open(path, "ab") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if is_new:
                _fsync_dir(self.spill_dir)
        except OSError as exc:
            self._cut_back(path)
            self._spill_failed(path, exc)
            return
        self._spill_retry_at = 0.0
        if path not in self._on_disk:
            self._segments.append(path)
            self._spilled.add(path)
        self._on_disk[path] = self._on_disk.get(path, 0) + len(lines)
        self._bytes[path] = self._bytes.get(path, 0) + len(data)
        self._memory = []

    def _spill_failed(self, where: Path, error: OSError) -> None:
        """Memory stays after a failed spill: the next tries wait SPILL_RETRY_S, and memory is limited meanwhile."""
        logger.error("buffer: cannot spill %d sample(s) to %s, keeping them in memory: %s",
                     len(self._memory), where, error)
        self._spill_retry_at = time.monotonic() + SPILL_RETRY_S
        self._limit_memory()

    def _cut_back(self, path: Path) -> None:
        """Cut a failed append (disk full mid-write) off the segment: its torn last line would fuse with the next
        append's first. A segment that cannot be cut is appended to no more."""
        try:
            os.truncate(path, self._bytes.get(path, 0))
        except OSError:
            self._open = None

    def _limit_memory(self) -> None:
        """Keep at most MEMORY_LIMIT_FACTOR x max_memory samples in memory while spilling fails (the newest)."""
        excess = len(self._memory) - MEMORY_LIMIT_FACTOR * self.max_memory
        if excess > 0:
            self._memory = self._memory[excess:]
            self.drops.add(SPILL_FAILED, excess, f"{self.spill_dir} cannot be written and memory is full")

    def _segment_full(self, segment: Path) -> bool:
        if self._on_disk.get(segment, 0) >= self.max_memory:
            return True
        return self.max_spill_bytes is not None and (
            self._bytes.get(segment, 0) >= self.max_spill_bytes // _SEGMENTS_PER_CAP)

    def _make_room(self, lines: list[bytes]) -> list[bytes]:
        """The lines of memory that fit under the cap (memory is trimmed to match). The files set aside go first.
        Once the store is `confirmed`, then the oldest segments (but the one a flush is writing), then the oldest of
        `lines`; before that no segment goes, only the newest of `lines`. Raises OSError when a segment cannot be
        deleted (memory stays)."""
        if self.max_spill_bytes is None:
            return lines
        if not self._confirmed:
            self._drop_set_aside(sum(len(line) for line in lines))
            kept = _fitting(lines, self.max_spill_bytes - self._used_bytes())
            self._memory = self._memory[:kept]
            self._count_cap_drops(len(lines) - kept, "it is not known yet whether the store takes writes: the newest "
                                                     "samples went, no spilled segment")
            return lines[:kept]
        self._drop_oldest_segments(sum(len(line) for line in lines))
        skip = len(lines) - _fitting(lines[::-1], self.max_spill_bytes - self._used_bytes())
        self._memory = self._memory[skip:]
        self._count_cap_drops(skip, "the oldest spilled samples went first")
        return lines[skip:]

    def _drop_oldest_segments(self, needed: int) -> None:
        """Delete the files set aside, then the oldest segments (but the one a flush is writing) until `needed` more
        bytes fit under the cap, the segments' samples counted as `spill_cap`. Raises OSError for a segment that
        cannot be deleted: it and the newer ones stay."""
        self._drop_set_aside(needed)
        dropped = 0
        try:
            for oldest in [segment for segment in self._segments if segment != self._writing]:
                if self.max_spill_bytes is None or self._used_bytes() + needed <= self.max_spill_bytes:
                    break
                samples = self._on_disk[oldest]
                self._drop_segment(oldest)
                dropped += samples
        finally:
            self._count_cap_drops(dropped, "the oldest spilled samples went first")

    def _drop_set_aside(self, needed: int) -> None:
        """Delete the oldest files set aside until `needed` more bytes fit under the cap (their samples were counted
        when they were set aside). One that cannot be deleted is logged and no longer counted: it is the operator's."""
        for oldest in list(self._set_aside_bytes):
            if self.max_spill_bytes is None or self._used_bytes() + needed <= self.max_spill_bytes:
                return
            try:
                oldest.unlink(missing_ok=True)
                logger.warning("buffer: deleted %s, set aside earlier, to stay under the cap of %s bytes", oldest,
                               self.max_spill_bytes)
            except OSError as exc:
                logger.error("buffer: cannot delete %s, set aside earlier; it no longer counts under the cap: %s",
                             oldest, exc)
            del self._set_aside_bytes[oldest]

    def _count_cap_drops(self, count: int, why: str) -> None:
        self.drops.add(SPILL_CAP, count, f"{self.spill_dir} reached its cap of {self.max_spill_bytes} bytes; {why}")

    def _new_segment(self) -> Path:
        """The next segment's path, marked pending for this buffer's store until the store is `confirmed`."""
        mark = f".pending-{self._store_tag}" if self._store_tag is not None and not self._confirmed else ""
        return self.spill_dir / f"segment-{self._next_sequence():012d}{mark}.jsonl"

    def _pending_here(self, segment: Path) -> bool:
        """Whether `segment` was spilled for this buffer's store before that store was known to take writes."""
        return self._store_tag is not None and _name_parts(segment)[1] == self._store_tag

    def _unmark(self, segment: Path) -> None:
        """Rename a pending segment `segment-<n>.jsonl` (one that cannot be, or whose new name is taken, is logged
        and stays pending)."""
        plain = segment.with_name(f"segment-{_name_parts(segment)[0]:012d}.jsonl")
        try:
            if plain.exists():  # an older version, blind to pending segments, spilled under the same number
                raise FileExistsError(f"{plain.name} exists")
            segment.rename(plain)
            _fsync_dir(self.spill_dir)
        except OSError as exc:
            logger.error("buffer: %s stays pending (cannot rename it): %s", segment, exc)
            return
        self._segments[self._segments.index(segment)] = plain
        for index in (self._on_disk, self._bytes, self._read_failures):
            if segment in index:
                index[plain] = index.pop(segment)
        if segment in self._spilled:
            self._spilled.discard(segment)
            self._spilled.add(plain)
        if self._open == segment:
            self._open = plain

    def _next_sequence(self) -> int:
        """One past the last segment's number (one still on disk after its write included: never appended to)."""
        return max((_name_parts(segment)[0] for segment in [*self._segments, *self._written]), default=0) + 1

    def _set_aside(self, segment: Path, error: OSError) -> None:
        """A segment gone, or unreadable in SEGMENT_READ_TRIES flushes: its samples count as `unreadable`, the file
        (if any) is renamed `*.unreadable` for the operator, and the flush goes on with the next one."""
        lost = self._on_disk.get(segment, 0)
        aside = _aside_name(segment)
        try:
            segment.rename(aside)
            self._set_aside_bytes[aside] = _size(aside)
        except OSError:
            pass  # gone, or not renamable: it is left out of the index either way
        self._forget(segment)
        self.drops.add(UNREADABLE, lost, f"{segment} could not be read ({error})")

    def _drop_segment(self, segment: Path) -> None:
        """Delete a segment and forget it; raises OSError when it cannot be deleted (it stays, in the index too)."""
        segment.unlink(missing_ok=True)
        self._forget(segment)
        with suppress(OSError):  # the delete is done: a crash can undo it at worst (the segment is replayed or capped)
            _fsync_dir(self.spill_dir)

    def _forget(self, segment: Path) -> None:
        self._read_failures.pop(segment, None)
        self._spilled.discard(segment)
        self._segments.remove(segment)
        self._on_disk.pop(segment, None)
        self._bytes.pop(segment, None)
        if self._open == segment:
            self._open = None


def _size(path: Path) -> int:
    """A segment's size; 0 for one that cannot be read (deleted by hand meanwhile, a dangling link): its flush sets
    it aside, where a raise here kept the collector from starting."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _aside_name(segment: Path) -> Path:
    """`<segment>.unreadable`, or `<segment>.N.unreadable` where an earlier segment of that name was set aside (its
    number is used again once the folder drains), so that none replaces another."""
    aside, copy = segment.with_name(segment.name + ".unreadable"), 1
    while aside.exists():
        aside, copy = segment.with_name(f"{segment.name}.{copy}.unreadable"), copy + 1
    return aside


def _set_aside_order(path: Path) -> tuple[float, str]:
    """Files set aside, oldest first: by their segment's last write (a rename keeps it), then by name."""
    try:
        return path.stat().st_mtime, path.name
    except OSError:
        return 0.0, path.name


def _read_segment(path: Path) -> tuple[list[TelemetrySample], int]:
    """The samples of one segment and how many lines were not samples (a torn or corrupt line after a
    crash mid-append: logged and skipped)."""
    samples = []
    unreadable = 0
    with open(path, "rb") as handle:  # bytes: a line that is not UTF-8 is one unreadable line, not a failed read
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                samples.append(TelemetrySample.model_validate_json(line))
            except ValidationError as exc:
                logger.error("buffer: %s line %d is not a sample, skipped: %s", path, number, exc.errors()[0]["msg"])
                unreadable += 1
    return samples, unreadable


def _name_parts(segment: Path) -> tuple[int, str | None]:
    """A segment's sequence number and the digest of the store key it is pending for (None: not pending)."""
    sequence, tag = _SEGMENT.match(segment.name).groups()  # type: ignore[union-attr]
    return int(sequence), tag


def _digest(store_key: str) -> str:
    return hashlib.sha256(store_key.encode()).hexdigest()[:16]


def _fitting(lines: list[bytes], room: int) -> int:
    """How many of `lines`, taken from the first, fit in `room` bytes."""
    count = 0
    for line in lines:
        room -= len(line)
        if room < 0:
            break
        count += 1
    return count


def _count_lines(path: Path) -> int:
    """The samples in a segment; 0 for one that cannot be read (flush sets it aside)."""
    try:
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError as exc:
        logger.error("buffer: %s cannot be read: %s", path, exc)
        return 0


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
