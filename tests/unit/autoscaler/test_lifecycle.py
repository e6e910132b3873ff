"""The controller is tied to its app (issue 10): it notices its Serve application is gone (`AppWatch`), and the
bootstrap tells a controller started with other settings by its fingerprint. Starting and stopping the actor
itself runs on real Ray (tests/integration)."""

from __future__ import annotations

from pathlib import Path

from autoscaler.actor import AppWatch
from autoscaler.actuators import ActuationError
from autoscaler.settings import ControllerSettings, load_autoscaler_config
from core.names import INGRESS_DEPLOYMENT


class FakeServe:
    def __init__(self) -> None:
        self.now = 0.0
        self.deployments: set[str] | None = {INGRESS_DEPLOYMENT, "CostPredictor"}
        self.looks = 0

    def names(self) -> set[str]:
        self.looks += 1
        if self.deployments is None:
            raise ActuationError("Ray dashboard not reachable")
        return self.deployments


def watch(serve: FakeServe) -> AppWatch:
    return AppWatch(serve.names, grace_s=60, every_s=15, clock=lambda: serve.now)


def test_the_app_is_gone_only_after_the_grace_period():
    serve = FakeServe()
    app = watch(serve)
    assert not app.gone()
    serve.deployments = set()  # serve shutdown: no application at all
    serve.now = 15
    assert not app.gone()
    serve.now = 74
    assert not app.gone()
    serve.now = 75
    assert app.gone()


def test_an_app_back_within_the_grace_period_resets_it():
    serve = FakeServe()
    app = watch(serve)
    serve.deployments = {"PowerPredictor"}  # the API app deleted, another left
    app.gone()
    serve.now, serve.deployments = 30, {INGRESS_DEPLOYMENT}  # redeployed
    assert not app.gone()
    serve.now, serve.deployments = 90, set()  # gone again: the grace period starts over
    assert not app.gone()
    serve.now = 150
    assert app.gone()


def test_unanswered_looks_change_nothing_and_looks_are_spaced():
    serve = FakeServe()
    app = watch(serve)
    serve.deployments = None
    for second in range(0, 600, 5):
        serve.now = second
        assert not app.gone()
    assert serve.looks == 600 // 15


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_fingerprint_follows_the_settings_and_the_autoscaler_config(tmp_path):
    path = write(tmp_path, "auto_scaling:\n  evaluation_interval: 30s\n")
    settings = ControllerSettings(state_file="s.sqlite", config_path=str(path))
    first = settings.fingerprint(load_autoscaler_config(path, environ={}))
    assert first == settings.fingerprint(load_autoscaler_config(path, environ={}))
    assert first != settings.model_copy(update={"interval_s": 5.0}).fingerprint(load_autoscaler_config(path,
                                                                                                      environ={}))
    write(tmp_path, "auto_scaling:\n  evaluation_interval: 1min\n")
    assert first != settings.fingerprint(load_autoscaler_config(path, environ={}))
