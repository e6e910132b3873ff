"""The controller's lifecycle (issue 10): the bootstrap tells a controller started with other settings by its
fingerprint, and its loop outlives a failed tick and ends when stopped. How it ends with its app is in
tests/unit/core/test_app_watch.py; starting and stopping the actor itself runs on real Ray (tests/integration)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from autoscaler.actor import ScalingControllerService
from autoscaler.settings import ControllerSettings, load_autoscaler_config


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
    """What `ScalingControllerService._loop`, `tick` and `stop` use, without Ray: a controller whose first ticks
    fail, and that counts ticks and lease releases."""

    def __init__(self, failures: int) -> None:
        self.failures, self.ticks, self.leases_given_up = failures, 0, 0
        self.interval_s = 0.01
        self._stopped = threading.Event()
        self._tick_lock = threading.Lock()
        self.controller = self.metrics = self.live_export = self

    def tick(self) -> list:
        if self.failures:
            self.failures -= 1
            raise ValueError("Expecting value: line 1 column 1 (char 0)")  # a proxy's page where JSON was due
        self.ticks += 1
        return []

    def publish(self, _: object) -> None:
        pass

    def live_accuracy(self) -> None:
        return None

    def stop(self) -> None:
        self.leases_given_up += 1


def test_the_loop_outlives_a_failed_tick_and_ends_when_stopped():
    """A dead loop thread would leave the actor up, answering the API, while nothing scaled any more."""
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


def test_policy_writes_are_never_replayed_on_a_restarted_controller():
    """Regression: the actor's calls are retried across its restarts (max_task_retries=-1), so a DELETE that landed
    before a crash was replayed and answered 404 (a create, 200). Writes now fail as unanswered (a 503); reads and
    ticks are still retried."""
    for write in (ScalingControllerService.put_policy, ScalingControllerService.delete_policy):
        assert write.__ray_max_task_retries__ == 0, write.__name__
    for read in (ScalingControllerService.policies, ScalingControllerService.stored_policies,
                 ScalingControllerService.stored_policy, ScalingControllerService.tick):
        assert not hasattr(read, "__ray_max_task_retries__"), read.__name__
