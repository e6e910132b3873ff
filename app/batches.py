"""One prediction batch answered: every item through its predictor deployment, the outcome on its record.

Runs in the batch queue's actor (app/batch_queue.py), on its event loop, where Serve handles work directly; the
record's reads and writes (tens of MB for a done batch, written and fsynced) run in a worker thread, so the other
running batch and the queue's calls from every ingress replica go on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from ray.serve.handle import DeploymentHandle

from app.errors import public_error
from app.power_api import to_history, to_response
from app.schemas import BatchItem, BatchItemResult
from core.handle_loop import LOOKUP_TIMEOUT_S, deployment_handle
from core.names import COST_DEPLOYMENT, POWER_DEPLOYMENT
from core.records import UNFINISHED, RecordStore

logger = logging.getLogger(__name__)

ITEM_TIMEOUT_S = 120.0
BATCH_TIMEOUT_S = 600.0
ITEMS_IN_FLIGHT = 16  # a batch's items in flight at once (the PowerPredictor batches them further)
HANDLE_RETRY_S = 2.0  # how often a deployment that is not deployed is looked up again
HANDLE_WAIT_S = 30.0  # how long a batch looks for a deployment that is not deployed before its items fail
HANDLE_LOOKUP_TIMEOUT_S = LOOKUP_TIMEOUT_S  # how long one lookup waits on Serve's controller
_ITEM = TypeAdapter(BatchItem)


class RefusedItem(str):
    """Why a stored item no longer passes the request schema (tightened since the batch was queued)."""


async def run_batch(records: RecordStore, batch_id: str, app_name: str, power_app_name: str) -> str:
    """Answer every item of a stored batch; its record ends `done` (per-item results) or `failed` (a reason).

    A batch already finished is left as it is (a new queue actor may queue one the former one ran, while its
    submitter still queues it): its status is returned.

    Raises:
        RecordNotFound: the record is gone (expired or deleted while it waited).
    """
    record, started = await asyncio.to_thread(records.update_if, batch_id,
                                              lambda stored: stored.get("status") in UNFINISHED, status="running")
    if not started:
        logger.info("batch %s queued again after it ended (%s): left as it is", batch_id, record.get("status"))
        return str(record.get("status"))
    try:
        items = [revalidated(item) for item in record["items"]]
        results = await answer_items(items, app_name, power_app_name,
                                     accepted_at=datetime.fromisoformat(record["created_at"]))
    except Exception as exc:  # noqa: BLE001 - the batch fails as a whole, with its reason on record
        logger.warning("batch %s failed", batch_id, exc_info=True)
        await asyncio.to_thread(records.update, batch_id, status="failed", error=reason(exc), items=[])
        return "failed"
    try:  # the items are answered: only the results are kept (the items of a 4 MiB request are as large again)
        await asyncio.to_thread(lambda: records.update(batch_id, status="done", completed=len(results),
                                                       results=[r.model_dump() for r in results], items=[]))
    except OSError as exc:  # e.g. a full volume: a small verdict may still fit, so the batch never reads "running"
        logger.warning("batch %s: its results could not be stored: %s", batch_id, exc)
        await asyncio.to_thread(records.update, batch_id, status="failed", error=STORE_FAILED, items=[])
        return "failed"
    return "done"


STORE_FAILED = "OSError: its results could not be stored (a storage error on the state volume); submit it again"


def revalidated(stored: Any) -> BatchItem | RefusedItem:
    """A stored item validated again on its own (a batch resumed after an upgrade may hold items that the
    schema now refuses): the item, or why it is refused."""
    try:
        return _ITEM.validate_python(stored)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"][2:])  # without the item's type and "request"
        return RefusedItem(f"ValidationError: {where + ': ' if where else ''}"
                           f"{error['msg'].removeprefix('Value error, ')}")


async def answer_items(items: list[Any], app_name: str, power_app_name: str, *, accepted_at: datetime | None = None,
                       batch_timeout_s: float = BATCH_TIMEOUT_S) -> list[BatchItemResult]:
    """Every item through its predictor, ITEMS_IN_FLIGHT at a time; one item's failure (or refusal) is that
    item's result. The batch has `batch_timeout_s` in all: an item still waiting or unanswered when it runs out
    gets a TimeoutError result, and every item answered before keeps its own. A power item without `end_time`
    ends at `accepted_at` (when the batch was accepted), not when it runs."""
    handles = _Handles({"power": (POWER_DEPLOYMENT, power_app_name), "cost": (COST_DEPLOYMENT, app_name)})
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
                try:
                    answer = await asyncio.wait_for(call(item), min(ITEM_TIMEOUT_S, left))
                except TimeoutError:
                    if left < ITEM_TIMEOUT_S:
                        return BatchItemResult(index=index, status="error", error=out_of_time)
                    raise
                body = to_response(item.request, answer) if item.type == "power" else answer
                return BatchItemResult(index=index, status="ok", result=body.model_dump(mode="json"))
            except DeploymentMissing as exc:
                return BatchItemResult(index=index, status="error", error=str(exc))
            except Exception as exc:  # noqa: BLE001 - one item's failure (answering or shaping it) is that item's
                return BatchItemResult(index=index, status="error", error=reason(exc))

    async def call(item: Any) -> Any:
        handle = await handles.get(item.type)
        if item.type == "power":
            return await handle.forecast.remote(to_history(item.request).model_copy(update={"as_of": accepted_at}))
        return await handle.predict.remote(item.request)

    return list(await asyncio.gather(*(one(index, item) for index, item in enumerate(items))))


class DeploymentMissing(LookupError):
    """A predictor deployment that items need is not deployed (the batch looked for it for HANDLE_WAIT_S), or Serve's
    controller did not say where it is in time."""


class _Handles:
    """The predictor deployments' handles, looked up when an item first needs one: a batch of cost items runs
    without the power app, and a batch resumed as the app starts waits for a deployment that is not registered yet,
    or for Serve's controller to say where it is (HANDLE_WAIT_S at most) rather than failing as a whole. After that
    wait, that type's items fail at once, so they never hold the slots other items wait for, and the deployment is
    looked for again once per HANDLE_WAIT_S (one that comes up later in a long batch answers its remaining items)."""

    def __init__(self, deployments: dict[str, tuple[str, str]]):
        self.deployments = deployments
        self.found: dict[str, DeploymentHandle] = {}
        self.missing_since: dict[str, float] = {}  # loop time of a type's first failed lookup
        self.given_up_at: dict[str, float] = {}  # loop time of a type's last failed lookup after the wait
        self.why: dict[str, str] = {}  # why a type's items fail at once, until HANDLE_WAIT_S after giving up

    async def get(self, item_type: str) -> DeploymentHandle:
        loop = asyncio.get_running_loop()
        while item_type not in self.found:
            gave_up = self.given_up_at.get(item_type)
            if gave_up is not None and loop.time() - gave_up < HANDLE_WAIT_S:
                raise DeploymentMissing(self.why[item_type])
            name, app = self.deployments[item_type]
            looked_at = loop.time()
            try:
                self.found[item_type] = await deployment_handle(name, app, HANDLE_LOOKUP_TIMEOUT_S)
            except (KeyError, TimeoutError) as exc:  # not deployed (yet), or Serve's controller slow to say
                why = self.not_deployed(item_type) if isinstance(exc, KeyError) else (
                    f"DeploymentMissing: Serve's controller did not say within {HANDLE_LOOKUP_TIMEOUT_S:g} s where "
                    f"the {name} deployment of app {app!r} is")
                if item_type not in self.missing_since:  # since the lookup began: a timed-out one waited already
                    self.missing_since[item_type] = looked_at
                    logger.info("batch: %s; looking again for up to %g s", why, HANDLE_WAIT_S)
                if gave_up is not None or loop.time() - self.missing_since[item_type] >= HANDLE_WAIT_S:
                    self.given_up_at[item_type], self.why[item_type] = loop.time(), why
                    continue
                await asyncio.sleep(max(0.0, HANDLE_RETRY_S - (loop.time() - looked_at)))  # a timed-out one waited
        return self.found[item_type]

    def not_deployed(self, item_type: str) -> str:
        name, app = self.deployments[item_type]
        return f"DeploymentMissing: the {name} deployment of app {app!r} is not deployed"


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
