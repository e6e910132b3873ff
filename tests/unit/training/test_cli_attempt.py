"""The training command lines take the model's retrain lock, as the API's jobs and the scheduler do: a model another
retraining holds is refused in one line naming it; a run is recorded, holds the model while it trains and publishes,
and frees it at the end. No Ray: the power runs train with tests.fakes.trainer and serve their LSTM alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.retrain_jobs import RetrainJobs, ServedModels
from app.schemas import RetrainJob
from app.settings import RetrainDefaults
from core.atomic_files import atomic_write_json
from core.records import RecordStore
from core.registry import ModelRegistry
from tests.fakes.trainer import serve_lstm_alone, untrained
from tests.paths import TEST_DATA
from training import train_gbm, train_lstm
from training.cli_attempt import CLI_STOPPED
from training.power.retrain import retrain_power
from training.retrain_lock import SILENT_AFTER_S, RetrainLocks

SMALL = ["--data", str(TEST_DATA / "upm_sample.csv"), "--step", "2min", "--horizon", "20min",
         "--sequence-length", "15", "--hidden-size", "8", "--quiet"]


@pytest.fixture
def models(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("training.power.dataset.train_power_lstm", untrained(0.0))
    serve_lstm_alone(monkeypatch)
    return tmp_path / "models"


def held_by(state_path, model_id: str, trigger: str, **fields) -> str:
    """An attempt of `trigger` holding `model_id`'s lock in `state_path`; its id."""
    records = RecordStore(state_path, "retrain")
    record = records.create({"status": "running", "model_id": model_id, "trigger": trigger, **fields})
    RetrainLocks(records).acquire(model_id, record["id"])
    return record["id"]


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error" in line or "Traceback" in line]


def test_train_lstm_refuses_a_model_an_api_job_retrains_naming_it(tmp_path, models, capsys):
    """Regression: train_lstm took no lock, so it trained and activated beside a running API job."""
    state = tmp_path / "service-state"
    job = held_by(state, "power_lstm", "api")
    code = train_lstm.main([*SMALL, "--model-path", str(models), "--state-path", str(state)])
    [line] = error_lines(capsys)
    assert code == 2 and line.startswith(f"train_lstm: error: power_lstm is being retrained by job {job} (started "
                                         "by POST /api/v1/models/retrain, since ")
    assert line.endswith(f"UTC); wait until it ends (GET /api/v1/models/retrain/{job}), then run this again")
    assert ModelRegistry(models).versions("power_lstm") == []
    records = RecordStore(state, "retrain")
    assert RetrainLocks(records).holder("power_lstm") == job and [r["id"] for r in records.newest(10)] == [job]


def test_train_gbm_refuses_a_model_the_scheduler_retrains(cli_state_path, tmp_path, capsys):
    """The lock is found in $KCLOUD_STATE_PATH without --state-path (tests/conftest.py sets it)."""
    job = held_by(cli_state_path, "cost_gbm", "interval")
    code = train_gbm.main(["--records", "200", "--model-path", str(tmp_path / "models")])
    [line] = error_lines(capsys)
    assert code == 2 and line.startswith(f"train_gbm: error: cost_gbm is being retrained by job {job} (started by "
                                         "the retrain scheduler, since ")
    assert ModelRegistry(tmp_path / "models").versions("cost_gbm") == []


def test_another_command_line_is_named_by_its_process(tmp_path, models, capsys):
    state = tmp_path / "state"
    job = held_by(state, "power_lstm", "cli", owner="train_lstm, pid 42 on trainer-1")
    assert train_lstm.main([*SMALL, "--model-path", str(models), "--state-path", str(state)]) == 2
    assert f"by job {job} (train_lstm, pid 42 on trainer-1, since " in error_lines(capsys)[0]


def test_a_run_holds_the_model_while_it_trains_is_recorded_and_frees_it(tmp_path, models, monkeypatch):
    state = tmp_path / "state"
    records = RecordStore(state, "retrain")
    holders = []

    def retrain(source, spec, registry):
        holders.append(RetrainLocks(records).holder(spec.model_id))
        return retrain_power(source, spec, registry=registry)

    monkeypatch.setattr("training.train_lstm.retrain_power", retrain)
    assert train_lstm.main([*SMALL, "--model-path", str(models), "--state-path", str(state)]) == 0
    [record] = records.newest(10)
    assert holders == [record["id"]] and RetrainLocks(records).holder("power_lstm") is None
    assert {"status": "succeeded", "trigger": "cli", "source": "csv", "data": "upm_sample.csv", "registered_version": 1,
            "decision": "no_incumbent", "activated": True, "champion": None}.items() <= record.items()
    assert record["message"].startswith("train_lstm: registered power_lstm version 1")
    assert RetrainJob.model_validate({**record, "job_id": record["id"]}).trigger == "cli"  # the API lists it


