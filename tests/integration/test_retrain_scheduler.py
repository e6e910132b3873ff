"""Scheduled retraining end to end (issue 13): the retrain scheduler actor, started from the app's args as the
bootstrap starts it, replaced on new settings and killed once (keeping its schedule each time), retrains the
power forecaster on replayed telemetry in the session's store one interval after it started, and its attempt is
listed by GET /api/v1/models/retrain with trigger "interval" and the decision on the same held-out data as the
champion.

On the session's Ray, Serve app and store (tests/conftest.py); the scheduler trains into a copy of the session's
registry, so the other tests' versions stay as they expect, and is stopped at the end.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import ray

from app.settings import AppArgs
from core.names import NAMESPACE, SCHEDULER_ACTOR
from core.registry import ModelRegistry
from core.stores.remote import RemoteStore
from core.telemetry_csv import load_telemetry_csv
from tests.fakes.stored_trace import store_trace
from training.power.scheduler_actor import scheduler_client, start_scheduler, stop_scheduler

pytestmark = [pytest.mark.integration, pytest.mark.slow]
INTERVAL_S = 18  # long enough for the start, replacement and restart below to end before it falls due
# the session's power_lstm/1 settings (tests/conftest.py SMALL_POWER), so the champion is compared on the same points
TINY = ("predictor: {step: 2min, prediction_horizon: 20min}\n"
        "models: {power_predictor: {sequence_length: 15, hidden_size: 16, num_layers: 1, epochs: 4}}\n")


def _interval_attempt(api: httpx.Client, timeout_s: float) -> dict:
    """The first finished attempt with trigger "interval" that the API lists for power_lstm."""
    deadline, jobs = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline:
        response = api.get("/api/v1/models/retrain", params={"model_id": "power_lstm"})
        assert response.status_code == 200, response.text
        jobs = response.json()["jobs"]
        done = [job for job in jobs if job["trigger"] == "interval" and job["status"] in ("succeeded", "failed")]
        if done:
            return done[-1]
        time.sleep(0.5)
    raise AssertionError(f"no scheduled attempt finished within {timeout_s} s: {jobs}")


def test_a_scheduled_retrain_on_replayed_telemetry_appears_in_the_api(api, app_args, served_models, upm_sample,
                                                                     tmp_path):
    models = tmp_path / "models"
    shutil.copytree(served_models, models)
    champion = ModelRegistry(models).active_version("power_lstm")
    config = tmp_path / "config.yaml"
    config.write_text(TINY)
    assert store_trace(RemoteStore(), load_telemetry_csv(upm_sample), datetime.now(UTC), prefix="sched-") > 0
    args = AppArgs.model_validate({
        **app_args, "config_path": str(config), "model_path": str(models),
        "retrain": {**app_args["retrain"], "schedule": {"enabled": True, "interval": f"{INTERVAL_S}s", "since": "6h"}},
    }).with_absolute_paths()
    settings = args.scheduler_settings()
    assert settings is not None and settings.interval_s == INTERVAL_S
    started = datetime.now(UTC)
    first = start_scheduler(settings)
    try:
        assert start_scheduler(settings)._actor_id == first._actor_id  # the same settings: kept
        due = scheduler_client().call("next_due")
        assert datetime.fromisoformat(due) > datetime.now(UTC)
        hourly = scheduler_client().call("next_due", "power_lstm_1h")  # the other resolution, on its own clock
        assert datetime.fromisoformat(hourly) > datetime.now(UTC) + timedelta(hours=23)
        replaced = start_scheduler(settings.model_copy(update={"degradation_factor": 2.0}))
        assert replaced._actor_id != first._actor_id and scheduler_client().call("next_due") == due
        ray.kill(ray.get_actor(SCHEDULER_ACTOR, namespace=NAMESPACE), no_restart=False)  # Ray restarts it
        assert scheduler_client(timeout_s=60).call("next_due") == due  # with the schedule it had
        job = _interval_attempt(api, timeout_s=300)
    finally:
        stop_scheduler()
    # not at once: the attempt was made one interval after the scheduler started, not at its start nor its restarts
    assert datetime.fromisoformat(job["created_at"]) >= started + timedelta(seconds=INTERVAL_S)
    assert job["status"] == "succeeded", job
    assert (job["source"], job["data"]) == ("store", "telemetry store, last 6h")
    assert job["decision"] in ("beat_incumbent", "did_not_beat") and job["reason"], job
    assert job["champion"]["version"] == champion and job["champion"]["mae"] > 0
    assert job["challenger"]["mae"] == job["champion"]["challenger_mae"]
    assert {"sched-hybrid_1", "sched-radiance_1", "sched-sysbench_2"} <= set(job["data_span"]["series"])
    assert ModelRegistry(models).versions("power_lstm")[-1] == job["registered_version"]
    assert api.get(f"/api/v1/models/retrain/{job['job_id']}").json() == job
