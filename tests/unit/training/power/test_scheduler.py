"""Scheduled retraining (issue 13): `predictor.model_update_interval` is honoured by the retrain scheduler's body,
without Ray. Attempts train on the telemetry store's recent data (a real SQLite store holding the shipped
sample as recent telemetry), promote only a better challenger, are recorded like API jobs, share the API's
per-model lock, keep their schedule across restarts, and retrain early when the champion's live error degrades.

Ray Train is replaced by tests.fakes.trainer (the `shift` fixture in conftest.py); the rest is the real code.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.atomic_files import atomic_write_json
from core.records import RecordStore
from core.registry import ModelRegistry
from core.stores.sqlite import SqliteStore
from tests.fakes.stored_trace import store_trace
from training.power import scheduler as scheduler_module
from training.power.scheduler import LiveAccuracy, ModelSchedule, RetrainScheduler, SchedulerSettings
from training.retrain_lock import SILENT_AFTER_S, RetrainLocks
from training.settings import DEFAULT_RESOLUTIONS

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HOUR = 3600
# The resolution serves power_lstm with a shorter window than the flat config's: a first version takes it.
SMALL_CONFIG = ("predictor: {step: 2min, prediction_horizon: 20min,\n"
                "            resolutions: [{model_id: power_lstm, step: 2min, horizon: 20min, sequence_length: 12}]}\n"
                "models: {power_predictor: {sequence_length: 15, hidden_size: 8, num_layers: 1, epochs: 4}}\n")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def settings(tmp_path) -> SchedulerSettings:
    config = tmp_path / "config.yaml"
    config.write_text(SMALL_CONFIG)
    return SchedulerSettings(state_path=str(tmp_path / "state"), model_path=str(tmp_path / "models"),
                             config_path=str(config), interval_s=HOUR, since_s=400 * 86400)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Attempts run without training: each is recorded as succeeded (the ids of those run)."""
    ran: list[str] = []

    def run_attempt(records, job_id, data, spec, registry, *, keep_versions, on_hung=None):
        ran.append(job_id)
        records.update(job_id, status="succeeded")
        RetrainLocks(records).release(spec.model_id, job_id)
        return "succeeded"

    monkeypatch.setattr(scheduler_module, "run_attempt", run_attempt)
    return ran


