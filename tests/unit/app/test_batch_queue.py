"""Batches run through a bounded queue, resume through it after a restart, and expire (no Ray).

Regressions of issue 10: every batch was its own Ray task (no cap), a restart resubmitted them all at once,
and their records never expired.
"""

from __future__ import annotations

import asyncio
import os
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from app import predict_routes
from app.access import Access
from app.batch_queue import BatchRunner, queue_name
from app.ingress import api
from app.replica import serving_replica
from app.settings import AppArgs, BatchArgs
from core.atomic_files import atomic_write_json
from core.records import RecordNotFound, RecordStore
from training.retrain_lock import silent

COST_ITEM = {"type": "cost", "request": {"resources": {"cpu_cores": 2, "memory_gb": 4}, "duration_hours": 1}}


class Recorder:
    """A stand-in for answering a batch: records the order and how many ran at once."""

    def __init__(self, seconds: float = 0.02):
        self.seconds, self.order, self.now, self.peak = seconds, [], 0, 0

    async def __call__(self, records: RecordStore, batch_id: str, app_name: str, power_app_name: str) -> str:
        records.update(batch_id, status="running")
        self.order.append(batch_id)
        self.now += 1
        self.peak = max(self.peak, self.now)
        await asyncio.sleep(self.seconds)
        self.now -= 1
        records.update(batch_id, status="done")
        return "done"


def pending(records: RecordStore, count: int, status: str = "pending") -> list[str]:
    return [records.create({"status": status})["id"] for _ in range(count)]


async def started(tmp_path, settings: BatchArgs, seconds: float) -> BatchRunner:
    """A queue over tmp_path's records, its batches answered by a Recorder taking `seconds` each."""
    runner = BatchRunner(str(tmp_path), settings, "app", "power", run=Recorder(seconds))
    await runner.start()
    return runner


async def drained(runner: BatchRunner) -> None:
    while runner.waiting or runner.running:
        await asyncio.sleep(0.01)


def test_at_most_max_running_batches_run_at_once_in_the_order_they_came(tmp_path):
    run = Recorder()

    async def scenario() -> list[str]:
        runner = BatchRunner(str(tmp_path), BatchArgs(max_running=2), "app", "power", run=run)
        await runner.start()
        ids = pending(runner.records, 7)
        for batch_id in ids:
            assert await runner.submit(batch_id)
        assert len(runner.running) == 2 and len(runner.waiting) == 5
        await drained(runner)
        return ids

    ids = asyncio.run(scenario())
    assert run.peak == 2 and run.order == ids


def test_a_full_queue_refuses_one_more(tmp_path):
    async def scenario() -> None:
        runner = await started(tmp_path, BatchArgs(max_running=1, max_waiting=2), 0.05)
        ids = pending(runner.records, 4)
        assert [await runner.submit(batch_id) for batch_id in ids] == [True, True, True, False]
        assert await runner.submit(ids[0])  # already queued: accepted once, not twice
        await drained(runner)

    asyncio.run(scenario())


def test_waiting_batches_are_bounded_in_bytes_too_and_one_waits_whatever_its_size(tmp_path):
    """Before, only their count was bounded: 100 waiting batches of a 4 MiB body each (more as records)."""
    limits = BatchArgs(max_running=1, max_waiting=10, max_waiting_bytes=16 << 20)

    def batch(records: RecordStore, mib: float) -> str:
        return records.create({"status": "pending", "items": ["x" * int(mib * (1 << 20))]})["id"]

    async def scenario() -> None:
        runner = await started(tmp_path, limits, 0.3)
        running, big, small = (batch(runner.records, mib) for mib in (20, 20, 1))
        assert await runner.submit(running) and running in runner.running  # running: not waiting
        assert await runner.submit(big)  # alone in the queue: waits, past the budget as it is
        assert not await runner.submit(small)  # more waiting past the budget is refused
        await drained(runner)
        ten, seven, five = (batch(runner.records, mib) for mib in (10, 7, 5.9))
        assert await runner.submit(running) and await runner.submit(ten)  # one runs, ten wait
        assert not await runner.submit(seven)  # 17 MiB would wait
        assert await runner.submit(five)  # 15.9 MiB wait
        assert runner.waiting_total == sum(runner.records.size(b) for b in runner.waiting)
        await drained(runner)
        assert runner.waiting_total == 0 and not runner.waiting_bytes

    asyncio.run(scenario())


