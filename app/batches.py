"""One prediction batch answered: every item through its predictor deployment, the outcome on its record.

Runs in the batch queue's actor (app/batch_queue.py), on its event loop, where Serve handles work directly.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import TypeAdapter, ValidationError
from ray import serve

from app.errors import public_error
from app.power_api import to_history, to_response
from app.schemas import BatchItem, BatchItemResult
from core.names import COST_DEPLOYMENT, POWER_DEPLOYMENT
from core.records import RecordStore

logger = logging.getLogger(__name__)

ITEM_TIMEOUT_S = 120.0
BATCH_TIMEOUT_S = 600.0
ITEMS_IN_FLIGHT = 16  # a batch's items in flight at once (the PowerPredictor batches them further)
_ITEM = TypeAdapter(BatchItem)


class RefusedItem(str):
    """Why a stored item no longer passes the request schema (tightened since the batch was queued)."""


async def run_batch(records: RecordStore, batch_id: str, app_name: str, power_app_name: str) -> str:
    """Answer every item of a stored batch; its record ends `done` (per-item results) or `failed` (a reason).

    Raises:
        RecordNotFound: the record is gone (expired or deleted while it waited).
    """
    record = records.update(batch_id, status="running")
    try:
        items = [revalidated(item) for item in record["items"]]
        results = await answer_items(items, app_name, power_app_name)
    except Exception as exc:  # noqa: BLE001 - the batch fails as a whole, with its reason on record
        logger.warning("batch %s failed", batch_id, exc_info=True)
        records.update(batch_id, status="failed", error=reason(exc))
        return "failed"
    records.update(batch_id, status="done", completed=len(results), results=[r.model_dump() for r in results])
    return "done"


def revalidated(stored: Any) -> BatchItem | RefusedItem:
    """A stored item validated again on its own (a batch resumed after an upgrade may hold items that the
    schema, or the price catalog it checks against, now refuses): the item, or why it is refused."""
    try:
        return _ITEM.validate_python(stored)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"][2:])  # without the item's type and "request"
        return RefusedItem(f"ValidationError: {where + ': ' if where else ''}"
                           f"{error['msg'].removeprefix('Value error, ')}")


async def answer_items(items: list[Any], app_name: str, power_app_name: str,
                       batch_timeout_s: float = BATCH_TIMEOUT_S) -> list[BatchItemResult]:
    """Every item through its predictor, ITEMS_IN_FLIGHT at a time; one item's failure (or refusal) is that
    item's result. The batch has `batch_timeout_s` in all: an item still waiting or unanswered when it runs out
    gets a TimeoutError result, and every item answered before keeps its own."""
    power = serve.get_deployment_handle(POWER_DEPLOYMENT, app_name=power_app_name)
    cost = serve.get_deployment_handle(COST_DEPLOYMENT, app_name=app_name)
    slots = asyncio.Semaphore(ITEMS_IN_FLIGHT)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + batch_timeout_s
    out_of_time = f"TimeoutError: the batch's {batch_timeout_s:g} s ran out before this item was answered"

    async def one(index: int, item: Any) -> BatchItemResult:
        if isinstance(item, RefusedItem):
            return BatchItemResult(index=index, status="error", error=item)
        async with slots:
            left = deadline - loop.time()
            if left <= 0:
                return BatchItemResult(index=index, status="error", error=out_of_time)
            try:
                call = (power.forecast.remote(to_history(item.request)) if item.type == "power"
                        else cost.predict.remote(item.request))
                try:
                    answer = await asyncio.wait_for(call, min(ITEM_TIMEOUT_S, left))
                except TimeoutError:
                    if left < ITEM_TIMEOUT_S:
                        return BatchItemResult(index=index, status="error", error=out_of_time)
                    raise
                body = to_response(item.request, answer) if item.type == "power" else answer
                return BatchItemResult(index=index, status="ok", result=body.model_dump(mode="json"))
            except Exception as exc:  # noqa: BLE001 - one item's failure (answering or shaping it) is that item's
                return BatchItemResult(index=index, status="error", error=reason(exc))

    return list(await asyncio.gather(*(one(index, item) for index, item in enumerate(items))))


def reason(exc: BaseException) -> str:
    """What a user may read about a failure: a domain error's own message, else only its type (details: log)."""
    cause = getattr(exc, "cause", None) or exc  # a deployment's error arrives wrapped, with its cause
    known = public_error(cause)
    if known is not None:
        where = ".".join(str(part) for part in known.loc[1:])  # the request field, without "body"
        return f"{type(cause).__name__}: {where + ': ' if where else ''}{known.message}"
    if isinstance(cause, TimeoutError):
        return "TimeoutError: no answer in time"
    logger.warning("batch item failed: %r", cause)
    return type(cause).__name__
