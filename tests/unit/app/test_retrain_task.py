"""run_retrain records the typed outcome of retrain_power (called in-process here, without Ray)."""

from __future__ import annotations

import pytest

from app import tasks
from app.records import RecordStore
from app.retrain_jobs import TrainingData
from tests.fakes.trainer import untrained
from tests.paths import TEST_DATA
from training.power.retrain_spec import RetrainSpec
from training.settings import TrainingConfig

SMALL = TrainingConfig.model_validate({
    "predictor": {"step": "2min", "prediction_horizon": "20min"},
    "models": {"power_predictor": {"sequence_length": 15, "hidden_size": 8, "num_layers": 1}},
})


def _run(tmp_path, data: str, spec: RetrainSpec) -> tuple[str, dict]:
    store = RecordStore(tmp_path / "state", "retrain")
    job = store.create({"status": "pending", "model_id": spec.model_id})
    outcome = tasks.run_retrain._function(str(tmp_path / "state"), job["id"], str(tmp_path / "models"),
                                          TrainingData(source="csv", path=data), spec)
    return outcome, store.get(job["id"])


def test_a_retrain_records_the_registered_version_and_the_decision(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("training.power.dataset.train_power_lstm", untrained(0.0))
    outcome, job = _run(tmp_path, str(TEST_DATA / "upm_sample.csv"), RetrainSpec(config=SMALL, verbose=False))
    assert outcome == "succeeded" and job["status"] == "succeeded" and job["registered_version"] == 1
    assert job["message"].startswith("train_lstm: registered power_lstm version 1; holdout MAE ")
    assert job["message"].endswith(" train_lstm: activated (no model was active)")


def test_a_domain_error_fails_the_job_with_its_reason(tmp_path):
    outcome, job = _run(tmp_path, str(tmp_path / "missing.csv"), RetrainSpec(config=SMALL, verbose=False))
    assert outcome == "failed" and job["status"] == "failed" and job.get("registered_version") is None
    assert job["message"].startswith("train_lstm: error:") and "missing.csv" in job["message"]


def test_an_unexpected_error_fails_the_job_without_its_details(tmp_path, monkeypatch: pytest.MonkeyPatch):
    def crash(*args, **kwargs):
        raise RuntimeError("worker 10.0.0.7 died\nTraceback ...")

    monkeypatch.setattr("training.power.dataset.train_power_lstm", crash)
    outcome, job = _run(tmp_path, str(TEST_DATA / "upm_sample.csv"), RetrainSpec(config=SMALL, verbose=False))
    assert outcome == "failed" and job["message"] == "training failed: RuntimeError"