@pytest.fixture
def embedded_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """`open_store` finds the environment's embedded store, as on a machine without Ray: the test session's
    Ray may run a store actor that other tests fill."""
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    for name in ("INFLUX_HOST", "PROMETHEUS_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def stored_sample(sample, tmp_path, monkeypatch: pytest.MonkeyPatch, embedded_store):
    """The shipped sample as the last hours of an embedded store."""
    folder = tmp_path / "telemetry"
    monkeypatch.setenv("TELEMETRY_DATA_DIR", str(folder))
    with SqliteStore(folder) as store:
        assert store_trace(store, sample, datetime.now(UTC)) > 0


def test_the_first_attempt_is_due_one_interval_after_the_scheduler_first_started(settings, clock, runs):
    scheduler = RetrainScheduler(settings, clock=clock)
    assert scheduler.next_due() == T0 + timedelta(seconds=HOUR)
    clock.advance(HOUR - 1)
    assert scheduler.step() is None and runs == []
    clock.advance(1)
    record = scheduler.step()
    assert record is not None and record["trigger"] == "interval" and runs == [record["id"]]
    assert scheduler.due() is None and scheduler.next_due() == clock.now + timedelta(seconds=HOUR)


def test_a_restarted_scheduler_retrains_at_once_only_when_due(settings, clock, runs):
    RetrainScheduler(settings, clock=clock)
    clock.advance(HOUR)
    assert RetrainScheduler(settings, clock=clock).step() is not None  # the attempt that was due
    clock.advance(HOUR / 2)
    restarted = RetrainScheduler(settings, clock=clock)
    assert restarted.due() is None and restarted.next_due() == T0 + timedelta(seconds=2 * HOUR)
    clock.advance(HOUR / 2)
    assert RetrainScheduler(settings, clock=clock).due() == "interval"


def test_an_attempt_is_run_with_the_scheduler_s_hung_handler_and_the_store_s_split(settings, clock, monkeypatch):
    """The actor ends its process once an attempt is failed as hung (a stuck attempt held its loop for good). The
    store's nodes are held out from one time on, so a node that joined late never trains on times the others are
    scored at (review)."""
    calls = []

    def attempt(records, job_id, data, spec, registry, *, keep_versions, on_hung=None):
        calls.append((on_hung, spec))
        records.update(job_id, status="succeeded")
        RetrainLocks(records).release(spec.model_id, job_id)

    def end_process() -> None:
        pass

    monkeypatch.setattr(scheduler_module, "run_attempt", attempt)
    scheduler = RetrainScheduler(settings, clock=clock, on_hung=end_process)
    clock.advance(HOUR)
    assert scheduler.step() is not None and [handler for handler, _ in calls] == [end_process]
    assert (calls[0][1].split, calls[0][1].skip_short) == ("time", True)


def test_a_schedule_that_cannot_be_read_just_now_is_not_overwritten_with_a_fresh_one(settings, clock, runs,
                                                                                      monkeypatch):
    """Regression: a passing read error was taken for no schedule and a fresh one written over it (the next attempt
    an interval later, the once-per-champion early retrain forgotten, the other models' schedules dropped)."""
    RetrainScheduler(settings, clock=clock)
    clock.advance(HOUR)
    assert RetrainScheduler(settings, clock=clock).step() is not None  # last attempt: T0 + 1 h
    state_file = Path(settings.state_path) / "retrain_scheduler.json"
    stored = state_file.read_text()
    real_read_text = Path.read_text

    def read_text(path, *args, **kwargs):
        if path == state_file:
            raise OSError(5, "Input/output error")
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    scheduler = RetrainScheduler(settings, clock=clock)
    clock.advance(5 * HOUR)  # due by any schedule
    assert scheduler.step() is None and len(runs) == 1  # nothing retrained (or written) while it cannot be read
    assert scheduler.next_due() is None and scheduler.due() is None  # not a time made up from the clock
    monkeypatch.setattr(Path, "read_text", real_read_text)
    assert state_file.read_text() == stored
    assert RetrainScheduler(settings, clock=clock).next_due() == T0 + timedelta(seconds=2 * HOUR)
    assert scheduler.step() is not None and len(runs) == 2  # read again: the stored schedule goes on


def test_the_interval_counts_from_the_end_of_an_attempt_that_ran_longer(settings, clock, monkeypatch):
    def slow_attempt(records, job_id, data, spec, registry, *, keep_versions, on_hung=None):
        clock.advance(2 * HOUR)  # a retraining longer than the interval
        records.update(job_id, status="succeeded")
        RetrainLocks(records).release(spec.model_id, job_id)

    monkeypatch.setattr(scheduler_module, "run_attempt", slow_attempt)
    scheduler = RetrainScheduler(settings, clock=clock)
    clock.advance(HOUR)
    assert scheduler.step() is not None
    assert scheduler.due() is None and scheduler.next_due() == T0 + timedelta(seconds=4 * HOUR)


def test_a_scheduled_attempt_trains_on_the_store_and_promotes_only_a_better_version(
        settings, clock, shift, stored_sample):
    registry = ModelRegistry(settings.model_path)
    shift(0.0)
    scheduler = RetrainScheduler(settings, clock=clock)
    clock.advance(HOUR)
    first = scheduler.step()
    assert first is not None, "nothing was due"
    assert first["status"] == "succeeded", first.get("message")
    assert (first["trigger"], first["source"], first["model_id"]) == ("interval", "store", "power_lstm")
    assert first["data"] == "telemetry store, last 400d"
    assert (first["registered_version"], first["decision"], first["activated"]) == (1, "no_incumbent", True)
    assert first["champion"] is None and first["challenger"]["mae"] > 0
    assert sorted(first["data_span"]["series"]) == ["hybrid_1", "radiance_1", "sysbench_2"]
    first_spec = registry.get("power_lstm", 1)[1].feature_spec
    assert (first_spec["sequence_length"], first_spec["step_s"], first_spec["horizon_steps"]) == (12, 120, 10)

    shift(5.0)  # a clearly worse challenger
    clock.advance(HOUR)
    config = Path(settings.config_path)  # the config's windows change; the challenger keeps its champion's
    config.write_text(config.read_text().replace("sequence_length: 1", "sequence_length: 2"))
    second = RetrainScheduler(settings, clock=clock).step()
    assert second is not None and second["status"] == "succeeded", second
    spec = registry.get("power_lstm", 2)[1].feature_spec
    assert (spec["sequence_length"], spec["step_s"], spec["horizon_steps"]) == (12, 120, 10)
    assert (second["registered_version"], second["decision"], second["activated"]) == (2, "did_not_beat", False)
    champion = second["champion"]
    assert champion["version"] == 1 and champion["mae"] < champion["challenger_mae"] == second["challenger"]["mae"]
    assert second["reason"].startswith("did not beat active version 1")
    assert registry.active_version("power_lstm") == 1 and registry.versions("power_lstm") == [1, 2]
    assert RetrainLocks(RecordStore(settings.state_path, "retrain")).holder("power_lstm") is None


def test_an_attempt_without_stored_telemetry_fails_with_the_reason(settings, clock, tmp_path, monkeypatch,
                                                                   embedded_store):
    monkeypatch.setenv("TELEMETRY_DATA_DIR", str(tmp_path / "empty-store"))
    scheduler = RetrainScheduler(settings, clock=clock)
    clock.advance(HOUR)
    record = scheduler.step()
    assert record is not None and record["status"] == "failed"
    assert record["message"].startswith("train_lstm: error: the telemetry store holds no power readings")


def test_nothing_starts_while_the_api_retrains_the_model_and_the_next_step_tries_again(settings, clock, runs):
    scheduler = RetrainScheduler(settings, clock=clock)
    api_job = scheduler.records.create({"status": "running", "model_id": "power_lstm", "trigger": "api"})
    scheduler.locks.acquire("power_lstm", api_job["id"])
    clock.advance(HOUR)
    assert scheduler.step() is None and runs == []
    assert [r["id"] for r in scheduler.records.newest(10)] == [api_job["id"]]  # nothing recorded for the skip
    scheduler.records.update(api_job["id"], status="succeeded")
    scheduler.locks.release("power_lstm", api_job["id"])
    assert scheduler.step() is not None and len(runs) == 1


def test_recover_fails_only_the_scheduled_attempts_a_restart_interrupted(settings, clock):
    scheduler = RetrainScheduler(settings, clock=clock)
    scheduled = scheduler.records.create({"status": "running", "model_id": "power_lstm", "trigger": "interval"})
    scheduler.locks.acquire("power_lstm", scheduled["id"])
    api_job = scheduler.records.create({"status": "running", "model_id": "cost_gbm", "trigger": "api"})
    assert RetrainScheduler(settings, clock=clock).recover() == 0  # alive: another cluster's, during an upgrade
    assert scheduler.records.get(scheduled["id"])["status"] == "running"
    record = scheduler.records.get(scheduled["id"])
    record["updated_at"] = (datetime.now(UTC) - timedelta(seconds=SILENT_AFTER_S + 1)).isoformat()
    atomic_write_json(scheduler.records.folder / f"{scheduled['id']}.json", record)
    assert RetrainScheduler(settings, clock=clock).recover() == 1
    assert scheduler.records.get(scheduled["id"])["status"] == "failed"
    assert "interrupted" in scheduler.records.get(scheduled["id"])["message"]
    assert scheduler.records.get(api_job["id"])["status"] == "running"
    assert scheduler.locks.holder("power_lstm") is None


def test_the_attempt_of_a_stopped_scheduler_is_failed_at_once_and_frees_the_model(settings, clock):
    """Regression: stopping the scheduler failed only attempts silent for 5 minutes, so the one it had just been
    running kept the model's lock (the API answered 409) and stayed "running" for good."""
    mine = RetrainScheduler(settings, clock=clock, owner="actor-1")
    record = mine.records.create({"status": "running", "model_id": "power_lstm", "trigger": "interval",
                                  "owner": "actor-1"})
    mine.locks.acquire("power_lstm", record["id"])
    assert scheduler_module.fail_interrupted(mine.records, "power_lstm", owner="actor-2") == 0  # another's
    assert scheduler_module.fail_interrupted(mine.records, "power_lstm", owner="actor-1") == 1
    assert mine.records.get(record["id"])["status"] == "failed"
    assert mine.locks.holder("power_lstm") is None


def test_a_schedulers_records_carry_its_owner(settings, clock, runs):
    scheduler = RetrainScheduler(settings, clock=clock, owner="actor-1")
    clock.advance(settings.interval_s + 1)
    assert scheduler.step()["owner"] == "actor-1"


# --- retraining early when the champion's live error degrades ------------------------------------------------


@pytest.fixture
def champion(settings, tmp_path) -> ModelRegistry:
    """Version 1 of power_lstm, active, with a held-out MAE of 10 W."""
    registry = ModelRegistry(settings.model_path)
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"0")
    registry.publish("power_lstm", folder, model_type="lstm", metrics={"mae": 10.0})
    return registry


