"""What a failed attempt's record says: anyone who can read the API reads it, so no server path is in it."""

from __future__ import annotations

from core.registry import ModelRegistry
from training.retrain_attempt import public_message
from training.retrain_data import TrainingData


def test_the_data_file_registry_and_other_absolute_paths_are_not_shown(tmp_path):
    data = TrainingData(source="csv", path=str(tmp_path / "in" / "jobs.csv"), label="jobs.csv")
    registry = ModelRegistry(tmp_path / "models")
    text = (f"[Errno 20] Not a directory: '{tmp_path}/models/cost_gbm'\nreading {tmp_path}/in/jobs.csv; "
            "checkpoint at /var/lib/ray/storage/run-1/ckpt.pt failed")
    shown = public_message(text, data, registry)
    assert shown == ("[Errno 20] Not a directory: 'MODEL_PATH/cost_gbm' reading jobs.csv; checkpoint at "
                     ".../ckpt.pt failed")
