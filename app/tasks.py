"""Background work started by the API, as Ray tasks: prediction batches and retraining jobs.

Each task writes its progress into the persisted record (app/records.py), so its outcome can be read
back by any ingress replica, also after the app restarts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from pydantic import TypeAdapter
from ray import serve

from app.power_api import to_history, to_response
from app.records import RecordStore
from app.schemas import BatchItem, BatchItemResult
from core.handle_loop import run_with_handles
from core.names import COST_DEPLOYMENT, POWER_DEPLOYMENT
from core.registry import ModelRegistry
from core.telemetry_csv import load_telemetry_csv
from training.power.retrain import retrain_power
from training.power.retrain_spec import RetrainSpec

logger = logging.getLogger(__name__)

ITEM_TIMEOUT_S = 120.0
_ITEMS = TypeAdapter(list[BatchItem])


@ray.remote(num_cpus=0)
def run_batch(state_path: str, batch_id: str, app_name: str, power_app_name: str) -> str:
    """Answer every item of a stored batch through the app's predictor deployments."""
    store = RecordStore(state_path, "batches")
    record = store.update(batch_id, status="running")
    try:
        items = _ITEMS.validate_python(record["items"])
        results = run_with_handles(_answer(items, app_name, power_app_name), ITEM_TIMEOUT_S * 2)
    except Exception as exc:  # noqa: BLE001 - the batch fails as a whole, with its reason on record
        store.update(batch_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        return "failed"
    store.update(batch_id, status="done", completed=len(results), results=[r.model_dump() for r in results])
    return "done"


async def _answer(items: list[Any], app_name: str, power_app_name: str) -> list[BatchItemResult]:
    """Every item through its predictor, concurrently (the PowerPredictor batches them)."""
    power = serve.get_deployment_handle(POWER_DEPLOYMENT, app_name=power_app_name)
    cost = serve.get_deployment_handle(COST_DEPLOYMENT, app_name=app_name)

    async def one(index: int, item: Any) -> BatchItemResult:
        try:
            call = (power.forecast.remote(to_history(item.request)) if item.type == "power"
                    else cost.predict.remote(item.request))
            answer = await asyncio.wait_for(call, ITEM_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - one item's failure is that item's result
            return BatchItemResult(index=index, status="error", error=_reason(exc))
        body = to_response(item.request, answer) if item.type == "power" else answer
        return BatchItemResult(index=index, status="ok", result=body.model_dump(mode="json"))

    return list(await asyncio.gather(*(one(index, item) for index, item in enumerate(items))))


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__}: {cause}".split("\n")[0]


@ray.remote(num_cpus=0)
def run_retrain(state_path: str, job_id: str, model_path: str, data: str, spec: RetrainSpec) -> str:
    """Retrain the power forecaster on the CSV `data` as a Ray task; record the registered version or the error."""
    store = RecordStore(state_path, "retrain")
    store.update(job_id, status="running")
    try:
        result = retrain_power(lambda _step_s: load_telemetry_csv(data), spec, registry=ModelRegistry(model_path))
    except (ValueError, LookupError, OSError) as exc:  # bad data or config, too little data, unreadable model
        store.update(job_id, status="failed", message=f"train_lstm: error: {' '.join(str(exc).splitlines())}")
        return "failed"
    except Exception as exc:  # noqa: BLE001 - e.g. a failed Ray Train run: the job fails, its cause goes to the log
        logger.warning("retrain job %s failed", job_id, exc_info=True)
        store.update(job_id, status="failed", message=f"training failed: {type(exc).__name__}")
        return "failed"
    message = " ".join(f"train_lstm: {line}" for line in result.summary_lines())
    store.update(job_id, status="succeeded", registered_version=result.version, message=message)
    return "succeeded"