def live(mae: float, version: int = 1, samples: int = 100) -> LiveAccuracy:
    return LiveAccuracy(model_id="power_lstm", version=version, mae=mae, samples=samples)


@pytest.mark.parametrize(("reported", "due"), [
    (live(15.5), "degradation"),  # past 1.5 x 10 W
    (live(14.5), None),  # within the factor
    (live(50.0, samples=5), None),  # too few points to tell
    (live(50.0, version=2), None),  # another version's error
    (None, None),  # no live accuracy measured (yet)
])
def test_the_champions_live_error_past_the_factor_makes_an_attempt_due(settings, clock, champion, reported, due):
    scheduler = RetrainScheduler(settings, clock=clock, live_accuracy=lambda model_id: reported)
    assert scheduler.due() == due


def test_live_error_on_near_leads_is_compared_with_the_held_out_error_on_the_same_leads(settings, clock, tmp_path):
    """Held out: 4 W a step ahead, 20 W ten steps ahead (10 W over all). The controller scores only leads 1-2:
    8 W live there is twice their held-out error and degraded, though under 1.5 x the 10 W overall."""
    registry = ModelRegistry(settings.model_path)
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"0")
    registry.publish("power_lstm", folder, model_type="lstm",
                     metrics={"mae": 10.0, "mae_by_lead": [4.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0]})
    near = LiveAccuracy(model_id="power_lstm", version=1, mae=8.0, samples=100, points_by_lead={1: 50, 2: 50})
    assert near.held_out_equivalent(registry.get("power_lstm")[1].metrics) == 4.0
    assert RetrainScheduler(settings, clock=clock, live_accuracy=lambda model_id: near).due() == "degradation"
    unknown = near.model_copy(update={"points_by_lead": {}})  # no lead mix: the overall held-out error
    assert RetrainScheduler(settings, clock=clock, live_accuracy=lambda model_id: unknown).due() is None


