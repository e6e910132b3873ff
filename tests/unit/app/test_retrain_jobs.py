"""Retraining from the API: one job per model at a time, `data` only inside the data directory (no Ray).

Regressions of issue 10: concurrent retrains were unlimited and `data` could be any path on the cluster.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from ray import serve

from app import tasks
from app.access import Access
from app.ingress import api
from app.retrain_jobs import DataNotAllowed, LaunchFailed, RetrainJobs, ServedModels, data_file
from app.schemas import RetrainRequest
from app.settings import RetrainDefaults
from core.atomic_files import atomic_write_json
from core.records import RecordStore, RecordUnreadable
from tests.paths import TEST_DATA
from training.power.retrain_spec import RetrainRefused
from training.retrain_lock import SILENT_AFTER_S, RetrainRunning

AUTH = {"Authorization": "Bearer t"}


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.csv").write_text("timestamp,power_watts\n")
    (tmp_path / "secret.csv").write_text("outside\n")
    (folder / "escape.csv").symlink_to(tmp_path / "secret.csv")
    (folder / "loop_a").symlink_to(folder / "loop_b")
    (folder / "loop_b").symlink_to(folder / "loop_a")
    return folder


SERVED = ServedModels(power=("power_lstm", "power_lstm_1h"), cost="cost_gbm")


def jobs_in(tmp_path, data_dir=None, launched=None, models=SERVED, **scaling) -> RetrainJobs:
    defaults = RetrainDefaults(data=str(TEST_DATA / "upm_sample.csv"), data_dir=str(data_dir) if data_dir else None,
                               **scaling)
    return RetrainJobs(str(tmp_path / "state"), str(tmp_path / "models"), None, defaults, models,
                       launch=lambda *args: launched.append(args) if launched is not None else None)


def test_a_config_file_edited_into_an_invalid_one_fails_the_submit_without_naming_its_path(tmp_path):
    """Regression: its ConfigError was a generic 500."""
    launched: list = []
    jobs = jobs_in(tmp_path, launched=launched)
    broken = tmp_path / "config.yaml"
    broken.write_text("models:\n  power_predictor:\n    epochs: -3\n")
    jobs.config_path = str(broken)
    with pytest.raises(LaunchFailed, match="no longer validates") as failed:
        jobs.submit(RetrainRequest(epochs=4))
    assert str(tmp_path) not in str(failed.value) and launched == [] and jobs.newest(None, 10) == []


def test_a_retrain_names_a_served_model_and_defaults_to_the_first_power_model(tmp_path):
    launched: list = []
    custom = ServedModels(power=("gpu_power", "gpu_power_1h"), cost="job_cost")
    jobs = jobs_in(tmp_path, launched=launched, models=custom)
    assert jobs.submit(RetrainRequest(epochs=4))["model_id"] == "gpu_power"
    assert jobs.submit(RetrainRequest(model_id="job_cost"))["model_id"] == "job_cost"
    with pytest.raises(RetrainRefused) as refused:
        jobs.submit(RetrainRequest(model_id="power_lstm"))
    assert refused.value.field == "model_id" and "gpu_power, gpu_power_1h" in refused.value.message
    assert [args[4].model_id for args in launched] == ["gpu_power", "job_cost"]


def test_a_power_retrain_trains_with_the_configured_ray_train_scaling(tmp_path):
    launched: list = []
    scaling = {"num_workers": 2, "use_gpu": False, "cpus_per_worker": 0.5, "resources_per_worker": {"trainer": 1.0}}
    jobs_in(tmp_path, launched=launched, **scaling).submit(RetrainRequest(epochs=4))
    assert launched[0][4].scaling.model_dump() == scaling


def test_a_store_retrain_holds_out_every_node_from_one_time_on(tmp_path):
    """A node that joined late, cut at its own end, trained on times the others were scored at (review)."""
    launched: list = []
    jobs = jobs_in(tmp_path, launched=launched)
    jobs.submit(RetrainRequest(source="store", since="2d"))
    assert (launched[0][4].split, launched[0][4].skip_short) == ("time", True)


def test_a_csv_retrain_holds_out_each_series_at_its_end(tmp_path):
    launched: list = []
    jobs_in(tmp_path, launched=launched).submit(RetrainRequest())
    assert launched[0][4].split == "series"


def test_a_resolution_without_a_version_retrains_at_its_configured_shape(tmp_path):
    launched: list = []
    jobs_in(tmp_path, launched=launched).submit(RetrainRequest(model_id="power_lstm_1h", epochs=4))
    config = launched[0][4].effective_config()
    assert (config.predictor.step, config.predictor.prediction_horizon) == (3600, 7 * 86400)
    assert config.models.power_predictor.sequence_length == 168


def test_a_config_that_refuses_the_kept_shape_is_not_blamed_on_the_horizon(tmp_path, monkeypatch):
    """With `predictor.max_gap: 2min` and a version served at a 10-minute step, a request naming no horizon was
    refused as "prediction_horizon: max_gap (2min) must be at least step (10min)"."""
    config = tmp_path / "config.yaml"
    config.write_text("predictor:\n  max_gap: 2min\n")
    served = {"step_s": 600, "horizon_steps": 6, "sequence_length": 36}
    monkeypatch.setattr("app.retrain_jobs.retrained_shape", lambda *_args: served)
    jobs = RetrainJobs(str(tmp_path / "state"), str(tmp_path / "models"), str(config),
                       RetrainDefaults(data=str(TEST_DATA / "upm_sample.csv")), SERVED, launch=lambda *args: None)
    with pytest.raises(RetrainRefused) as refused:
        jobs.submit(RetrainRequest(epochs=4))
    assert refused.value.field == "model_id" and "the service config cannot retrain power_lstm" in refused.value.message
    assert "max_gap (2min) must be at least step (10min)" in refused.value.message
    assert "command line" not in refused.value.message
    config.write_text("predictor:\n  max_gap: 20min\n")
    with pytest.raises(RetrainRefused) as refused:  # a horizon the kept step does not divide is the request's
        jobs.submit(RetrainRequest(epochs=4, prediction_horizon="15min"))
    assert refused.value.field == "prediction_horizon" and "command line" not in refused.value.message


def test_files_inside_the_data_directory_are_allowed(data_dir):
    assert data_file("sub/a.csv", str(data_dir)) == (str(data_dir / "sub" / "a.csv"), "sub/a.csv")
    assert data_file(str(data_dir / "sub" / "a.csv"), str(data_dir))[1] == "sub/a.csv"


@pytest.mark.parametrize("requested", ["../secret.csv", "sub/../sub/a.csv", "/etc/passwd", "escape.csv", "missing.csv",
                                       "sub", "a\x00.csv", "a" * 300, "sub/" + "b" * 256 + "/a.csv",
                                       "loop_a/x.csv"])
def test_paths_outside_with_dot_dot_through_a_symlink_or_missing_are_refused(data_dir, requested):
    with pytest.raises(DataNotAllowed) as refused:
        data_file(requested, str(data_dir))
    assert str(data_dir) not in str(refused.value) and "/etc" not in str(refused.value)


def test_a_file_that_is_not_a_csv_is_refused_before_any_training_starts(data_dir):
    """A config file in the data folder was accepted (202) and failed later inside a Ray task."""
    (data_dir / "config.yaml").write_text("predictor: {}\n")
    with pytest.raises(DataNotAllowed, match="'config.yaml' is not a CSV file"):
        data_file("config.yaml", str(data_dir))
    (data_dir / "upper.CSV").write_text("timestamp\n")
    assert data_file("upper.CSV", str(data_dir))[1] == "upper.CSV"


def test_without_a_data_directory_no_file_may_be_named(tmp_path):
    with pytest.raises(DataNotAllowed, match="args.retrain.data_dir"):
        data_file("upm_sample.csv", None)


def test_training_data_from_the_default_a_file_or_the_store(tmp_path, data_dir):
    jobs = jobs_in(tmp_path, data_dir)
    assert jobs.training_data(RetrainRequest()).path == str(TEST_DATA / "upm_sample.csv")
    assert jobs.training_data(RetrainRequest(data="sub/a.csv")).label == "sub/a.csv"
    store = jobs.training_data(RetrainRequest(source="store", since="2d"))
    assert (store.source, store.path, store.since_s) == ("store", None, 2 * 86400)
    with pytest.raises(DataNotAllowed, match="not both"):
        jobs.training_data(RetrainRequest(source="store", data="sub/a.csv"))


def test_a_store_retrain_without_since_reads_what_the_model_s_resolution_needs(tmp_path, data_dir):
    """Review: the hourly model's retrain read the default 14 days, one week-long window and a week's horizon."""
    from training.settings import DEFAULT_RESOLUTIONS

    jobs, (fine, hourly) = jobs_in(tmp_path, data_dir), DEFAULT_RESOLUTIONS
    assert jobs.training_data(RetrainRequest(source="store"), fine).since_s == 14 * 86400
    assert jobs.training_data(RetrainRequest(source="store"), hourly).since_s == 56 * 86400  # 4 of its windows
    assert jobs.training_data(RetrainRequest(source="store", since="20d"), hourly).since_s == 20 * 86400  # as asked


def test_a_second_job_for_a_model_being_retrained_is_refused_naming_the_first(tmp_path):
    launched: list = []
    jobs = jobs_in(tmp_path, launched=launched)
    first = jobs.submit(RetrainRequest(epochs=4))
    with pytest.raises(RetrainRunning) as refused:
        jobs.submit(RetrainRequest(epochs=4))
    assert refused.value.job_id == first["id"] and first["id"] in str(refused.value)
    assert len(launched) == 1 and len(list(jobs.records.folder.glob("*.json"))) == 1  # nothing left behind
    jobs.records.update(first["id"], status="succeeded")  # ended without releasing its lock: taken over
    assert jobs.submit(RetrainRequest(epochs=4))["id"] != first["id"]


def test_the_task_releases_the_lock_when_it_ends(tmp_path):
    launched: list = []
    jobs = jobs_in(tmp_path, launched=launched)
    jobs.submit(RetrainRequest(data=None, epochs=4))
    state, job_id, models, _, spec, keep = launched[0]
    failing = jobs.training_data(RetrainRequest()).model_copy(update={"path": str(tmp_path / "missing.csv")})
    assert tasks.run_retrain._function(state, job_id, models, failing, spec, keep) == "failed"
    assert jobs.records.get(job_id)["status"] == "failed"
    jobs.submit(RetrainRequest(epochs=4))  # free again


def silence(jobs: RetrainJobs, job_id: str, seconds: float) -> None:
    """As if the job's task had given no sign of life for `seconds`."""
    record = jobs.records.get(job_id)
    record["updated_at"] = (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()
    atomic_write_json(jobs.records.folder / f"{job_id}.json", record)


def test_a_job_whose_task_stopped_is_failed_and_frees_its_model_one_still_alive_is_left(tmp_path):
    """Another ingress replica starting (or this app restarting) must not fail a job a live replica runs; a job
    whose task is silent for SILENT_AFTER_S died with its replica or worker."""
    jobs = jobs_in(tmp_path, launched=[])
    job = jobs.submit(RetrainRequest(epochs=4))
    other = jobs_in(tmp_path, launched=[])
    other.fail_stopped()
    assert other.get(job["id"])["status"] == "pending"
    with pytest.raises(RetrainRunning):
        other.submit(RetrainRequest(epochs=4))
    silence(jobs, job["id"], SILENT_AFTER_S + 1)
    looked_up = other.get(job["id"])  # one lookup reads that record only, and fails it
    assert looked_up["status"] == "failed" and looked_up["message"].startswith("stopped: its task gave no sign")
    assert other.newest(None, 10)[0] == looked_up
    other.submit(RetrainRequest(epochs=4))  # the model is free again


def test_the_list_reads_each_record_once_and_fails_the_stopped_ones_of_every_model_first(tmp_path, monkeypatch):
    """It read every record twice (once to fail the stopped ones, once to list): 10,000 reads at the 5,000 cap."""
    jobs = jobs_in(tmp_path, launched=[])
    stopped = jobs.submit(RetrainRequest(epochs=4))
    silence(jobs, stopped["id"], SILENT_AFTER_S + 1)
    jobs.locks.release("power_lstm", stopped["id"])  # so that other attempts can start; it stays pending
    done = [jobs.records.create({"model_id": model, "status": "succeeded", "trigger": "schedule"})
            for model in ("power_lstm", "cost_gbm", "cost_gbm")]
    reads = []
    real_read = type(jobs.records)._read
    monkeypatch.setattr(type(jobs.records), "_read", lambda self, path, **kw: reads.append(path) or real_read(
        self, path, **kw))

    listed = jobs.newest("cost_gbm", 1)
    assert [record["id"] for record in listed] == [done[2]["id"]]
    counts = Counter(path.stem for path in reads)
    assert all(counts[record["id"]] == 1 for record in done)  # the stopped one is read again under its lock
    monkeypatch.undo()
    assert jobs.records.get(stopped["id"])["status"] == "failed"  # another model's, failed by the same read


def test_one_job_that_cannot_be_read_just_now_keeps_no_other_stopped_job_from_being_failed(tmp_path, monkeypatch):
    jobs = jobs_in(tmp_path, launched=[])
    first = jobs.submit(RetrainRequest(epochs=4))
    second = jobs.submit(RetrainRequest(model_id="cost_gbm"))
    for job in (first, second):
        silence(jobs, job["id"], SILENT_AFTER_S + 1)
    real_fail = jobs.locks.fail

    def fail(model_id, job_id, *args):
        if job_id == first["id"]:
            raise RecordUnreadable(5, f"the retrain record {job_id} cannot be read just now: Input/output error")
        return real_fail(model_id, job_id, *args)

    monkeypatch.setattr(jobs.locks, "fail", fail)
    jobs.fail_stopped()
    assert jobs.records.get(second["id"])["status"] == "failed"
    assert jobs.records.get(first["id"])["status"] == "pending"  # failed at the next look


def test_a_full_state_volume_leaves_the_jobs_readable_and_refuses_a_submission_with_503(tmp_path, monkeypatch):
    """Regression: a verdict that could not be written (ENOSPC, a read-only volume) made every listing and lookup a
    500, and a record that could not be created a 500 on submission."""
    jobs = jobs_in(tmp_path, launched=[])
    job = jobs.submit(RetrainRequest(epochs=4))
    silence(jobs, job["id"], SILENT_AFTER_S + 1)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jobs.locks, "fail", full)
    jobs.fail_stopped()
    assert jobs.get(job["id"])["status"] == "pending"  # as it is; failed once it can be written
    monkeypatch.setattr(jobs.records, "create", full)
    monkeypatch.setattr(jobs.records, "expire", full)
    with pytest.raises(LaunchFailed, match="could not be recorded"):
        jobs.submit(RetrainRequest(model_id="cost_gbm"))


