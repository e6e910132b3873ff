"""Retraining jobs started by the API, as Ray tasks (prediction batches run in app/batch_queue.py).

The task runs the attempt the way the scheduler does (training/retrain_attempt.py): its progress and outcome
go into the persisted record (core/records.py), readable by any ingress replica, also after the app
restarts, and the model's retrain lock is released when it ends.
"""

from __future__ import annotations

import ray

from core.records import RecordStore
from core.registry import ModelRegistry
from training.cost.retrain import CostRetrainSpec
from training.power.retrain_spec import RetrainSpec
from training.retrain_attempt import end_hung_process, run_attempt
from training.retrain_data import JobRecordsData, TrainingData


@ray.remote(num_cpus=0, max_retries=0)  # a worker that died leaves a silent record; a rerun would train twice
def run_retrain(state_path: str, job_id: str, model_path: str, data: TrainingData | JobRecordsData,
                spec: RetrainSpec | CostRetrainSpec, keep_versions: int) -> str:
    """Retrain the power forecaster or the cost model on `data` as a Ray task; record the outcome or the error. A
    task running past `KCLOUD_RETRAIN_MAX_DURATION` is failed as hung and its worker ended."""
    return run_attempt(RecordStore(state_path, "retrain"), job_id, data, spec, ModelRegistry(model_path),
                       keep_versions=keep_versions, on_hung=end_hung_process)
