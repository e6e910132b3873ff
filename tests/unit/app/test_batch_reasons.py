"""A prediction batch item's error: a domain error's own message naming the field, else only the error's type."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from types import SimpleNamespace

import pytest

from app.batches import answer_items, reason
from app.schemas import BatchItemResult, PowerPredictionRequest
from training.cost.catalog import UnknownGpuType, load_catalog


def serve_handles(monkeypatch, get_handle) -> None:
    """Serve's handle lookups answered by `get_handle`, with none kept from an earlier test."""
    monkeypatch.setattr("core.handle_loop.serve.get_deployment_handle", get_handle)
    monkeypatch.setattr("core.handle_loop._lookups", {})


async def answered_ok(value):
    return SimpleNamespace(model_dump=lambda mode: {"ok": True})


def predictors(answered=answered_ok) -> SimpleNamespace:
    """A stand-in handle of either predictor deployment: every call answered by `answered(value)`."""
    return SimpleNamespace(forecast=SimpleNamespace(remote=answered), predict=SimpleNamespace(remote=answered))


POWER = SimpleNamespace(type="power",
                        request=PowerPredictionRequest(workload_id="w", features={"power_watts": [100.0]}))
COST = SimpleNamespace(type="cost", request={"n": 1})


class Wrapped(Exception):
    """How a deployment's error arrives through Ray: wrapped, with the original as `cause`."""

    def __init__(self, cause: BaseException):
        super().__init__(f"Traceback (most recent call last): ... {cause}")
        self.cause = cause


def test_a_gpu_type_the_cost_model_cannot_price_names_the_field():
    text = reason(Wrapped(UnknownGpuType("B200", load_catalog())))
    assert text.startswith("UnknownGpuType: resources.gpu_type: gpu_type 'B200' is not in the price catalog")
    assert "Traceback" not in text


def test_the_gpu_type_error_survives_the_trip_through_ray():
    """Ray pickles a deployment's error: UnknownGpuType's two-argument constructor made that fail, and the item's
    reason became "UnserializableException"."""
    import ray.cloudpickle as pickle

    error = pickle.loads(pickle.dumps(UnknownGpuType("B200", load_catalog())))
    assert isinstance(error, UnknownGpuType) and reason(Wrapped(error)).startswith(
        "UnknownGpuType: resources.gpu_type: gpu_type 'B200' is not in the price catalog")


def test_any_other_error_is_only_its_type():
    assert reason(Wrapped(RuntimeError("cannot open /var/lib/models/cost_gbm/3"))) == "RuntimeError"


def test_an_item_whose_answer_cannot_be_shaped_fails_alone(monkeypatch):
    """A forecast that does not fit the response (it made the whole batch fail, its good items' answers lost)."""

    async def answered(value):
        return value

    handle = SimpleNamespace(forecast=SimpleNamespace(remote=lambda history: answered(history)),
                             predict=SimpleNamespace(remote=lambda query: answered(query)))
    serve_handles(monkeypatch, lambda *args, **kwargs: handle)

    def shaped(request, forecast):
        if request.workload_id == "bad":
            raise ValueError("confidence: input is NaN")
        return SimpleNamespace(model_dump=lambda mode: {"workload_id": request.workload_id})

    monkeypatch.setattr("app.batches.to_response", shaped)
    items = [SimpleNamespace(type="power", request=PowerPredictionRequest(
        workload_id=name, features={"power_watts": [100.0]})) for name in ("good", "bad", "also-good")]
    results = asyncio.run(answer_items(items, "app", "power"))
    assert [(r.status, r.result) for r in results] == [
        ("ok", {"workload_id": "good"}), ("error", None), ("ok", {"workload_id": "also-good"})]
    assert results[1].error == "ValueError"


