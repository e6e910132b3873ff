"""A batch's record when its request is cancelled (Serve cancels a request whose client went away) while the record
is being written: deleted once written, never left pending for a queue actor to run for nobody."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest

from app.predict_routes import _created_batch


class SlowRecords:
    """Writes a record only once `release` is set; records what was created and deleted."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.created: list[str] = []
        self.deleted: list[str] = []

    def create(self, record: dict) -> dict:
        self.release.wait(5)
        self.created.append("b1")
        return {**record, "id": "b1"}

    def delete(self, record_id: str) -> None:
        self.deleted.append(record_id)


def test_a_record_written_after_its_request_was_cancelled_is_deleted():
    records = SlowRecords()
    replica = SimpleNamespace(batches=records)

    async def scenario() -> None:
        request = asyncio.ensure_future(_created_batch(replica, {"status": "pending"}))
        await asyncio.sleep(0.05)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert records.created == []  # still being written
        records.release.set()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if records.deleted:
                break

    asyncio.run(scenario())
    assert records.created == ["b1"] and records.deleted == ["b1"]


def test_a_record_written_for_a_live_request_is_kept():
    records = SlowRecords()
    records.release.set()
    record = asyncio.run(_created_batch(SimpleNamespace(batches=records), {"status": "pending"}))
    assert record["id"] == "b1" and records.deleted == []