def test_concurrent_submits_never_pass_the_cap_nor_queue_one_batch_twice(tmp_path):
    """A submit awaits its record's size: the checks and the enqueue after it must not interleave."""
    async def scenario() -> None:
        runner = await started(tmp_path, BatchArgs(max_running=1, max_waiting=3), 0.2)
        ids = pending(runner.records, 3)
        assert all([await runner.submit(batch_id) for batch_id in ids])  # one runs, two wait
        more = pending(runner.records, 4)
        accepted = await asyncio.gather(*(runner.submit(batch_id) for batch_id in [*more, more[0]]))
        assert sum(accepted[:4]) == 1 and len(runner.waiting) == 3
        assert len(set(runner.waiting)) == 3 and set(runner.waiting) == set(runner.waiting_bytes)
        await drained(runner)

    asyncio.run(scenario())


def test_a_restart_resumes_unfinished_batches_through_the_queue_oldest_first(tmp_path):
    clock = iter(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=s) for s in range(100))
    records = RecordStore(tmp_path, "batches", clock=lambda: next(clock))
    left = pending(records, 2, "running") + pending(records, 3) + pending(records, 1, "done")
    run = Recorder()

    async def scenario() -> None:
        runner = BatchRunner(str(tmp_path), BatchArgs(max_running=2), "app", "power", run=run)
        assert await runner.start() == 3  # two run at once, three wait
        assert await runner.start() == 3  # starting again queues nothing twice
        await drained(runner)

    asyncio.run(scenario())
    assert run.order == left[:5] and run.peak == 2


def test_a_restart_reads_the_unfinished_batches_off_the_event_loop_and_a_submit_meanwhile_queues_after_them(
        tmp_path):
    """Regression: every stored batch record (up to the finished budget, a GiB) was parsed on the queue's event loop
    when it started, holding up every submit and every read of a batch's status."""
    records = RecordStore(tmp_path, "batches")
    left = pending(records, 2)
    run, released, answered = Recorder(), threading.Event(), []

    async def scenario() -> None:
        runner = BatchRunner(str(tmp_path), BatchArgs(max_running=1), "app", "power", run=run)
        read = runner.records.unfinished

        def slow_read(*args):
            answered.append(released.wait(timeout=30))  # set by the loop below, which must keep running meanwhile
            return read(*args)

        runner.records.unfinished = slow_read
        starting = asyncio.ensure_future(runner.start())
        await asyncio.sleep(0)
        late = records.create({"status": "pending"})["id"]
        submitting = asyncio.ensure_future(runner.submit(late))
        await asyncio.sleep(0.05)
        released.set()
        await starting
        assert await submitting
        await drained(runner)
        assert run.order == [*left, late]

    asyncio.run(scenario())
    assert answered == [True]


def test_finished_records_expire_after_the_retention(tmp_path):
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    records = RecordStore(tmp_path, "batches", retention_s=3600, clock=lambda: now[0])
    done, failed, waiting = (records.create({"status": status})["id"] for status in ("done", "failed", "pending"))
    now[0] += timedelta(minutes=59)
    assert records.get(done)["status"] == "done" and records.expire() == 0
    now[0] += timedelta(minutes=2)
    with pytest.raises(RecordNotFound):
        records.get(done)  # expired on read: deleted, then unknown
    assert not (records.folder / f"{done}.json").exists()
    assert records.expire() == 1 and not (records.folder / f"{failed}.json").exists()
    assert records.get(waiting)["status"] == "pending"  # unfinished batches never expire


def test_a_record_written_without_a_time_zone_is_read_as_utc_not_a_crash_of_every_listing(tmp_path):
    """Regression: naive minus aware raised TypeError in every read, listing and expiry sweep (the sweep died)."""
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    records = RecordStore(tmp_path, "batches", retention_s=3600, clock=lambda: now[0])
    naive, kept = (records.create({"status": "done"})["id"] for _ in range(2))
    atomic_write_json(records.folder / f"{naive}.json", {**records.get(naive), "updated_at": "2025-12-31T23:30:00"})
    assert [record["id"] for record in records.newest(10)] and records.get(naive)["status"] == "done"
    now[0] += timedelta(minutes=31)  # the naive one is past the retention, read as UTC
    assert records.expire() == 1 and records.get(kept)["status"] == "done"
    assert silent({"updated_at": "2026-01-01T00:00:00"}, datetime(2026, 1, 1, 0, 1, tzinfo=UTC)) is False