def test_a_stored_item_the_schema_now_refuses_fails_alone_naming_the_field(monkeypatch):
    """A batch queued before `gpu_count` became required with `gpu_type`: on resume, that item is refused with
    the field's name and the others are still answered (the batch used to fail as a whole)."""
    from app.batches import RefusedItem, revalidated

    async def answered(value):
        return value

    handle = SimpleNamespace(predict=SimpleNamespace(remote=lambda query: answered(query)))
    serve_handles(monkeypatch, lambda *args, **kwargs: handle)
    good = {"type": "cost", "request": {"resources": {"cpu_cores": 2, "memory_gb": 8}, "duration_hours": 1}}
    stale = {"type": "cost", "request": {"resources": {"cpu_cores": 2, "memory_gb": 8, "gpu_type": "H100"},
                                         "duration_hours": 1}}
    items = [revalidated(item) for item in (good, stale, good)]
    assert isinstance(items[1], RefusedItem) and items[1].startswith("ValidationError: resources.gpu_count: required")
    results = asyncio.run(answer_items(items, "app", "power"))
    assert [r.status for r in results] == ["ok", "error", "ok"] and results[1].error == items[1]


def test_a_batch_out_of_time_keeps_the_answers_it_has(monkeypatch):
    """The batch's own time limit used to cancel everything: a batch of many slow items failed as a whole, its
    answered items lost. Now the answered items keep their results and only the rest time out."""

    async def answered(query):
        await asyncio.sleep(0.05 if query["n"] < 3 else 5)
        return SimpleNamespace(model_dump=lambda mode: {"n": query["n"]})

    handle = SimpleNamespace(predict=SimpleNamespace(remote=lambda query: answered(query)))
    serve_handles(monkeypatch, lambda *args, **kwargs: handle)
    items = [SimpleNamespace(type="cost", request={"n": n}) for n in range(5)]
    results = asyncio.run(answer_items(items, "app", "power", batch_timeout_s=0.5))
    assert [r.status for r in results] == ["ok", "ok", "ok", "error", "error"]
    assert [r.result for r in results[:3]] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert all("the batch's 0.5 s ran out" in r.error for r in results[3:])


def test_a_power_item_without_end_time_ends_when_the_batch_was_accepted(monkeypatch):
    """Items were dated when the batch ran: a batch that waited in the queue (or was resumed after a restart)
    forecast from the wrong time, its timestamps late by the whole wait."""
    from datetime import UTC, datetime

    from core.forecasts import last_value_time

    seen = []

    async def answered(history):
        seen.append(history)
        return history

    handle = SimpleNamespace(forecast=SimpleNamespace(remote=lambda history: answered(history)))
    serve_handles(monkeypatch, lambda *args, **kwargs: handle)
    monkeypatch.setattr("app.batches.to_response", lambda request, forecast: SimpleNamespace(
        model_dump=lambda mode: {}))
    accepted = datetime(2026, 1, 2, 3, 4, 35, tzinfo=UTC)
    items = [SimpleNamespace(type="power", request=PowerPredictionRequest(
        workload_id="w", features={"power_watts": [100.0, 101.0]}))]
    results = asyncio.run(answer_items(items, "app", "power", accepted_at=accepted))
    assert results[0].status == "ok" and seen[0].end_time is None
    assert last_value_time(seen[0], 60) == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