def test_each_champion_gets_one_early_retrain_and_no_factor_means_never(settings, clock, champion, runs):
    degraded = live(40.0)
    scheduler = RetrainScheduler(settings, clock=clock, live_accuracy=lambda model_id: degraded)
    record = scheduler.step()
    assert record is not None and record["trigger"] == "degradation"
    assert scheduler.due() is None  # the challenger did not replace version 1 (no loop of early retrains)
    assert scheduler.next_due() == T0 + timedelta(seconds=HOUR)  # the interval counts from this attempt
    assert RetrainScheduler(settings, clock=clock, live_accuracy=lambda model_id: degraded).due() is None
    off = settings.model_copy(update={"degradation_factor": None})
    other = off.model_copy(update={"state_path": settings.state_path + "-other"})
    assert RetrainScheduler(other, clock=clock, live_accuracy=lambda model_id: degraded).due() is None


def test_a_config_that_became_invalid_fails_the_attempt_without_showing_its_path(settings, clock, runs, tmp_path):
    """The record is readable by anyone who can read the API: the config file's path stays in the log."""
    scheduler = RetrainScheduler(settings, clock=clock)
    Path(settings.config_path).write_text("predictor:\n  step: banana\n")
    clock.advance(HOUR)
    record = scheduler.step()
    assert record is not None and record["status"] == "failed" and runs == []
    assert record["message"].startswith("train_lstm: error: ") and "step" in record["message"]
    assert str(tmp_path) not in record["message"], record["message"]