@pytest.fixture
def route(http, monkeypatch: pytest.MonkeyPatch, tmp_path, data_dir):
    replica = SimpleNamespace(access=Access("t"), retrains=jobs_in(tmp_path, data_dir, launched=[]))
    monkeypatch.setattr(serve, "get_replica_context", lambda: SimpleNamespace(servable_object=replica))
    return http(api)


def test_the_route_answers_409_for_a_concurrent_retrain(route):
    first = route.post("/api/v1/models/retrain", json={"epochs": 4}, headers=AUTH)
    assert first.status_code == 202, first.text
    second = route.post("/api/v1/models/retrain", json={"epochs": 4}, headers=AUTH)
    assert second.status_code == 409
    [detail] = second.json()["detail"]
    assert detail["loc"] == ["body", "model_id"] and first.json()["job_id"] in detail["msg"]


def test_an_attempt_whose_record_cannot_be_read_just_now_is_503_not_404(route, tmp_path):
    job_id = route.post("/api/v1/models/retrain", json={"epochs": 4}, headers=AUTH).json()["job_id"]
    [record] = (tmp_path / "state").rglob(f"{job_id}.json")
    record.unlink()
    record.mkdir()  # reading it fails with IsADirectoryError, not "no such file"
    response = route.get(f"/api/v1/models/retrain/{job_id}", headers=AUTH)
    assert response.status_code == 503, response.text
    [detail] = response.json()["detail"]
    assert detail["msg"] == f"the retrain record {job_id} cannot be read just now: Is a directory; try again"
    assert str(tmp_path) not in response.text


