"""Persisted job records (prediction batches, retraining attempts): one JSON file each, written atomically.

Records outlive the app: after a restart the API still answers for every batch and job it accepted, until a
finished record is older than the store's retention, or is among the oldest beyond a cap on finished records (then it
is deleted, and unknown from then on).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.atomic_files import atomic_write_json

logger = logging.getLogger(__name__)
STALE_TEMP_S = 3600  # a temp file of a record write this old was left by a killed writer
UNFINISHED = ("pending", "running")


class RecordNotFound(LookupError):
    def __init__(self, kind: str, record_id: str):
        super().__init__(f"unknown {kind} id {record_id!r}")
        self.kind, self.record_id = kind, record_id

    def __reduce__(self):  # survives pickling across Ray calls
        return (RecordNotFound, (self.kind, self.record_id))


class RecordUnreadable(OSError):
    """A record that is there cannot be read just now (a storage error): no missing record, which would end an
    attempt's heartbeat or let its lock be taken over."""


def updated_at(record: dict[str, Any]) -> datetime | None:
    """When the record was last written (one written without a time zone read as UTC); None when it does not say."""
    try:
        updated = datetime.fromisoformat(record["updated_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return updated if updated.tzinfo is not None else updated.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class RecordStore:
    """Records of one kind under `root/<kind>/<id>.json`; finished ones expire `retention_s` after their last
    update (None: never)."""

    def __init__(self, root: str | Path, kind: str, retention_s: float | None = None,
                 clock: Callable[[], datetime] = _now):
        self.kind, self.retention_s, self.clock = kind, retention_s, clock
        self.folder = Path(root) / kind
        self.folder.mkdir(parents=True, exist_ok=True)

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        now = self.clock().isoformat()
        record = {"id": uuid.uuid4().hex, "created_at": now, "updated_at": now, **fields}
        atomic_write_json(self._path(record["id"]), record, compact=True)
        return record

    def get(self, record_id: str) -> dict[str, Any]:
        """The record; RecordNotFound when there is none, or it expired (it is deleted then); RecordUnreadable when it
        cannot be read just now."""
        record = self._read(self._path(record_id), passing_errors=True)
        if record is None:
            raise RecordNotFound(self.kind, record_id)
        if self._expired(record):
            self.delete(record_id)
            raise RecordNotFound(self.kind, record_id)
        return record

    def update(self, record_id: str, **fields: Any) -> dict[str, Any]:
        return self.update_if(record_id, lambda _: True, **fields)[0]

    def update_if(self, record_id: str, condition: Callable[[dict[str, Any]], bool],
                  **fields: Any) -> tuple[dict[str, Any], bool]:
        """From one read: the record, updated with `fields` and written where `condition` holds for it (as read),
        and whether it was. RecordNotFound / RecordUnreadable as `get`."""
        record = self.get(record_id)
        if not condition(record):
            return record, False
        record.update(fields, updated_at=self.clock().isoformat())
        atomic_write_json(self._path(record_id), record, compact=True)
        return record, True

    def size(self, record_id: str) -> int:
        """Bytes the record's file takes; 0 when there is none."""
        try:
            return self._path(record_id).stat().st_size
        except FileNotFoundError:
            return 0

    def delete(self, record_id: str) -> None:
        self._path(record_id).unlink(missing_ok=True)

    def newest(self, limit: int | None) -> list[dict[str, Any]]:
        """At most `limit` (None: all) records, newest first; expired ones are left out."""
        records = [record for path in self.folder.glob("*.json")
                   if (record := self._read(path)) is not None and not self._expired(record)]
        records.sort(key=lambda record: _time_text(record, "created_at"), reverse=True)
        return records[:limit]

    def unfinished(self, states: tuple[str, ...] = UNFINISHED) -> list[dict[str, Any]]:
        """Records still in one of `states` (e.g. interrupted by a restart), oldest first."""
        records = [record for path in self.folder.glob("*.json")
                   if (record := self._read(path)) is not None and record.get("status") in states]
        return sorted(records, key=lambda record: _time_text(record, "created_at"))

    def expire(self) -> int:
        """Delete every finished record past the retention, and what writes killed midway left (temp files an hour
        old); returns how many records."""
        self._delete_stale_temp_files()
        if self.retention_s is None:
            return 0
        expired = [record["id"] for path in self.folder.glob("*.json")
                   if (record := self._read(path)) is not None and self._expired(record)]
        for record_id in expired:
            self.delete(record_id)
        if expired:
            logger.info("deleted %d %s records older than %.0f s", len(expired), self.kind, self.retention_s)
        return len(expired)

    def _delete_stale_temp_files(self) -> None:
        """A record's temp file is renamed into place within its write: one an hour old was left by a killed writer
        (an OOM kill, a pod stopped), and the sweeps that count `*.json` never see it."""
        cutoff = time.time() - STALE_TEMP_S
        for path in self.folder.glob(".*.json.*.tmp"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:  # left for the next sweep: the records' own sweep goes on
                logger.warning("%s records: %s not deleted: %s", self.kind, path.name, exc.strerror or exc)

    def trim(self, keep: int, unfinished_at_most: int = 0, max_bytes: int | None = None,
             spare: Collection[str] = ()) -> int:
        """Keep at most `keep` finished records: when there are more, the oldest (by last update) are deleted down to
        9/10 of `keep`, so that the next ones added do not each read every record again. Unfinished records are
        never deleted. Reads no record while the folder holds at most `keep` + `unfinished_at_most` files (the
        caller's count of unfinished ones, with some slack for those it does not see). With `max_bytes`, the
        records' files may take that many bytes at most: beyond it the oldest finished ones (by file time) are
        deleted down to 9/10 of it (with files that hold no record), never one named in `spare` (a record that has
        just finished) nor one that cannot be read just now. Returns how many it deleted."""
        deleted = 0 if max_bytes is None else self._trim_bytes(max_bytes, set(spare))
        paths = list(self.folder.glob("*.json"))
        if len(paths) <= keep + unfinished_at_most:
            return deleted
        finished = [(_time_text(record, "updated_at"), path) for path in paths
                    if (record := self._read(path)) is not None and record.get("status") not in UNFINISHED]
        finished.sort(key=lambda pair: pair[0])
        excess = finished[:max(0, len(finished) - keep * 9 // 10)] if len(finished) > keep else []
        for _, path in excess:
            path.unlink(missing_ok=True)
        if excess:
            logger.info("deleted the %d oldest finished %s records (at most %d are kept)", len(excess), self.kind,
                        keep)
        return deleted + len(excess)

    def _trim_bytes(self, max_bytes: int, spare: set[str]) -> int:
        """Delete the oldest finished records (by file time, none in `spare`) while the records' files take more
        than `max_bytes`, down to 9/10 of it; reads only the records it considers deleting, and deletes only those
        it read as finished, or as no record at all. Returns how many it deleted."""
        sizes = []
        for path in self.folder.glob("*.json"):
            try:
                found = path.stat()
            except FileNotFoundError:
                continue
            sizes.append((found.st_mtime, found.st_size, path))
        total = sum(size for _, size, _ in sizes)
        if total <= max_bytes:
            return 0
        deleted, freed = 0, 0
        for _, size, path in sorted(sizes):
            if total - freed <= max_bytes * 9 // 10:
                break
            if path.stem in spare:
                continue
            try:
                record = self._read(path, passing_errors=True)
            except RecordUnreadable:  # a storage error just now: it may be unfinished, so it is kept
                continue
            if record is not None and record.get("status") in UNFINISHED:  # (not a record at all: deleted)
                continue
            path.unlink(missing_ok=True)
            deleted, freed = deleted + 1, freed + size
        logger.info("deleted the %d oldest finished %s records (%d of %d bytes; at most %d are kept)", deleted,
                    self.kind, freed, total, max_bytes)
        return deleted

    def _expired(self, record: dict[str, Any]) -> bool:
        if self.retention_s is None or record.get("status") in UNFINISHED:
            return False
        updated = updated_at(record)
        return updated is None or self.clock() - updated > timedelta(seconds=self.retention_s)

    def _read(self, path: Path, *, passing_errors: bool = False) -> dict[str, Any] | None:
        """The record at `path`; None when there is none or it is not a record (a JSON object with a string id: one
        another tool or version left in the folder is logged and left out, never a KeyError in every listing). A
        storage error is one too, unless `passing_errors`, which raises it (RecordUnreadable)."""
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except OSError as exc:
            if passing_errors:
                raise RecordUnreadable(exc.errno, f"the {self.kind} record {path.stem} cannot be read just now: "
                                                  f"{exc.strerror or type(exc).__name__}") from exc
            logger.warning("unreadable %s record %s", self.kind, path.name)
            return None
        except ValueError:
            logger.warning("unreadable %s record %s", self.kind, path.name)
            return None
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            logger.warning("%s record %s is not one (no JSON object with a string id): left out", self.kind, path.name)
            return None
        return record

    def _path(self, record_id: str) -> Path:
        if not record_id.isalnum() or not record_id.isascii():
            raise RecordNotFound(self.kind, record_id)
        return self.folder / f"{record_id}.json"


def _time_text(record: dict[str, Any], key: str) -> str:
    """A record's time (`created_at`, `updated_at`) as it sorts: ISO text; a record without one, or with a value of
    another type (another tool's), sorts first."""
    value = record.get(key, "")
    return value if isinstance(value, str) else ""