def test_a_registry_that_cannot_be_read_now_fails_the_attempt_and_frees_the_model(settings, clock, runs,
                                                                                     monkeypatch):
    """An EIO on ACTIVE left the attempt "pending" holding the model's lock (the API's retrains got 409s) until it
    went silent and was failed as "interrupted by a restart"."""
    scheduler = RetrainScheduler(settings, clock=clock)

    def unreadable(*_args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(scheduler.registry, "active_version", unreadable)
    clock.advance(HOUR)
    record = scheduler.step()
    assert record is not None and record["status"] == "failed" and runs == []
    assert "Input/output error" in record["message"]
    assert RetrainLocks(RecordStore(settings.state_path, "retrain")).holder("power_lstm") is None


def test_any_error_before_the_training_starts_fails_the_attempt_and_frees_the_model(settings, clock, runs,
                                                                                        monkeypatch):
    scheduler = RetrainScheduler(settings, clock=clock)

    def unreadable_metadata(*_args):
        raise ValueError("invalid literal for int() with base 10: 'sixty'")

    monkeypatch.setattr("training.power.scheduler.retrained_shape", unreadable_metadata)
    clock.advance(HOUR)
    record = scheduler.step()
    assert record is not None and record["status"] == "failed" and runs == []
    assert record["message"] == "train_lstm: error: could not start: ValueError"
    assert RetrainLocks(RecordStore(settings.state_path, "retrain")).holder("power_lstm") is None


def test_an_attempt_deletes_finished_records_past_the_retention(settings, clock, runs):
    records = RecordStore(settings.state_path, "retrain")
    old = (datetime.now(UTC) - timedelta(seconds=settings.retention_s + 60)).isoformat()
    atomic_write_json(records.folder / "oldattempt.json", {"id": "oldattempt", "status": "succeeded",
                                                           "model_id": "power_lstm", "updated_at": old})
    record = RetrainScheduler(settings, clock=clock).attempt("interval")
    assert [path.stem for path in records.folder.glob("*.json")] == [record["id"]]


def test_another_resolution_is_retrained_on_its_own_clock_and_span(settings, clock, monkeypatch, tmp_path):
    """Regression (review): only the default model was ever retrained, so the hourly model (every horizon past an
    hour) kept serving the demo's synthetic version. Each served resolution now has a schedule of its own; one with
    no active version is not served, and is not retrained (an attempt with no incumbent would activate it)."""
    attempts: list[tuple[str, int]] = []

    def run_attempt(records, job_id, data, spec, registry, *, keep_versions, on_hung=None):
        attempts.append((spec.model_id, data.since_s))
        records.update(job_id, status="succeeded")
        RetrainLocks(records).release(spec.model_id, job_id)

    monkeypatch.setattr(scheduler_module, "run_attempt", run_attempt)
    day = 24 * HOUR
    both = settings.model_copy(update={"others": (ModelSchedule(model_id="power_lstm_1h", interval_s=day,
                                                                since_s=56 * day),)})
    assert [(each.model_id, each.interval_s, each.others) for each in both.each()] == [
        ("power_lstm", HOUR, ()), ("power_lstm_1h", day, ())]
    schedulers = [RetrainScheduler(each, clock=clock) for each in both.each()]

    def hours(count: int) -> None:
        for _ in range(count):
            clock.advance(HOUR)
            for scheduler in schedulers:
                scheduler.step()

    hours(25)
    assert attempts.count(("power_lstm", 400 * day)) == 25 and not attempts.count(("power_lstm_1h", 56 * day))
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"0")
    registry = ModelRegistry(settings.model_path)
    registry.publish("power_lstm_1h", folder, model_type="lstm", activate=False)
    hours(1)
    assert not attempts.count(("power_lstm_1h", 56 * day))  # registered, none active: not served
    registry.activate("power_lstm_1h", 1)
    hours(1)
    assert attempts[-1] == ("power_lstm_1h", 56 * day) and attempts.count(("power_lstm_1h", 56 * day)) == 1
    restarted = RetrainScheduler(both.each()[1], clock=clock)  # each model's schedule is kept apart
    assert restarted.next_due() == clock.now + timedelta(seconds=day)


