"""A retraining that returned has registered its version and succeeded, whatever fails after: its outcome not
computed (the new version's metadata unreadable), Ctrl-C / SIGTERM as its heartbeat stops, its record not written,
its lock not freed. The record and the command line's exit say the version was registered, naming it; a warning
says what was not done (with the traceback of an outcome that failed); a lock left behind never blocks the next
attempt for good. No Ray, nothing trained but by train_gbm (seconds)."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from core.records import RecordStore
from core.registry import ModelRegistry
from training import retrain_attempt, train_gbm
from training.cli_attempt import CliRun
from training.retrain_attempt import AttemptOutcome, run_attempt
from training.retrain_data import TrainingData
from training.retrain_lock import RetrainLocks

UNREADABLE = OSError(5, "Input/output error")


def weights(tmp_path):
    source = tmp_path / "weights"
    source.mkdir(exist_ok=True)
    (source / "w.bin").write_bytes(b"0")
    return source


def publishes(tmp_path):
    """A training that publishes and activates a version of "m" through the registry it is given; its result."""
    def train(held: ModelRegistry) -> SimpleNamespace:
        version = held.publish("m", weights(tmp_path), model_type="lstm").version
        return SimpleNamespace(model_id="m", version=version, decision="no_incumbent", activated=True)

    return train


def fails(exc: BaseException):
    def outcome(*_args, **_kwargs):
        raise exc

    return outcome


def unwritable(monkeypatch: pytest.MonkeyPatch, status: str) -> None:
    """Records can no longer be written once an update ends them with `status`."""
    update = RecordStore.update

    def refuse(self, job_id, **fields):
        if fields.get("status") == status:
            raise UNREADABLE
        return update(self, job_id, **fields)

    monkeypatch.setattr(RecordStore, "update", refuse)


def only_record(records: RecordStore) -> dict:
    [record] = records.newest(10)
    return record


def cli_run(tmp_path) -> CliRun:
    return CliRun("train_lstm", "m", TrainingData(source="store"), str(tmp_path / "state"),
                  ModelRegistry(tmp_path / "models"))


def test_a_cli_run_whose_outcome_fails_after_publishing_succeeds_naming_the_version(tmp_path, caplog):
    """Regression: the run was recorded as failed (and the command line exited 2) though its version was active."""
    with caplog.at_level(logging.WARNING):
        result = cli_run(tmp_path).run(publishes(tmp_path), fails(UNREADABLE))
    assert result.version == 1 and ModelRegistry(tmp_path / "models").active_version("m") == 1
    records = RecordStore(tmp_path / "state", "retrain")
    record = only_record(records)
    assert {"status": "succeeded", "registered_version": 1, "decision": "no_incumbent", "activated": True,
            "challenger": None}.items() <= record.items()
    assert record["message"] == "train_lstm: registered m version 1 (activated); its scores could not be recorded " \
                                "(OSError)"
    assert "registered m version 1, but its scores could not be recorded: OSError" in caplog.text
    assert RetrainLocks(records).holder("m") is None


def test_a_cli_run_stopped_after_publishing_is_recorded_as_registered(tmp_path):
    """Regression: Ctrl-C (or SIGTERM) between the publication and the record failed the run as interrupted."""
    with pytest.raises(KeyboardInterrupt):
        cli_run(tmp_path).run(publishes(tmp_path), fails(KeyboardInterrupt()))
    records = RecordStore(tmp_path / "state", "retrain")
    record = only_record(records)
    assert (record["status"], record["registered_version"]) == ("succeeded", 1)
    assert record["message"].endswith("its scores could not be recorded (interrupted)")
    assert RetrainLocks(records).holder("m") is None


def test_an_outcome_that_fails_logs_its_traceback_and_records_only_its_type(tmp_path, caplog):
    """Regression: the warning had no traceback, so a bug in power_outcome / cost_outcome (a TypeError) could not
    be traced from the logs."""
    with caplog.at_level(logging.WARNING):
        cli_run(tmp_path).run(publishes(tmp_path), fails(TypeError("unsupported operand type(s)")))
    [warning] = [entry for entry in caplog.records if "scores could not be recorded" in entry.getMessage()]
    assert warning.exc_info is not None and warning.exc_info[0] is TypeError
    record = only_record(RecordStore(tmp_path / "state", "retrain"))
    assert record["message"].endswith("its scores could not be recorded (TypeError)")
    assert "Traceback" not in json.dumps(record) and str(tmp_path) not in json.dumps(record)


def terminate() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # CliRun turns it into SystemExit(143)


def interrupt() -> None:
    raise KeyboardInterrupt  # Ctrl-C


def exits() -> None:
    raise SystemExit(143)  # a SIGTERM where the process turns it into SystemExit (a Ray worker)


def stopped_as_the_heartbeat_stops(monkeypatch: pytest.MonkeyPatch, module: str, stop: Callable[[], None]) -> None:
    """`module`'s heartbeat, stopped by `stop` after its block ran: the interruption reaches the run as the beat
    thread is joined."""
    beating = retrain_attempt.heartbeat

    @contextmanager
    def heartbeat(*args, **kwargs) -> Iterator[None]:
        with beating(*args):
            yield
            stop()

    monkeypatch.setattr(f"{module}.heartbeat", heartbeat)


@pytest.mark.parametrize("stop", [terminate, interrupt])
def test_a_cli_run_stopped_as_its_heartbeat_stops_is_recorded_as_registered(stop, tmp_path, monkeypatch):
    """Regression: SIGTERM or Ctrl-C after `train` returned, as the heartbeat thread was joined, failed the run
    ("interrupted" / "terminated") although its version was registered and active."""
    stopped_as_the_heartbeat_stops(monkeypatch, "training.cli_attempt", stop)
    with pytest.raises((SystemExit, KeyboardInterrupt)):  # the process still ends
        cli_run(tmp_path).run(publishes(tmp_path), fails(AssertionError("outcome read after the interruption")))
    records = RecordStore(tmp_path / "state", "retrain")
    record = only_record(records)
    assert {"status": "succeeded", "registered_version": 1, "activated": True}.items() <= record.items()
    assert record["message"] == "train_lstm: registered m version 1 (activated); its scores could not be recorded " \
                                "(interrupted)"
    assert RetrainLocks(records).holder("m") is None


def unreleasable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RetrainLocks, "release", fails(UNREADABLE))


def gbm(tmp_path, state, *flags: str) -> int:
    return train_gbm.main(["--records", "200", "--model-path", str(tmp_path / "models"), "--state-path", str(state),
                           *flags])


@pytest.mark.parametrize("fault", ["outcome", "release"])
def test_train_gbm_exits_0_naming_its_version_when_what_follows_the_publication_fails(
        fault, tmp_path, monkeypatch, capsys, caplog):
    """Regression: exit 2 ("train_gbm: error: ...") after the version was registered and activated; a lock it could
    not free is taken over by the next run at once (its record has ended)."""
    state = tmp_path / "state"
    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING):
        if fault == "outcome":
            patch.setattr("training.train_gbm.cost_outcome", fails(UNREADABLE))
        else:
            unreleasable(patch)
        assert gbm(tmp_path, state) == 0
    err = capsys.readouterr().err
    assert "train_gbm: registered cost_gbm version 1" in err and "error" not in err
    warned = ("registered cost_gbm version 1, but its scores could not be recorded" if fault == "outcome" else
              "its lock on cost_gbm was not released")
    assert warned in caplog.text
    records = RecordStore(state, "retrain")
    first = only_record(records)
    assert (first["status"], first["registered_version"], first["activated"]) == ("succeeded", 1, True)
    assert RetrainLocks(records).holder("cost_gbm") == (first["id"] if fault == "release" else None)
    assert gbm(tmp_path, state) == 0  # not refused: the lock left behind is stale
    assert ModelRegistry(tmp_path / "models").versions("cost_gbm") == [1, 2]
    assert RetrainLocks(records).holder("cost_gbm") is None


def test_train_gbm_exits_0_naming_its_version_when_its_forced_activation_fails(tmp_path, monkeypatch, capsys):
    """Regression: exit 2 and a failed record although the publication had registered the version."""
    state = tmp_path / "state"
    assert gbm(tmp_path, state) == 0
    monkeypatch.setattr(ModelRegistry, "activate", fails(UNREADABLE))
    assert gbm(tmp_path, state, "--force-activate") == 0
    err = capsys.readouterr().err
    assert "train_gbm: registered cost_gbm version 2" in err and "error" not in err
    record = RecordStore(state, "retrain").newest(1)[0]
    assert {"status": "succeeded", "registered_version": 2, "decision": "activation_failed",
            "activated": False}.items() <= record.items()
    assert ModelRegistry(tmp_path / "models").active_version("cost_gbm") == 1


def service_attempt(tmp_path) -> tuple[RecordStore, str]:
    """A recorded attempt holding model "m", as the API or the scheduler starts one."""
    records = RecordStore(tmp_path / "state", "retrain")
    job = records.create({"status": "pending", "model_id": "m", "trigger": "api"})["id"]
    RetrainLocks(records).acquire("m", job)
    return records, job


def attempt(tmp_path, records: RecordStore, job: str) -> str:
    data = TrainingData(source="csv", path=str(tmp_path / "unread.csv"), label="unread.csv")
    spec = SimpleNamespace(model_id="m")
    return run_attempt(records, job, data, spec, ModelRegistry(tmp_path / "models"),  # type: ignore[arg-type]
                       keep_versions=5)


def test_a_service_attempt_whose_outcome_fails_after_publishing_succeeds_naming_the_version(tmp_path, monkeypatch):
    """Regression: power_outcome's error after the publication failed the attempt ("train_lstm: error: ...")."""
    monkeypatch.setattr(retrain_attempt, "retrain_power",
                        lambda _frames, _spec, registry: publishes(tmp_path)(registry))
    monkeypatch.setattr(retrain_attempt, "power_outcome", fails(UNREADABLE))
    records, job = service_attempt(tmp_path)
    assert attempt(tmp_path, records, job) == "succeeded"
    record = records.get(job)
    assert {"status": "succeeded", "registered_version": 1, "activated": True}.items() <= record.items()
    assert record["message"] == "train_lstm: registered m version 1 (activated); its scores could not be recorded " \
                                "(OSError)"
    assert RetrainLocks(records).holder("m") is None


