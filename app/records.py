"""Persisted job records (batches, retrain jobs): one JSON file each, written atomically.

Records outlive the app: after a restart the API still answers for every batch and job it accepted.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.atomic_files import atomic_write_json


class RecordNotFound(LookupError):
    def __init__(self, kind: str, record_id: str):
        super().__init__(f"unknown {kind} id {record_id!r}")


class RecordStore:
    """Records of one kind under `root/<kind>/<id>.json`."""

    def __init__(self, root: str | Path, kind: str):
        self.kind = kind
        self.folder = Path(root) / kind
        self.folder.mkdir(parents=True, exist_ok=True)

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        now = _now()
        record = {"id": uuid.uuid4().hex, "created_at": now, "updated_at": now, **fields}
        atomic_write_json(self._path(record["id"]), record)
        return record

    def get(self, record_id: str) -> dict[str, Any]:
        path = self._path(record_id)
        if not path.is_file():
            raise RecordNotFound(self.kind, record_id)
        return json.loads(path.read_text())

    def update(self, record_id: str, **fields: Any) -> dict[str, Any]:
        record = self.get(record_id)
        record.update(fields, updated_at=_now())
        atomic_write_json(self._path(record_id), record)
        return record

    def unfinished(self, states: tuple[str, ...]) -> list[dict[str, Any]]:
        """Records still in one of `states` (e.g. interrupted by a restart)."""
        records = []
        for path in self.folder.glob("*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if record.get("status") in states:
                records.append(record)
        return records

    def _path(self, record_id: str) -> Path:
        if not record_id.isalnum():
            raise RecordNotFound(self.kind, record_id)
        return self.folder / f"{record_id}.json"


def _now() -> str:
    return datetime.now(UTC).isoformat()
