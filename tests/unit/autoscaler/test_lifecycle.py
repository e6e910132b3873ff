"""The controller is tied to its app (issue 10): it notices its Serve application is gone (`AppWatch`), and the
bootstrap tells a controller started with other settings by its fingerprint. Starting and stopping the actor
itself runs on real Ray (tests/integration)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from autoscaler.actor import AppWatch, ScalingControllerService
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


class LoopStandIn:
    """What `ScalingControllerService._loop`, `tick` and `stop` use, without Ray: an app watch that fails a few
    times, and a controller that counts ticks and lease releases."""

    def __init__(self, failures: int) -> None:
        self.failures, self.ticks, self.leases_given_up = failures, 0, 0
        self.interval_s = 0.01
        self._stopped = threading.Event()
        self._tick_lock = threading.Lock()
        self.app = self.controller = self.metrics = self.live_export = self

    def gone(self) -> bool:
        if self.failures:
            self.failures -= 1
            raise ValueError("Expecting value: line 1 column 1 (char 0)")  # a proxy's page where JSON was due
        return False

    def tick(self) -> list:
        self.ticks += 1
        return []

    def publish(self, _: object) -> None:
        pass

    def live_accuracy(self) -> None:
        return None

    def stop(self) -> None:
        self.leases_given_up += 1


def test_the_loop_outlives_a_failed_app_look_and_ends_when_stopped():
    """Before, an unexpected error from the app watch (outside the tick's try) ended the loop thread for good: the
    actor stayed up and answered the API while nothing scaled any more."""
    service = LoopStandIn(failures=3)
    thread = threading.Thread(target=ScalingControllerService._loop, args=(service,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while service.ticks < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.failures == 0 and service.ticks >= 2
    ScalingControllerService.stop(service)  # flag first, then the lease
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert service.leases_given_up == 1
    ticks = service.ticks
    assert ScalingControllerService.tick(service) == []  # a tick asked for after stop does nothing
    assert service.ticks == ticks