@pytest.mark.parametrize("data", ["../secret.csv", "/etc/passwd", "escape.csv", "sub/../../secret.csv"])
def test_the_route_answers_422_naming_data_for_a_path_escape(route, data):
    response = route.post("/api/v1/models/retrain", json={"data": data}, headers=AUTH)
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["body", "data"] and "/tmp" not in response.text


@pytest.mark.parametrize(("body", "field", "phrase"), [
    ({"epochs": 2}, "epochs", "below the minimum"),
    ({"prediction_horizon": "90s"}, "prediction_horizon", "whole multiple of step"),
    ({"prediction_horizon": "1min"}, "prediction_horizon", "at least 2 steps"),
    ({"epochs": "5"}, "epochs", "valid integer"),  # not parsed: a string where a number belongs
    ({"epochs": True}, "epochs", "valid integer"),  # not read as 1
])
def test_the_route_refuses_what_the_job_would_refuse_naming_the_field(route, body, field, phrase):
    response = route.post("/api/v1/models/retrain", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["body", field] and phrase in detail["msg"]


# --- issue 13: scheduled attempts beside the API's jobs, the cost model, the list of attempts ------------------


def test_an_app_restart_leaves_a_live_scheduled_attempt_running_and_fails_a_silent_one(tmp_path):
    """Regression: a silent scheduled attempt was left to its scheduler, which may be gone for good (scheduling
    turned off, its stop unable to read its settings): its record read "running" for ever."""
    jobs = jobs_in(tmp_path, launched=[])
    scheduled = jobs.records.create({"status": "running", "model_id": "power_lstm", "trigger": "interval"})
    jobs.locks.acquire("power_lstm", scheduled["id"])
    jobs_in(tmp_path).fail_stopped()
    assert jobs.records.get(scheduled["id"])["status"] == "running"
    with pytest.raises(RetrainRunning):  # still retraining: the API waits for the scheduled attempt
        jobs.submit(RetrainRequest(epochs=4))
    silence(jobs, scheduled["id"], SILENT_AFTER_S + 1)  # the scheduler died with its attempt
    jobs.fail_stopped()
    stopped = jobs.records.get(scheduled["id"])
    assert stopped["status"] == "failed" and stopped["message"].startswith("interrupted: the retrain scheduler")
    jobs.submit(RetrainRequest(epochs=4))  # and its lock no longer holds the model


def test_a_silent_attempt_whose_model_is_taken_over_is_failed_in_the_same_step(tmp_path):
    """Regression: the lock of a silent attempt (one nobody failed yet) was taken over with its record left
    "running", later failed with the wrong reason, or never."""
    jobs = jobs_in(tmp_path, launched=[])
    scheduled = jobs.records.create({"status": "running", "model_id": "power_lstm", "trigger": "degradation"})
    jobs.locks.acquire("power_lstm", scheduled["id"])
    silence(jobs, scheduled["id"], SILENT_AFTER_S + 1)
    jobs.locks.acquire("power_lstm", "next")
    stopped = jobs.records.get(scheduled["id"])
    assert stopped["status"] == "failed" and stopped["message"].endswith("taken over by attempt next")


def test_the_cost_model_trains_on_the_configured_jobs_file_a_named_one_or_generated_jobs(tmp_path, data_dir):
    (data_dir / "jobs.csv").write_text("cost\n")
    jobs = jobs_in(tmp_path, data_dir)
    generated = jobs.job_records(RetrainRequest(model_id="cost_gbm"))
    assert (generated.source, generated.synthetic) == ("catalog", True)
    with pytest.raises(DataNotAllowed, match="cost_data"):  # asked for a jobs file: never generated jobs instead
        jobs.job_records(RetrainRequest(model_id="cost_gbm", source="csv"))
    assert jobs.job_records(RetrainRequest(model_id="cost_gbm", data="jobs.csv")).label == "jobs.csv"
    configured = RetrainDefaults(data_dir=str(data_dir), cost_data=str(data_dir / "jobs.csv"))
    jobs = RetrainJobs(str(tmp_path / "state"), str(tmp_path / "models"), None, configured, SERVED,
                       launch=lambda *a: None)
    assert jobs.job_records(RetrainRequest(model_id="cost_gbm")).path == str(data_dir / "jobs.csv")
    with pytest.raises(DataNotAllowed):
        jobs.job_records(RetrainRequest(model_id="cost_gbm", data="../secret.csv"))


def test_a_cost_job_is_launched_beside_a_running_power_job(tmp_path):
    launched: list = []
    jobs = jobs_in(tmp_path, launched=launched)
    power = jobs.submit(RetrainRequest(epochs=4))
    cost = jobs.submit(RetrainRequest(model_id="cost_gbm"))
    assert (power["trigger"], cost["trigger"], cost["source"]) == ("api", "api", "catalog")
    _, job_id, _, data, spec, _ = launched[1]
    assert (job_id, spec.model_id, data.source, spec.synthetic) == (cost["id"], "cost_gbm", "catalog", True)
    with pytest.raises(RetrainRunning):
        jobs.submit(RetrainRequest(model_id="cost_gbm"))


@pytest.mark.parametrize(("body", "field", "phrase"), [
    ({"model_id": "cost_gbm", "epochs": 4}, "epochs", "power forecaster only"),
    ({"model_id": "cost_gbm", "since": "2d"}, "since", "power forecaster only"),
    ({"model_id": "cost_gbm", "source": "store"}, "source", "past jobs"),
    ({"source": "catalog"}, "source", "telemetry"),
])
def test_the_route_refuses_a_source_or_field_the_model_cannot_use(route, body, field, phrase):
    response = route.post("/api/v1/models/retrain", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["body", field] and phrase in detail["msg"]


def test_the_list_holds_api_jobs_and_scheduled_attempts_newest_first(route, tmp_path, monkeypatch):
    records = RecordStore(tmp_path / "state", "retrain")
    start = datetime.now(UTC) - timedelta(hours=1)  # recent: inside the retention
    times = iter(start + timedelta(minutes=minute) for minute in range(10))
    monkeypatch.setattr(records, "clock", lambda: next(times))
    old = records.create({"status": "succeeded", "model_id": "power_lstm"})  # recorded before triggers existed
    scheduled = records.create({
        "status": "succeeded", "model_id": "power_lstm", "trigger": "interval", "source": "store",
        "data": "telemetry store, last 14d", "registered_version": 2, "decision": "did_not_beat", "activated": False,
        "reason": "did not beat active version 1", "challenger": {"mae": 9.0},
        "champion": {"version": 1, "mae": 8.0, "challenger_mae": 9.0}})
    cost = records.create({"status": "pending", "model_id": "cost_gbm", "trigger": "api", "source": "catalog"})
    listed = route.get("/api/v1/models/retrain").json()["jobs"]
    assert [job["job_id"] for job in listed] == [cost["id"], scheduled["id"], old["id"]]
    assert listed[2]["trigger"] == "api" and listed[2]["decision"] is None
    assert {"trigger": "interval", "decision": "did_not_beat", "activated": False,
            "champion": {"version": 1, "mae": 8.0, "challenger_mae": 9.0, "not_compared": None,
                         "unloadable_active_version": None}}.items() \
        <= listed[1].items()
    power = route.get("/api/v1/models/retrain", params={"model_id": "power_lstm", "limit": 1}).json()["jobs"]
    assert [job["job_id"] for job in power] == [scheduled["id"]]
    one = route.get(f"/api/v1/models/retrain/{scheduled['id']}").json()
    assert one == listed[1] and {"job_id", "status", "model_id", "created_at", "updated_at", "registered_version",
                                 "message"} <= one.keys()
    assert route.get("/api/v1/models/retrain", params={"limit": 0}).status_code == 422


def test_a_task_that_cannot_start_fails_its_job_and_leaves_the_model_free(tmp_path):
    def refused(*args):
        raise RuntimeError("cluster at /srv/ray refused the task")

    jobs = jobs_in(tmp_path)
    jobs.launch = refused
    with pytest.raises(LaunchFailed) as failed:
        jobs.submit(RetrainRequest(model_id="cost_gbm"))
    assert "/srv" not in str(failed.value)
    [record] = jobs.newest(None, 5)
    assert record["status"] == "failed" and "could not be started" in record["message"]
    launched: list = []
    jobs.launch = lambda *args: launched.append(args)
    assert jobs.submit(RetrainRequest(model_id="cost_gbm"))["status"] == "pending" and launched  # not a 409


def test_retrain_spans_are_bounded_and_since_only_reads_the_store(tmp_path):
    for body in ({"prediction_horizon": "520w"}, {"source": "store", "since": "520w"}):
        with pytest.raises(ValueError, match="longer than the maximum"):
            RetrainRequest(**body)
    for since in ("1s", "59m"):  # regression: accepted, a 202 and a Ray task that could only fail
        with pytest.raises(ValueError, match="since\n.*shorter than the minimum of 1h"):
            RetrainRequest(source="store", since=since)
    with pytest.raises(RetrainRefused) as refused:
        jobs_in(tmp_path).training_data(RetrainRequest(since="2d"))
    assert refused.value.field == "since"


def test_finished_records_past_the_retention_are_deleted_when_a_job_starts(tmp_path):
    records = RecordStore(tmp_path / "state", "retrain")
    old = (datetime.now(UTC) - timedelta(days=91)).isoformat()
    for status in ("succeeded", "failed", "running"):
        atomic_write_json(records.folder / f"old{status}.json",
                          {"id": f"old{status}", "status": status, "model_id": "power_lstm", "created_at": old,
                           "updated_at": old})
    recent = records.create({"status": "failed", "model_id": "power_lstm"})
    jobs = jobs_in(tmp_path)
    assert {record["id"] for record in jobs.newest(None, 10)} >= {recent["id"]}
    jobs.submit(RetrainRequest(epochs=4))
    kept = {path.stem for path in records.folder.glob("*.json")}
    assert "oldsucceeded" not in kept and "oldfailed" not in kept
    assert {"oldrunning", recent["id"]} <= kept  # an unfinished record is never expired; a recent one stays


def test_the_retention_is_a_setting_of_at_least_an_hour():
    assert RetrainDefaults(retention="7d").retention == 7 * 86400
    with pytest.raises(ValueError, match="retention"):
        RetrainDefaults(retention="10min")