def test_an_unreadable_active_pointer_retrains_nothing_and_is_logged_once_while_it_stays_so(settings, clock,
                                                                                            monkeypatch, caplog):
    """Regression (review): the warning was written at every check (each minute) for as long as it lasted."""
    scheduler = RetrainScheduler(settings.model_copy(update={"require_active": True}), clock=clock)
    problem = [OSError("ACTIVE: permission denied")]

    def active_version(model_id):
        if problem:
            raise problem[0]
        return None

    monkeypatch.setattr(scheduler.registry, "active_version", active_version)
    clock.advance(2 * HOUR)
    with caplog.at_level(logging.WARNING, logger=scheduler_module.__name__):
        assert [scheduler.due() for _ in range(3)] == [None] * 3
        problem.clear()
        assert scheduler.due() is None  # readable, none active
        problem.append(OSError("ACTIVE: permission denied"))
        assert scheduler.due() is None
    assert [r.getMessage() for r in caplog.records].count("retrain scheduler: power_lstm: ACTIVE: permission "
                                                          "denied") == 2


def test_another_resolution_waits_a_day_of_its_steps_and_trains_on_four_of_its_windows():
    fine, hourly = DEFAULT_RESOLUTIONS
    assert ModelSchedule.of(hourly, HOUR, 14 * 86400) == ModelSchedule(
        model_id="power_lstm_1h", interval_s=86400, since_s=4 * (168 + 168) * HOUR)  # 8 weeks
    assert ModelSchedule.of(fine, 2 * HOUR, 14 * 86400) == ModelSchedule(
        model_id="power_lstm", interval_s=2 * HOUR, since_s=14 * 86400)  # what is given, where that is more


def test_stopping_the_scheduler_fails_the_attempt_it_interrupted_of_any_model_it_retrains(settings, monkeypatch):
    """An attempt of another resolution, running when the actor is stopped, is failed at once and frees that model,
    as the default model's is."""
    from types import SimpleNamespace

    from training.power import scheduler_actor

    both = settings.model_copy(update={"others": (ModelSchedule(model_id="power_lstm_1h", interval_s=86400,
                                                                since_s=86400),)})
    records = RecordStore(settings.state_path, "retrain")
    running = records.create({"status": "running", "model_id": "power_lstm_1h", "trigger": "interval",
                              "owner": "actor-1"})
    RetrainLocks(records).acquire("power_lstm_1h", running["id"])
    actor = SimpleNamespace(_actor_id=SimpleNamespace(hex=lambda: "actor-1"),
                            settings_dict=SimpleNamespace(remote=lambda: both.model_dump()))
    monkeypatch.setattr(scheduler_actor, "find_actor", lambda name: actor)
    monkeypatch.setattr(scheduler_actor.ray, "get", lambda ref, timeout=None: ref)
    monkeypatch.setattr(scheduler_actor, "kill_and_wait", lambda *args: None)
    assert scheduler_actor.stop_scheduler() is True
    assert records.get(running["id"])["status"] == "failed"
    assert RetrainLocks(records).holder("power_lstm_1h") is None
