"""The retraining scheduler as a detached, named Ray actor beside the scaling controller, and its lifecycle.

The actor is pinned to the head node (where the state directory is) and restarted by Ray after a failure
(`max_restarts=-1`); a restarted one fails the attempt the failure interrupted and keeps the schedule it had
(training/power/scheduler.py). A background thread looks at what is due every `check_s`; an attempt runs in
that thread (Ray Train starts its workers from there), so the actor still answers while it trains. An attempt
still running after `KCLOUD_RETRAIN_MAX_DURATION` is failed as hung and the actor's process ended, so that Ray
restarts it and the schedule goes on (its training's workers end with it).

The app's bootstrap calls `start_scheduler`, which keeps a running scheduler only when it was started with the
same settings (`SchedulerSettings.fingerprint`) and otherwise replaces it, and `stop_scheduler` when
scheduled retraining is disabled. Stopping fails the attempt it interrupts and frees the model's lock. The
scheduler the app starts also ends itself once the app is gone, after the attempt under way (core/app_watch.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from core.actors import NamedActor, find_actor, kill_and_wait, settings_digest, start_head_singleton
from core.app_watch import answered_fingerprint, end_with_app
from core.names import SCHEDULER_ACTOR
from core.records import RecordStore
from training.power.scheduler import LiveAccuracy, RetrainScheduler, SchedulerSettings, fail_interrupted
from training.retrain_attempt import end_hung_process

logger = logging.getLogger(__name__)
CALL_TIMEOUT_S = 15.0


class RetrainSchedulerService:
    """Actor body: a RetrainScheduler per power model, stepped in turn by a daemon thread, fed the live accuracy it
    is told."""

    def __init__(self, settings: dict[str, Any], app_grace_s: float | None = None):
        self.settings = SchedulerSettings.model_validate(settings)
        self.app_grace_s = app_grace_s
        self._live: dict[str, LiveAccuracy] = {}
        owner = ray.get_runtime_context().get_actor_id()
        self.schedulers = {each.model_id: RetrainScheduler(each, live_accuracy=self._live.get, owner=owner,
                                                           on_hung=end_hung_process)
                           for each in self.settings.each()}
        interrupted = sum(scheduler.recover() for scheduler in self.schedulers.values())
        if interrupted:
            logger.warning("retrain scheduler: %d attempt(s) interrupted by a restart marked failed", interrupted)
        self._stepping = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._loop, name="retrain-scheduler", daemon=True).start()
        self.app_watch = None if app_grace_s is None else end_with_app("retrain scheduler", self.stop, app_grace_s)

    def _loop(self) -> None:
        while not self._stopped.wait(self.settings.check_s):  # a daemon thread: it ends with the actor
            with self._stepping:
                if self._stopped.is_set():
                    return
                for model_id, scheduler in self.schedulers.items():
                    if self._stopped.is_set():
                        return
                    try:
                        scheduler.step()
                    except Exception:  # noqa: BLE001 - a failed step is logged; the next one tries again
                        logger.exception("retrain scheduler: step for %s failed", model_id)

    def stop(self) -> None:
        """Start no attempt any more; returns once the attempt under way, if any, has finished."""
        self._stopped.set()
        with self._stepping:
            pass

    def fingerprint(self) -> str:
        """The digest of the settings this scheduler was started with, and whether it ends with the app (ENDING once
        it ends)."""
        return answered_fingerprint(scheduler_fingerprint(self.settings, self.app_grace_s), self._stopped.is_set(),
                                    self.app_watch)

    def settings_dict(self) -> dict[str, Any]:
        return self.settings.model_dump()

    def next_due(self, model_id: str | None = None) -> str | None:
        """When the next interval attempt of `model_id` (default: the default power model) is due (ISO 8601); None
        while the stored schedule cannot be read. KeyError for a model not scheduled."""
        due = self.schedulers[model_id or self.settings.model_id].next_due()
        return None if due is None else due.isoformat()

    def report_live_accuracy(self, accuracy: LiveAccuracy) -> None:
        """The live error of a served version (what the degradation trigger compares with its held-out MAE)."""
        self._live[accuracy.model_id] = accuracy


def scheduler_fingerprint(settings: SchedulerSettings, app_grace_s: float | None) -> str:
    return settings_digest(settings.fingerprint(), app_grace_s)


def start_scheduler(settings: SchedulerSettings, app_grace_s: float | None = None) -> ray.actor.ActorHandle:
    """The cluster's scheduler actor with these settings (detached, pinned to the head node): a running one
    started with the same settings is kept, one started otherwise is replaced. `app_grace_s` (the app's
    bootstrap sets it): it ends itself, after the attempt under way, once the API's Serve app has been gone that
    long (core/app_watch.py)."""
    return start_head_singleton(RetrainSchedulerService, SCHEDULER_ACTOR, scheduler_fingerprint(settings, app_grace_s),
                                stop_scheduler, settings.model_dump(), app_grace_s, timeout_s=CALL_TIMEOUT_S)


def stop_scheduler(timeout_s: float = 60.0) -> bool:
    """End the scheduler actor if it runs, failing the attempt it was running; True when there was one."""
    running = find_actor(SCHEDULER_ACTOR)
    if running is None:
        return False
    try:
        settings = SchedulerSettings.model_validate(ray.get(running.settings_dict.remote(), timeout=CALL_TIMEOUT_S))
    except (AttributeError, GetTimeoutError, RayActorError):
        settings = None
    kill_and_wait(SCHEDULER_ACTOR, running, timeout_s)
    if settings is not None:  # it is gone: the attempt it ran (its record fresh until now) has stopped too
        records = RecordStore(settings.state_path, "retrain")
        for each in settings.each():
            fail_interrupted(records, each.model_id, owner=running._actor_id.hex())
    return True


def scheduler_client(timeout_s: float = CALL_TIMEOUT_S) -> NamedActor:
    """A client of the scheduler actor: `.call("report_live_accuracy", accuracy)`, `.call("next_due")`;
    ActorUnavailable when it is not running."""
    return NamedActor(SCHEDULER_ACTOR, "the retrain scheduler", timeout_s=timeout_s,
                      hint=" (enable it with args.retrain.schedule)")
