"""Retraining jobs started by the API, as Ray tasks (prediction batches run in app/batch_queue.py).

The task writes its progress into the persisted record (app/records.py), so its outcome can be read back by
any ingress replica, also after the app restarts, and releases its model's retrain lock when it ends.
"""

from __future__ import annotations

import logging

import ray

from app.records import RecordStore
from app.retrain_jobs import RetrainLocks, TrainingData
from core.registry import ModelRegistry
from training.power.retrain import retrain_power
from training.power.retrain_spec import RetrainSpec

logger = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
def run_retrain(state_path: str, job_id: str, model_path: str, data: TrainingData, spec: RetrainSpec) -> str:
    """Retrain the power forecaster on `data` as a Ray task; record the registered version or the error."""
    store = RecordStore(state_path, "retrain")
    try:
        return _retrain(store, job_id, model_path, data, spec)
    finally:
        RetrainLocks(store).release(spec.model_id, job_id)


def _retrain(store: RecordStore, job_id: str, model_path: str, data: TrainingData, spec: RetrainSpec) -> str:
    store.update(job_id, status="running")
    try:
        result = retrain_power(data.frames(), spec, registry=ModelRegistry(model_path))
    except (ValueError, LookupError, OSError) as exc:  # bad data or config, too little data, unreadable model
        message = data.public(" ".join(str(exc).splitlines()))
        store.update(job_id, status="failed", message=f"train_lstm: error: {message}")
        return "failed"
    except Exception as exc:  # noqa: BLE001 - e.g. a failed Ray Train run: the job fails, its cause goes to the log
        logger.warning("retrain job %s failed", job_id, exc_info=True)
        store.update(job_id, status="failed", message=f"training failed: {type(exc).__name__}")
        return "failed"
    message = " ".join(f"train_lstm: {line}" for line in result.summary_lines())
    store.update(job_id, status="succeeded", registered_version=result.version, message=message)
    return "succeeded"