def test_a_missing_power_deployment_fails_only_the_power_items_and_one_that_appears_is_waited_for(monkeypatch):
    """Both handles were looked up before any item ran: without the power app, a batch of cost items failed as
    a whole (KeyError), and so did a batch resumed as the app started, before the power app was registered."""
    monkeypatch.setattr("app.batches.HANDLE_RETRY_S", 0.05)
    monkeypatch.setattr("app.batches.HANDLE_WAIT_S", 0.3)

    handle = predictors()
    lookups = {"PowerPredictor": 0}

    def get_handle(name, app_name):
        if name == "PowerPredictor":
            lookups[name] += 1
            if lookups[name] < limit:
                raise KeyError(name)
        return handle

    serve_handles(monkeypatch, get_handle)
    monkeypatch.setattr("app.batches.to_response", lambda request, forecast: forecast)
    power, cost = POWER, COST
    limit = 10 ** 6  # never deployed
    results = asyncio.run(answer_items([cost, power, cost], "app", "kcloud-power"))
    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert results[1].error == "DeploymentMissing: the PowerPredictor deployment of app 'kcloud-power' is not deployed"
    started = time.monotonic()  # many power items wait once together, then fail at once: no slot held for long
    results = asyncio.run(answer_items([power] * 100 + [cost] * 20, "app", "kcloud-power", batch_timeout_s=5))
    assert [r.status for r in results] == ["error"] * 100 + ["ok"] * 20 and time.monotonic() - started < 2
    lookups["PowerPredictor"], limit = 0, 3  # registered a moment later
    assert [r.status for r in asyncio.run(answer_items([power], "app", "kcloud-power"))] == ["ok"]


def test_a_deployment_that_comes_up_after_the_batch_gave_up_answers_its_later_items(monkeypatch):
    """The give-up was for good: a power app that came up 31 s into a 10-minute batch left every later power item
    failed."""
    monkeypatch.setattr("app.batches.HANDLE_RETRY_S", 0.02)
    monkeypatch.setattr("app.batches.HANDLE_WAIT_S", 0.1)
    monkeypatch.setattr("app.batches.ITEMS_IN_FLIGHT", 1)  # one item at a time: the items come in order
    deployed_at = time.monotonic() + 0.3

    async def answered(value):
        await asyncio.sleep(0.05)
        return SimpleNamespace(model_dump=lambda mode: {"ok": True})

    def get_handle(name, app_name):
        if name == "PowerPredictor" and time.monotonic() < deployed_at:
            raise KeyError(name)
        return predictors(answered)

    serve_handles(monkeypatch, get_handle)
    monkeypatch.setattr("app.batches.to_response", lambda request, forecast: forecast)
    # 0.05 s each: the batch lasts past the deployment
    statuses = [r.status for r in asyncio.run(answer_items([POWER, COST] * 10, "app", "kcloud-power"))]
    assert statuses[0] == "error" and statuses[-2:] == ["ok", "ok"], statuses


def test_a_lookup_serves_controller_does_not_answer_fails_the_items_at_once_and_says_so(monkeypatch):
    """Each item failed on its own timeout as "TimeoutError: no answer in time"; now the batch waits HANDLE_WAIT_S
    for Serve's controller, as for a deployment not registered yet, then fails the items at once, saying why."""
    monkeypatch.setattr("app.batches.HANDLE_LOOKUP_TIMEOUT_S", 0.2)
    monkeypatch.setattr("app.batches.HANDLE_WAIT_S", 0.5)
    monkeypatch.setattr("app.batches.HANDLE_RETRY_S", 0.05)
    release = threading.Event()

    def get_handle(name, app_name):
        if name == "PowerPredictor":
            release.wait(5)  # Serve's controller busy
        return predictors()

    serve_handles(monkeypatch, get_handle)
    monkeypatch.setattr("app.batches.to_response", lambda request, forecast: forecast)
    started = time.monotonic()
    try:
        results = asyncio.run(answer_items([POWER] * 40 + [COST] * 5, "app", "kcloud-power"))
    finally:
        release.set()
    assert [r.status for r in results] == ["error"] * 40 + ["ok"] * 5 and time.monotonic() - started < 2
    assert results[0].error == ("DeploymentMissing: Serve's controller did not say within 0.2 s where the "
                                "PowerPredictor deployment of app 'kcloud-power' is")