def publishes_outcome(tmp_path):
    def retrain(_data, _spec, held: ModelRegistry) -> AttemptOutcome:
        return AttemptOutcome(registered_version=publishes(tmp_path)(held).version, decision="no_incumbent",
                              activated=True)

    return retrain


def test_a_service_attempt_whose_lock_cannot_be_freed_succeeds_and_the_next_takes_the_model(tmp_path, monkeypatch,
                                                                                          caplog):
    """Regression: run_attempt raised the OSError (the scheduler's step "failed", old versions were not pruned)."""
    monkeypatch.setattr(retrain_attempt, "retrain", publishes_outcome(tmp_path))
    unreleasable(monkeypatch)
    records, job = service_attempt(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert attempt(tmp_path, records, job) == "succeeded"
    assert f"retrain attempt {job}: its lock on m was not released" in caplog.text
    assert records.get(job)["status"] == "succeeded" and RetrainLocks(records).holder("m") == job
    _, nxt = service_attempt(tmp_path)  # taken over at once: the holder's record has ended
    assert RetrainLocks(records).holder("m") == nxt


def test_a_service_attempt_whose_record_cannot_be_ended_still_succeeds(tmp_path, monkeypatch, caplog):
    """Regression: run_attempt raised the OSError; the record, left running, reads as stopped once silent."""
    monkeypatch.setattr(retrain_attempt, "retrain", publishes_outcome(tmp_path))
    records, job = service_attempt(tmp_path)
    unwritable(monkeypatch, "succeeded")
    with caplog.at_level(logging.WARNING):
        assert attempt(tmp_path, records, job) == "succeeded"
    assert f"retrain attempt {job} registered version 1, but its record could not be written" in caplog.text
    assert records.get(job)["status"] == "running" and RetrainLocks(records).holder("m") is None


def test_a_service_attempt_stopped_as_its_heartbeat_stops_is_recorded_as_succeeded(tmp_path, monkeypatch):
    """Regression: a SIGTERM (SystemExit) after the retraining returned, as the heartbeat thread was joined, left the
    record running, to be failed as stopped once silent although its version was registered."""
    monkeypatch.setattr(retrain_attempt, "retrain", publishes_outcome(tmp_path))
    stopped_as_the_heartbeat_stops(monkeypatch, "training.retrain_attempt", exits)
    records, job = service_attempt(tmp_path)
    with pytest.raises(SystemExit):
        attempt(tmp_path, records, job)
    assert {"status": "succeeded", "registered_version": 1, "activated": True}.items() <= records.get(job).items()
    assert RetrainLocks(records).holder("m") is None


def test_a_service_attempt_stopped_before_its_success_is_recorded_is_recorded_as_succeeded(tmp_path, monkeypatch):
    """Regression: a SIGTERM landing after the heartbeat stopped but before the success was recorded (here: as it
    was being recorded) left the record running, to be failed as stopped although its version was registered."""
    monkeypatch.setattr(retrain_attempt, "retrain", publishes_outcome(tmp_path))
    record_success, calls = retrain_attempt._succeeded, []

    def interrupted_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise SystemExit(143)
        return record_success(*args)

    monkeypatch.setattr(retrain_attempt, "_succeeded", interrupted_once)
    records, job = service_attempt(tmp_path)
    with pytest.raises(SystemExit):
        attempt(tmp_path, records, job)
    assert {"status": "succeeded", "registered_version": 1, "activated": True}.items() <= records.get(job).items()
    assert RetrainLocks(records).holder("m") is None


def test_a_failed_service_attempt_keeps_a_verdict_given_first_and_survives_an_unwritable_record(tmp_path, monkeypatch,
                                                                                               caplog):
    """The failure paths wrote the record directly: over a verdict someone had already given (failed as stopped,
    taken over), and an OSError from the record store replaced the attempt's own error and left the lock held."""
    records, job = service_attempt(tmp_path)

    def stopped_meanwhile_then_fails(*_args):
        RetrainLocks(records).record_if_unfinished(job, status="failed", message="stopped: no sign of life")
        raise ValueError("bad data")

    monkeypatch.setattr(retrain_attempt, "retrain", stopped_meanwhile_then_fails)
    assert attempt(tmp_path, records, job) == "failed"
    assert records.get(job)["message"] == "stopped: no sign of life"

    records, job = service_attempt(tmp_path / "second")
    monkeypatch.setattr(retrain_attempt, "retrain", fails(ValueError("bad data")))
    unwritable(monkeypatch, "failed")
    with caplog.at_level(logging.WARNING):
        assert attempt(tmp_path, records, job) == "failed"
    assert f"retrain attempt {job} failed (train_lstm: error: bad data), and its record could not be written" \
        in caplog.text
    assert RetrainLocks(records).holder("m") is None