def test_the_sweep_deletes_temp_files_a_killed_write_left_an_hour_ago(tmp_path):
    """Regression: a writer killed between its temp file and the rename left up to tens of MB that no sweep saw."""
    import os
    import time

    records = RecordStore(tmp_path, "batches")
    kept = records.create({"status": "pending"})["id"]
    left, fresh = records.folder / f".{kept}.json.a1b2.tmp", records.folder / f".{kept}.json.c3d4.tmp"
    for path in (left, fresh):
        path.write_text("{partial")
    hour_ago = time.time() - 3601
    os.utime(left, (hour_ago, hour_ago))
    records.expire()
    assert not left.exists() and fresh.exists()  # one being written now is left alone
    assert records.get(kept)["status"] == "pending"


def test_the_queue_sweeps_expired_records_when_it_starts(tmp_path):
    old = datetime.now(UTC) - timedelta(days=2)
    RecordStore(tmp_path, "batches", clock=lambda: old).create({"status": "done"})

    async def scenario() -> RecordStore:
        runner = BatchRunner(str(tmp_path), BatchArgs(retention="1d"), "app", "power", run=Recorder())
        await runner.start()
        await asyncio.sleep(0.1)
        return runner.records

    assert list(asyncio.run(scenario()).folder.glob("*.json")) == []


def test_beyond_the_cap_the_oldest_finished_records_go_first_and_unfinished_ones_stay(tmp_path):
    clock = iter(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=s) for s in range(100))
    records = RecordStore(tmp_path, "batches", retention_s=86400, clock=lambda: next(clock))
    waiting = records.create({"status": "pending"})["id"]  # the oldest record of all
    finished = [records.create({"status": "done" if n % 2 else "failed"})["id"] for n in range(25)]
    assert records.trim(keep=26) == 0  # 26 files: within the cap, nothing read
    assert records.trim(keep=20) == 7  # down to 9/10 of the cap, oldest first
    left = {path.stem for path in records.folder.glob("*.json")}
    assert left == {waiting, *finished[7:]}
    assert records.trim(keep=20) == 0  # 19 files
    for _ in range(2):
        records.create({"status": "pending"})
    assert records.trim(keep=20, unfinished_at_most=3) == 0  # 21 files, 3 of them unfinished: nothing read
    records.create({"status": "done"})
    assert records.trim(keep=20, unfinished_at_most=3) == 0  # 19 finished: within the cap


def test_beyond_the_byte_budget_the_oldest_finished_records_go_first_and_unfinished_ones_stay(tmp_path):
    """Regression: only the count was capped, and 1,000 batches of tens of MB each could fill the state volume that
    the controller's state and the embedded telemetry store share."""
    records = RecordStore(tmp_path, "batches", retention_s=86400)
    ids = [records.create({"status": "pending" if n == 0 else "done", "results": "x" * 10_000})["id"]
           for n in range(10)]
    for age, record_id in enumerate(ids):  # file times in creation order, the first the oldest
        os.utime(records.folder / f"{record_id}.json", (1_000_000 + age, 1_000_000 + age))
    size = (records.folder / f"{ids[1]}.json").stat().st_size
    assert records.trim(keep=100, max_bytes=10 * size + 100) == 0  # within the budget
    unreadable = records.folder / f"{ids[1]}.json"
    unreadable.unlink()
    unreadable.mkdir()  # reading it fails (IsADirectoryError): kept
    os.utime(unreadable, (1_000_001, 1_000_001))
    garbage = records.folder / f"{ids[3]}.json"
    garbage.write_text("{not json" + "x" * (size - 9))  # no record at all: deleted
    os.utime(garbage, (1_000_003, 1_000_003))
    # down to 9/10 of the budget, oldest first; the unfinished one, the unreadable one and the one just finished stay
    assert records.trim(keep=100, max_bytes=5 * size, spare=[ids[2]]) == 5
    assert {path.stem for path in records.folder.glob("*.json")} == {ids[0], ids[1], ids[2], *ids[8:]}


