"""run_retrain records the typed outcome of retrain_power (called in-process here, without Ray)."""

from __future__ import annotations

import pytest

from app import tasks
from core.records import RecordStore
from tests.fakes.trainer import serve_lstm_alone, untrained
from tests.paths import TEST_DATA
from training.cost.catalog import generate_job_records
from training.cost.retrain import CostRetrainSpec
from training.power.retrain_spec import RetrainSpec
from training.retrain_attempt import HUNG_EXIT_STATUS, KEEP_VERSIONS, end_hung_process
from training.retrain_data import JobRecordsData, TrainingData
from training.retrain_lock import RetrainLocks
from training.settings import TrainingConfig

SMALL = TrainingConfig.model_validate({
    "predictor": {"step": "2min", "prediction_horizon": "20min"},
    "models": {"power_predictor": {"sequence_length": 15, "hidden_size": 8, "num_layers": 1}},
})


def pending(store: RecordStore, model_id: str) -> dict:
    """A job as `RetrainJobs.submit` leaves it for its task: recorded pending, holding the model's lock."""
    job = store.create({"status": "pending", "model_id": model_id})
    RetrainLocks(store).acquire(model_id, job["id"])
    return job


def _run(tmp_path, data: str, spec: RetrainSpec) -> tuple[str, dict]:
    store = RecordStore(tmp_path / "state", "retrain")
    job = pending(store, spec.model_id)
    outcome = tasks.run_retrain._function(str(tmp_path / "state"), job["id"], str(tmp_path / "models"),
                                          TrainingData(source="csv", path=data), spec, KEEP_VERSIONS)
    return outcome, store.get(job["id"])


def test_a_retrain_records_the_registered_version_and_the_decision(tmp_path, monkeypatch: pytest.MonkeyPatch):
    serve_lstm_alone(monkeypatch)
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
    serve_lstm_alone(monkeypatch)
    outcome, job = _run(tmp_path, str(TEST_DATA / "upm_sample.csv"), RetrainSpec(config=SMALL, verbose=False))
    assert outcome == "failed" and job["message"] == "training failed: RuntimeError"


def test_a_task_for_a_job_that_no_longer_holds_its_model_does_not_train(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """What a task Ray ran again finds after the job was failed as stopped and its model freed."""
    monkeypatch.setattr("training.power.dataset.train_power_lstm", untrained(0.0))
    store = RecordStore(tmp_path / "state", "retrain")
    job = store.create({"status": "failed", "model_id": "power_lstm", "message": "stopped: ..."})
    outcome = tasks.run_retrain._function(str(tmp_path / "state"), job["id"], str(tmp_path / "models"),
                                          TrainingData(source="csv", path=str(TEST_DATA / "upm_sample.csv")),
                                          RetrainSpec(config=SMALL, verbose=False), KEEP_VERSIONS)
    assert outcome == "failed" and store.get(job["id"])["message"] == "stopped: ..."
    assert not (tmp_path / "models").exists()


def test_a_retrain_records_the_decision_both_scores_and_the_data_span(tmp_path, monkeypatch: pytest.MonkeyPatch):
    serve_lstm_alone(monkeypatch)
    monkeypatch.setattr("training.power.dataset.train_power_lstm", untrained(0.0))
    _run(tmp_path, str(TEST_DATA / "upm_sample.csv"), RetrainSpec(config=SMALL, verbose=False))
    monkeypatch.setattr("training.power.dataset.train_power_lstm", untrained(5.0))
    _, job = _run(tmp_path, str(TEST_DATA / "upm_sample.csv"), RetrainSpec(config=SMALL, verbose=False))
    assert (job["registered_version"], job["decision"], job["activated"]) == (2, "did_not_beat", False)
    assert job["reason"].startswith("did not beat active version 1: holdout MAE ")
    assert job["champion"]["version"] == 1 and job["champion"]["mae"] < job["champion"]["challenger_mae"]
    assert job["challenger"]["mae"] == job["champion"]["challenger_mae"]
    assert job["data_span"]["rows"] > 0 and len(job["data_span"]["series"]) == 3


@pytest.mark.slow
def test_a_cost_retrain_records_its_decision(tmp_path):
    jobs_file = tmp_path / "jobs.csv"
    generate_job_records(600, 1).to_csv(jobs_file, index=False)
    config = TrainingConfig.model_validate({"models": {"cost_predictor": {"n_estimators": 20}}})
    store = RecordStore(tmp_path / "state", "retrain")
    for expected in ("no_incumbent", "beat_incumbent"):  # the same jobs again: no worse, so promoted
        job = pending(store, "cost_gbm")
        outcome = tasks.run_retrain._function(str(tmp_path / "state"), job["id"], str(tmp_path / "models"),
                                              JobRecordsData(source="csv", path=str(jobs_file), label="jobs.csv"),
                                              CostRetrainSpec(config=config), KEEP_VERSIONS)
        record = store.get(job["id"])
        assert outcome == "succeeded" and (record["decision"], record["activated"]) == (expected, True), record
        assert record["message"].startswith("train_gbm: registered cost_gbm version ")
        assert record["data_span"] == {"rows": 600, "synthetic": False}
    assert record["champion"]["version"] == 1 and record["champion"]["mae"] == record["champion"]["challenger_mae"]


def test_a_bad_jobs_file_fails_the_cost_job_naming_it_not_its_path(tmp_path):
    jobs_file = tmp_path / "jobs.csv"
    jobs_file.write_text("cost\n1\n")
    store = RecordStore(tmp_path / "state", "retrain")
    job = pending(store, "cost_gbm")
    outcome = tasks.run_retrain._function(str(tmp_path / "state"), job["id"], str(tmp_path / "models"),
                                          JobRecordsData(source="csv", path=str(jobs_file), label="jobs.csv"),
                                          CostRetrainSpec(config=SMALL), KEEP_VERSIONS)
    message = store.get(job["id"])["message"]
    assert outcome == "failed" and message.startswith("train_gbm: error: jobs.csv: missing column(s) ")
    assert str(tmp_path) not in message


def test_a_task_taken_for_hung_ends_its_worker(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Regression: a hung retraining's Ray task was never ended; it held its worker (and the training's workers)
    for good. The task's hung handler ends its process with a status of its own."""
    import subprocess
    import sys

    handlers = []
    monkeypatch.setattr(tasks, "run_attempt", lambda *args, on_hung=None, **kwargs: handlers.append(on_hung))
    tasks.run_retrain._function(str(tmp_path), "job", str(tmp_path), None, None, KEEP_VERSIONS)
    assert handlers == [end_hung_process]
    ended = subprocess.run([sys.executable, "-c", "from training.retrain_attempt import end_hung_process as end\n"
                                                  "end()\nprint('still running')"],
                           capture_output=True, text=True, timeout=120)
    assert ended.returncode == HUNG_EXIT_STATUS and "still running" not in ended.stdout