def test_a_failed_run_is_recorded_without_paths_and_frees_the_model(tmp_path, models, capsys):
    state, data = tmp_path / "state", tmp_path / "in" / "trace.csv"
    data.parent.mkdir()
    data.write_text("timestamp,node_id,power_watts,cpu_utilization\n"
                    + "".join(f"2026-01-01T00:{m:02d}:00Z,tiny,100,5\n" for m in range(4)))
    argv = ["--data", str(data), "--step", "1min", "--horizon", "5min", "--sequence-length", "10", "--quiet"]
    assert train_lstm.main([*argv, "--model-path", str(models), "--state-path", str(state)]) == 2
    records = RecordStore(state, "retrain")
    [record] = records.newest(10)
    assert record["status"] == "failed" and record["message"].startswith("train_lstm: error: ")
    assert str(tmp_path) not in record["message"] and RetrainLocks(records).holder("power_lstm") is None


def test_a_run_that_loses_the_model_while_training_publishes_nothing(tmp_path, models, monkeypatch, capsys):
    state = tmp_path / "state"
    records = RecordStore(state, "retrain")

    def retrain(source, spec, registry):
        [running] = records.unfinished()
        RetrainLocks(records).fail(spec.model_id, running["id"], "stopped: taken for a test", lambda _record: True)
        return retrain_power(source, spec, registry=registry)

    monkeypatch.setattr("training.train_lstm.retrain_power", retrain)
    assert train_lstm.main([*SMALL, "--model-path", str(models), "--state-path", str(state)]) == 2
    [line] = error_lines(capsys)
    assert line.startswith("train_lstm: error: retrain attempt ") and "no longer holds power_lstm" in line
    assert ModelRegistry(models).versions("power_lstm") == []
    assert records.newest(10)[0]["message"] == "stopped: taken for a test"


def silent_cli_run(state) -> str:
    records = RecordStore(state, "retrain")
    record = records.create({"status": "running", "model_id": "power_lstm", "trigger": "cli"})
    RetrainLocks(records).acquire("power_lstm", record["id"])
    record["updated_at"] = (datetime.now(UTC) - timedelta(seconds=SILENT_AFTER_S + 60)).isoformat()
    atomic_write_json(records.folder / f"{record['id']}.json", record)
    return record["id"]


def test_a_run_whose_process_died_is_failed_by_the_next_run_and_by_the_api(tmp_path, models):
    state = tmp_path / "state"
    dead = silent_cli_run(state)
    assert train_lstm.main([*SMALL, "--model-path", str(models), "--state-path", str(state)]) == 0
    records = RecordStore(state, "retrain")
    assert (records.get(dead)["status"], records.get(dead)["message"]) == ("failed", CLI_STOPPED)
    other = tmp_path / "other-state"
    dead = silent_cli_run(other)
    jobs = RetrainJobs(str(other), str(models), None, RetrainDefaults(), ServedModels(("power_lstm",), "cost_gbm"))
    assert {job["id"]: job["status"] for job in jobs.newest(None, 10)} == {dead: "failed"}
    assert jobs.locks.holder("power_lstm") is None


def test_a_terminated_run_is_recorded_and_frees_the_model_at_once(tmp_path):
    """Regression: SIGTERM (`ray job stop`, a pod deleted) ended the process without its `finally`, so the model
    stayed locked and the record "running" until they went silent 5 min later."""
    import os
    import signal

    from training.cli_attempt import CliRun
    from training.retrain_data import TrainingData

    state = tmp_path / "state"
    run = CliRun("train_lstm", "power_lstm", TrainingData(source="store"), str(state),
                 ModelRegistry(tmp_path / "models"))

    def train(_registry):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the run")

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        run.run(train, lambda _result: None)
    assert stopped.value.code == 128 + signal.SIGTERM
    records = RecordStore(state, "retrain")
    [record] = records.newest(10)
    assert record["status"] == "failed" and record["message"] == "train_lstm: terminated"
    assert RetrainLocks(records).holder("power_lstm") is None
    assert signal.getsignal(signal.SIGTERM) is before  # the process's handler again


