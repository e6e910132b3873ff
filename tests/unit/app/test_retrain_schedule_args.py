"""`args.retrain.schedule`: the retrain scheduler's settings from the app's args and config (its interval is
`predictor.model_update_interval` unless overridden), and the bootstrap that starts, replaces or stops it."""

from __future__ import annotations

import pytest

from app import bootstrap
from app.settings import AppArgs
from core.app_watch import APP_GRACE_S


def args(tmp_path, **retrain) -> AppArgs:
    config = tmp_path / "config.yaml"
    config.write_text("predictor:\n  model_update_interval: 2h\n")
    return AppArgs.model_validate({"config_path": str(config), "model_path": str(tmp_path / "models"),
                                   "state_path": str(tmp_path / "state"), "telemetry": {"enabled": True},
                                   "retrain": retrain}).with_absolute_paths()


def test_the_interval_is_the_configs_model_update_interval(tmp_path):
    settings = args(tmp_path, num_workers=2).scheduler_settings()
    assert settings is not None
    assert (settings.interval_s, settings.since_s, settings.degradation_factor) == (7200, 14 * 86400, 1.5)
    assert (settings.state_path, settings.model_path) == (str(tmp_path / "state"), str(tmp_path / "models"))
    assert (settings.model_id, settings.scaling.num_workers, settings.check_s) == ("power_lstm", 2, 30.0)


def test_every_other_served_resolution_is_scheduled_unless_told(tmp_path):
    settings = args(tmp_path).scheduler_settings()
    assert settings is not None
    assert [(o.model_id, o.interval_s, o.since_s) for o in settings.others] == [("power_lstm_1h", 86400, 56 * 86400)]
    alone = args(tmp_path, schedule={"other_resolutions": False}).scheduler_settings()
    assert alone is not None and alone.others == ()


def test_the_scheduler_trains_with_the_retrain_settings_ray_train_scaling(tmp_path):
    retrain = {"num_workers": 2, "use_gpu": True, "cpus_per_worker": 0.5, "resources_per_worker": {"trainer": 1.0}}
    settings = args(tmp_path, **retrain).scheduler_settings()
    assert settings is not None and settings.scaling.model_dump() == retrain


def test_the_schedule_can_override_the_interval_span_and_factor(tmp_path):
    schedule = {"interval": "20s", "since": "3h", "retrain_on_degradation_factor": None}
    settings = args(tmp_path, schedule=schedule).scheduler_settings()
    assert settings is not None
    assert (settings.interval_s, settings.since_s, settings.degradation_factor, settings.check_s) == (20, 10800,
                                                                                                      None, 5.0)


def test_scheduling_follows_the_telemetry_unless_told(tmp_path):
    assert AppArgs().scheduler_settings() is None  # no telemetry in the app: no store to train on
    assert args(tmp_path, schedule={"enabled": False}).scheduler_settings() is None
    explicit = AppArgs.model_validate({"retrain": {"schedule": {"enabled": True}}}).with_absolute_paths()
    assert explicit.scheduler_settings() is not None


@pytest.mark.parametrize("schedule", [{"interval": 0}, {"retrain_on_degradation_factor": 1.0}, {"since": "-1h"},
                                      {"every": "1h"}])
def test_bad_schedules_are_refused(schedule):
    with pytest.raises(ValueError):
        AppArgs.model_validate({"retrain": {"schedule": schedule}})


def test_the_bootstrap_starts_the_scheduler_with_its_settings_or_stops_it(tmp_path, monkeypatch: pytest.MonkeyPatch):
    calls: list = []
    monkeypatch.setattr(bootstrap, "start_telemetry", lambda *a, **k: calls.append(("telemetry", k["app_grace_s"])))
    monkeypatch.setattr(bootstrap, "stop_controller", lambda: calls.append("stop controller"))
    monkeypatch.setattr(bootstrap, "start_scheduler",
                        lambda settings, app_grace_s: calls.append((settings, app_grace_s)))
    monkeypatch.setattr(bootstrap, "stop_scheduler", lambda: calls.append("stop scheduler"))
    enabled = args(tmp_path)
    bootstrap.start_actors(enabled)
    assert calls == ["stop controller", ("telemetry", APP_GRACE_S), (enabled.scheduler_settings(), APP_GRACE_S)]
    calls.clear()
    bootstrap.start_actors(args(tmp_path, schedule={"enabled": False}))
    assert calls == ["stop controller", ("telemetry", APP_GRACE_S), "stop scheduler"]