def test_a_lookup_answered_after_its_timeout_within_the_wait_answers_the_items(monkeypatch):
    """A batch resumed while Serve's controller is slow to answer at start waits for it, as for a deployment that
    is not registered yet."""
    monkeypatch.setattr("app.batches.HANDLE_LOOKUP_TIMEOUT_S", 0.2)
    monkeypatch.setattr("app.batches.HANDLE_WAIT_S", 5)

    def slow_at_start(name, app_name):
        time.sleep(0.5)
        return predictors()

    serve_handles(monkeypatch, slow_at_start)
    monkeypatch.setattr("app.batches.to_response", lambda request, forecast: forecast)
    assert [r.status for r in asyncio.run(answer_items([POWER] * 3 + [COST], "app", "kcloud-power"))] == ["ok"] * 4


def test_a_batch_whose_results_cannot_be_stored_ends_failed_not_running(tmp_path, monkeypatch):
    """Regression: a final write that failed (a full volume) left the record "running" for good while the actor
    lived, polled by its client for ever."""
    from app import batches
    from core.records import RecordStore

    records = RecordStore(tmp_path, "batches")
    batch = records.create({"status": "pending", "items": []})

    async def answered(items, *args, **kwargs):
        return []

    real_update = records.update

    def update(batch_id, **fields):
        if "results" in fields:
            raise OSError(28, "No space left on device")
        return real_update(batch_id, **fields)

    monkeypatch.setattr(batches, "answer_items", answered)
    monkeypatch.setattr(records, "update", update)
    assert asyncio.run(batches.run_batch(records, batch["id"], "app", "power")) == "failed"
    assert records.get(batch["id"])["status"] == "failed"
    assert records.get(batch["id"])["error"] == batches.STORE_FAILED


def test_a_finished_batch_keeps_its_results_not_its_items_and_on_one_line(tmp_path, monkeypatch):
    """Regression: a 4.1 MB batch of history lists became a 35 MB record (every number indented on a line of its
    own, the items kept after they were answered): ~30 waiting batches passed the records' byte cap, and each batch
    that finished then had every other finished batch's results deleted long before their retention."""
    from app import batches
    from core.records import RecordStore

    records = RecordStore(tmp_path, "batches")
    items = [{"type": "power", "request": {"workload_id": "w", "features": {"power_watts": [200.5] * 10_080}}}]
    batch = records.create({"status": "pending", "items": items, "items_count": 1, "completed": 0, "results": []})
    path = tmp_path / "batches" / f"{batch['id']}.json"
    assert path.stat().st_size < 1.1 * len(json.dumps(items))  # not 8x indented

    async def answered(items, *args, **kwargs):
        return [BatchItemResult(index=0, status="ok", result={"point": [1.0] * 60})]

    monkeypatch.setattr(batches, "answer_items", answered)
    reads, get = [], records.get
    monkeypatch.setattr(records, "get", lambda record_id: reads.append(record_id) or get(record_id))
    assert asyncio.run(batches.run_batch(records, batch["id"], "app", "power")) == "done"
    assert len(reads) == 2  # review: read three times (a check of its status, then once for each update)
    done = records.get(batch["id"])
    assert done["items"] == [] and done["results"][0]["result"] == {"point": [1.0] * 60}
    assert path.stat().st_size < 2_000


@pytest.mark.parametrize("status", ["done", "failed"])
def test_a_batch_queued_again_after_it_ended_keeps_its_answer(tmp_path, monkeypatch, status):
    """Regression: a new queue actor ran a pending batch while its submitter, retrying on the former actor's
    handle, queued it again; the second run answered its emptied item list and stored `done` with no results over
    the first run's."""
    from app import batches
    from core.records import RecordStore

    records = RecordStore(tmp_path, "batches")
    batch = records.create({"status": status, "items": [], "items_count": 1, "completed": 1,
                            "results": [{"index": 0, "status": "ok", "result": {"point": [1.0]}}]})

    async def answered(items, *args, **kwargs):
        raise AssertionError("a finished batch is answered again")

    monkeypatch.setattr(batches, "answer_items", answered)
    assert asyncio.run(batches.run_batch(records, batch["id"], "app", "power")) == status
    kept = records.get(batch["id"])
    assert kept["status"] == status and kept["completed"] == 1 and len(kept["results"]) == 1