def test_a_run_without_a_state_path_where_none_exists_says_no_service_shares_its_lock(tmp_path, monkeypatch, capsys):
    """A run from another directory took its lock in a ./state of its own, beside the service's, without a word."""
    monkeypatch.delenv("KCLOUD_STATE_PATH")
    monkeypatch.chdir(tmp_path)
    assert train_gbm.main(["--records", "200", "--model-path", str(tmp_path / "models")]) == 0
    [note] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train_gbm: note: ")]
    assert note.startswith(f"train_gbm: note: no ./state in {tmp_path}: this run takes the model's retrain lock in a "
                           "new one, which no running service shares")
    assert (tmp_path / "state" / "retrain").is_dir()
    assert train_gbm.main(["--records", "200", "--model-path", str(tmp_path / "models")]) == 0  # ./state exists now
    assert "note: no ./state" not in capsys.readouterr().err


def test_regression_a_command_line_run_deletes_no_record_of_the_service(tmp_path):
    """It expired finished records after a fixed 90 days, whatever the service's args.retrain.retention (365 days,
    say) kept them for."""
    state = tmp_path / "state"
    records = RecordStore(state, "retrain")
    old = records.create({"status": "succeeded", "model_id": "other", "trigger": "api"})
    path = state / "retrain" / f"{old['id']}.json"
    atomic_write_json(path, {**old, "updated_at": (datetime.now(UTC) - timedelta(days=200)).isoformat()})
    code = train_gbm.main(["--records", "300", "--model-path", str(tmp_path / "models"), "--state-path", str(state)])
    assert code == 0 and path.exists()


def test_keep_versions_prunes_after_a_success_as_the_services_attempts_do(tmp_path, capsys):
    """The RayCronJob's daily train_lstm never pruned: one version a day stayed on the models volume for good."""
    models, state = str(tmp_path / "models"), str(tmp_path / "state")
    base = ["--records", "300", "--model-path", models, "--state-path", state]
    assert train_gbm.main(base) == 0  # 1: served
    for _ in range(2):
        assert train_gbm.main([*base, "--no-activate"]) == 0
    assert train_gbm.main([*base, "--no-activate", "--keep-versions", "1"]) == 0
    assert ModelRegistry(models).versions("cost_gbm") == [1, 4]  # the served one and the newest
    assert "train_gbm: pruned cost_gbm versions [2, 3] (--keep-versions 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_gbm.main([*base, "--keep-versions", "0"])


@pytest.mark.parametrize("source", ["flag", "env"])
def test_a_state_path_that_is_a_file_is_refused_naming_where_it_came_from(tmp_path, models, monkeypatch, capsys,
                                                                          source):
    """It showed a bare "[Errno 20] Not a directory: '…/retrain'"."""
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    argv = [*SMALL, "--model-path", str(models)]
    if source == "flag":
        argv += ["--state-path", str(taken)]
    else:
        monkeypatch.setenv("KCLOUD_STATE_PATH", str(taken / "state"))
    assert train_lstm.main(argv) == 2
    err = capsys.readouterr().err
    label = "--state-path" if source == "flag" else "$KCLOUD_STATE_PATH"
    assert f"{label} '" in err and "cannot be written" in err and "is a file" in err and "Traceback" not in err
    assert not models.exists()


def test_a_prune_that_cannot_read_a_version_just_now_leaves_the_run_succeeded(tmp_path, monkeypatch, capsys):
    """Regression (review): the registry's ModelUnreadable escaped `--keep-versions`' prune: a run that registered
    its version exited 2, its record saying its scores could not be recorded."""
    from core.registry import ModelUnreadable

    def unreadable_prune(self, model_id, keep):
        raise ModelUnreadable(model_id, 1, "metadata.json cannot be read: [Errno 5] Input/output error")

    monkeypatch.setattr(ModelRegistry, "prune", unreadable_prune)
    models, state = str(tmp_path / "models"), str(tmp_path / "state")
    assert train_gbm.main(["--records", "300", "--model-path", models, "--state-path", state,
                           "--keep-versions", "1"]) == 0
    assert ModelRegistry(models).versions("cost_gbm") == [1]
    assert [job["status"] for job in RecordStore(state, "retrain").newest(5)] == ["succeeded"]