def test_the_queue_trims_finished_batches_to_the_cap_as_they_finish(tmp_path):
    async def scenario() -> RecordStore:
        runner = BatchRunner(str(tmp_path), BatchArgs(max_finished=10, max_waiting=1, max_running=1), "app", "power",
                             run=Recorder(seconds=0))
        await runner.start()
        for batch_id in pending(runner.records, 15):
            await drained(runner)
            assert await runner.submit(batch_id)
        await drained(runner)
        await asyncio.sleep(0.2)  # the last trims run in threads
        return runner.records

    assert len(list(asyncio.run(scenario()).folder.glob("*.json"))) <= 11  # the cap, read past it by max_running


def test_a_batch_s_results_can_be_read_a_page_at_a_time(http, tmp_path):
    replica = Ingress(tmp_path, accepts=True)
    results = [{"index": n, "status": "ok", "result": {"n": n}} for n in range(5)]
    record = replica.batches.create({"status": "done", "items": [COST_ITEM] * 5, "items_count": 5, "completed": 5,
                                     "results": results})
    api.dependency_overrides[serving_replica] = lambda: replica
    try:
        client, auth = http(api), {"Authorization": "Bearer t"}
        url = f"/api/v1/predict/batch/{record['id']}"
        whole = client.get(url, headers=auth).json()
        page = client.get(url, params={"offset": 2, "limit": 2}, headers=auth).json()
        past = client.get(url, params={"offset": 9}, headers=auth).json()
        refused = client.get(url, params={"limit": 0}, headers=auth)
    finally:
        api.dependency_overrides.clear()
    assert [r["index"] for r in whole["results"]] == [0, 1, 2, 3, 4] and whole["results_offset"] == 0
    assert whole["next_offset"] is None
    assert [r["index"] for r in page["results"]] == [2, 3] and page["results_offset"] == 2 and page["items"] == 5
    assert page["next_offset"] == 4
    assert past["results"] == [] and past["next_offset"] is None
    assert refused.status_code == 422 and "limit" in refused.text


def test_one_batch_read_answers_at_most_the_size_cap_and_says_where_to_read_on(monkeypatch):
    results = [{"index": n, "status": "ok", "result": {"steps": "x" * 1000}} for n in range(10)]
    record = {"id": "b", "status": "done", "created_at": "2026-12-05T00:00:00Z", "updated_at": "2026-12-05T00:00:00Z",
              "items_count": 10, "completed": 10, "results": results}
    monkeypatch.setattr(predict_routes, "RESULTS_MAX_BYTES", 3500)  # three results of about 1,050 bytes each
    first = predict_routes.batch_status(record)
    assert [r.index for r in first.results] == [0, 1, 2] and first.next_offset == 3
    last = predict_routes.batch_status(record, offset=9)
    assert [r.index for r in last.results] == [9] and last.next_offset is None
    monkeypatch.setattr(predict_routes, "RESULTS_MAX_BYTES", 10)  # one result larger than the cap is still shown
    assert [r.index for r in predict_routes.batch_status(record, offset=4).results] == [4]


def test_one_queue_per_records_directory():
    assert queue_name("/srv/a/state") == queue_name("/srv/a/state") != queue_name("/srv/b/state")


class Ingress:
    def __init__(self, tmp_path, accepts: bool):
        self.access = Access("t")
        self.args = AppArgs(batches=BatchArgs(max_waiting=5))
        self.batches = RecordStore(tmp_path, "batches")
        self.accepts = accepts
        self.batch_queue = SimpleNamespace(submit=self._submit)

    async def _submit(self, batch_id: str) -> bool:
        return self.accepts


def submitted(http, replica: Ingress):
    """The answer to one cost batch POSTed to the API served by `replica`."""
    api.dependency_overrides[serving_replica] = lambda: replica
    try:
        return http(api).post("/api/v1/predict/batch", json={"items": [COST_ITEM]},
                              headers={"Authorization": "Bearer t"})
    finally:
        api.dependency_overrides.clear()


