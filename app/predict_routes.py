"""Routes of the cost forecast and of prediction batches (the power forecast is app/power_route.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from app.access import READ, WRITE
from app.errors import ApiError, responses, unavailable
from app.ingress_state import Ingress
from app.middleware import current_request_id
from app.power_api import MissingPowerHistory, to_history
from app.schemas import MAX_BATCH_ITEMS, BatchRequest, BatchStatus, CostPredictionRequest, CostPredictionResponse
from core.records import UNFINISHED
from deployments.cost import CostModelNotLoaded
from training.cost.catalog import UnknownGpuType

logger = logging.getLogger(__name__)
router = APIRouter()

RESULTS_MAX_BYTES = 32 * 2**20
"""The most result bytes one batch read answers (the rest by `next_offset`): within the 64 MiB that Serve's proxy
takes from a replica (core/serve_tuning.py), whatever the models' horizons."""


def batch_status(record: dict, offset: int = 0, limit: int = MAX_BATCH_ITEMS) -> BatchStatus:
    """The record as the API shows it, with the results of items `offset` to `offset + limit - 1`, as many of them
    as fit in RESULTS_MAX_BYTES (at least one); `next_offset` names the first result left out, if any."""
    results = record.get("results", [])
    shown, size = [], 0
    for result in results[offset:offset + limit]:
        size += len(json.dumps(result, separators=(",", ":")))
        if shown and size > RESULTS_MAX_BYTES:
            break
        shown.append(result)
    following = offset + len(shown)
    return BatchStatus(batch_id=record["id"], status=record["status"], created_at=record["created_at"],
                       updated_at=record["updated_at"], items=record["items_count"], completed=record["completed"],
                       results=shown, results_offset=offset,
                       next_offset=following if following < len(results) else None, error=record.get("error"))


@router.post("/api/v1/predict/cost", response_model=CostPredictionResponse, dependencies=[READ],
             responses=responses(401, 413, 415, 503))
async def predict_cost(request: CostPredictionRequest, replica: Ingress) -> CostPredictionResponse:
    """Estimate the cost of a resource request, with breakdown and interval."""
    try:  # the model runs in this replica (under a millisecond): a request takes one hop, like the power route's
        estimate = await replica.cost_model.predict(request)
    except UnknownGpuType:  # a 422 naming the field (app/errors.py)
        raise
    except CostModelNotLoaded as exc:  # why (a path, an error) goes to the log only
        logger.warning("request %s: %s", current_request_id(), exc)
        model_id = replica.args.cost_model_id
        raise ApiError(503, [], f"no version of the cost model {model_id} could be loaded (the service's log says why):"
                                f" train one (python -m training.train_gbm --model-id {model_id}) or activate one "
                                "that loads", "unavailable") from exc
    except Exception as exc:  # noqa: BLE001
        raise unavailable("the cost model", exc) from exc
    return CostPredictionResponse.model_validate(estimate.model_dump())


@router.post("/api/v1/predict/batch", response_model=BatchStatus, status_code=202, dependencies=[WRITE],
             responses=responses(401, 403, 413, 415, 429, 503))
async def submit_batch(request: BatchRequest, replica: Ingress) -> BatchStatus:
    """Queue many power/cost requests; read the results back by batch id (kept for args.batches.retention
    after the batch ends)."""
    for index, item in enumerate(request.items):
        if item.type == "power":
            try:
                to_history(item.request)
            except MissingPowerHistory as exc:
                raise ApiError(422, ["body", "items", index, "request", "features"],
                               "a batch item brings its own lists (stored telemetry is not read in a batch): "
                               "power_watts, or features to estimate it from") from exc
    record = await _created_batch(replica, {
        "status": "pending", "items_count": len(request.items), "completed": 0, "results": [],
        "items": [item.model_dump(mode="json") for item in request.items],
    })
    queued = False
    try:
        queued = await replica.batch_queue.submit(record["id"])  # ActorUnavailable: 503 (app/errors.py)
    finally:
        if not queued:  # refused or failed: nothing is left to run later
            await asyncio.to_thread(_delete_batch, replica, record["id"])
    if not queued:
        limits = replica.args.batches
        raise ApiError(429, [], f"the batch queue is full (at most {limits.max_waiting} batches, or "
                                f"{limits.max_waiting_bytes >> 20} MiB of them, wait); try again later", "queue_full")
    return batch_status(record)


async def _created_batch(replica: Any, record: dict[str, Any]) -> dict[str, Any]:
    """The batch's record, written off the event loop (up to 4 MiB, fsynced). Should the request be cancelled
    meanwhile (its client gone), the record written all the same is deleted once written: a pending record nobody
    queued would otherwise wait for good and be run by the next queue actor, for a batch nobody knows the id of."""
    creating = asyncio.ensure_future(asyncio.to_thread(replica.batches.create, record))
    try:
        return await asyncio.shield(creating)
    except asyncio.CancelledError:
        creating.add_done_callback(lambda done: _delete_unqueued(replica, done))
        raise
    except OSError as exc:  # e.g. a full or read-only state volume
        logger.warning("batch not accepted: its record cannot be written: %s", exc)
        raise ApiError(503, [], "the batch could not be recorded (a storage error on the state volume); try again",
                       "unavailable") from None


def _delete_batch(replica: Any, batch_id: str) -> None:
    """Delete a batch nobody will run; a storage error is logged, and the answer already chosen stands."""
    try:
        replica.batches.delete(batch_id)
    except OSError as exc:
        logger.warning("batch %s: not queued, and its record could not be deleted: %s", batch_id, exc)


def _delete_unqueued(replica: Any, created: asyncio.Future) -> None:
    if created.cancelled() or created.exception() is not None:
        return
    batch_id = created.result()["id"]
    try:
        deleting = asyncio.get_running_loop().run_in_executor(None, replica.batches.delete, batch_id)
    except RuntimeError:  # the replica is shutting down: its queue resumes the record at the next start
        logger.warning("batch %s: its request was cancelled, and the record could not be deleted", batch_id)
        return
    def logged(done: asyncio.Future) -> None:
        if not done.cancelled() and done.exception() is not None:
            logger.warning("batch %s: its request was cancelled, and deleting the record failed: %s", batch_id,
                           done.exception())

    deleting.add_done_callback(logged)


@router.get("/api/v1/predict/batch/{batch_id}", response_model=BatchStatus, dependencies=[READ],
            responses=responses(401, 404, 503))
async def get_batch(
        batch_id: Annotated[str, Path(max_length=64)], replica: Ingress,
        offset: Annotated[int, Query(ge=0, le=MAX_BATCH_ITEMS, description="the first item's result shown")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_BATCH_ITEMS, description="results shown at most")] = MAX_BATCH_ITEMS,
) -> Response:
    """Status of a batch and, once done, every item's result or error (a page of them with offset and limit)."""
    record = await asyncio.to_thread(replica.batches.get, batch_id)  # a done batch's record is tens of MB
    if record["status"] in UNFINISHED:
        try:
            await replica.batch_queue.resume_if_lost()
        except Exception:  # noqa: BLE001 - the status is still answered; the next read tries again
            logger.warning("batch %s: cannot reach or restart the batch queue", batch_id, exc_info=True)
    # up to 32 MiB of results: written as JSON off the event loop too (FastAPI would serialize a model on it)
    body = await asyncio.to_thread(lambda: batch_status(record, offset, limit).model_dump_json())
    return Response(content=body, media_type="application/json")