@pytest.mark.parametrize(("accepts", "status"), [(True, 202), (False, 429)])
def test_the_route_queues_a_batch_or_answers_429_leaving_nothing_behind(http, tmp_path, accepts, status):
    replica = Ingress(tmp_path, accepts)
    response = submitted(http, replica)
    assert response.status_code == status, response.text
    assert len(list(replica.batches.folder.glob("*.json"))) == (1 if accepts else 0)
    if not accepts:
        assert "queue is full (at most 5 batches, or 256 MiB of them, wait)" in response.json()["detail"][0]["msg"]


def test_a_queue_that_ended_with_its_owner_is_started_again(monkeypatch):
    """The queue actor is owned by the replica that created it: when that replica ends, its batches showed
    `running` for ever unless a new batch was posted. Now a read of an unfinished batch brings a new queue."""
    from ray.exceptions import RayActorError

    from app.batch_queue import BatchQueueClient

    made = []

    class Actor:
        def __init__(self, dead: bool):
            self.dead, self.starts = dead, 0
            self.start = SimpleNamespace(remote=self._start)

        def _start(self):
            self.starts += 1
            return self

        def __await__(self):  # like an ObjectRef: awaiting it is optional (a fire-and-forget start is not)
            if self.dead:
                raise RayActorError()
            return 0
            yield

    class Client(BatchQueueClient):
        def _actor(self):
            if self._handle is None:  # what get_if_exists does when the old queue is gone: a new one
                made.append(Actor(dead=False))
                self._handle = made[-1]
            return self._handle

    client = Client("/srv/state", BatchArgs(), "app", "power")
    client._handle = Actor(dead=True)
    asyncio.run(client.resume_if_lost())
    assert len(made) == 1 and made[0].starts == 1  # a new queue, started (it resumes the unfinished batches)
    asyncio.run(client.resume_if_lost())
    assert len(made) == 1 and made[0].starts == 2  # alive: only asked again, nothing new made


@pytest.mark.parametrize(("status", "asks"), [("running", 1), ("pending", 1), ("done", 0)])
def test_reading_an_unfinished_batch_checks_its_queue(http, tmp_path, status, asks):
    replica = Ingress(tmp_path, accepts=True)
    asked = []

    async def resume_if_lost():
        asked.append(1)
        raise RuntimeError("Ray is down")  # the status is answered all the same

    replica.batch_queue.resume_if_lost = resume_if_lost
    record = replica.batches.create({"status": status, "items": [COST_ITEM], "items_count": 1, "completed": 0,
                                     "results": []})
    api.dependency_overrides[serving_replica] = lambda: replica
    try:
        response = http(api).get(f"/api/v1/predict/batch/{record['id']}", headers={"Authorization": "Bearer t"})
    finally:
        api.dependency_overrides.clear()
    assert response.status_code == 200 and response.json()["status"] == status
    assert len(asked) == asks


@pytest.mark.parametrize(("accepts", "failing", "error", "status"), [
    (True, "create", OSError(28, "No space left on device"), 503),  # a full or read-only volume: a bare 500
    (False, "delete", OSError(30, "Read-only file system"), 429),  # the failed delete's error replaced the 429
])
def test_a_state_volume_that_cannot_record_or_delete_a_batch_answers_as_it_should(http, tmp_path, monkeypatch,
                                                                                  accepts, failing, error, status):
    """Regressions: both answered 500."""
    replica = Ingress(tmp_path, accepts=accepts)

    def fail(*args):
        raise error

    monkeypatch.setattr(replica.batches, failing, fail)
    response = submitted(http, replica)
    assert response.status_code == status, response.text
    if status == 503:
        assert "storage error on the state volume" in response.json()["detail"][0]["msg"]
        assert "No space" not in response.text


def test_a_finished_batches_budget_the_waiting_ones_could_fill_is_refused_naming_both():
    """Regression (review): with `max_finished_bytes` no larger than what waiting batches may take, their records
    (never deleted) filled it, and each batch that finished deleted every other finished batch's results."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"max_finished_bytes \(256 MiB\) must be at least twice "
                                              r"max_waiting_bytes \(256 MiB\)"):
        BatchArgs(max_finished_bytes=256 << 20)
    assert BatchArgs(max_finished_bytes=512 << 20).max_waiting_bytes == 256 << 20
    assert BatchArgs().max_finished_bytes == 1 << 30  # the defaults leave room
