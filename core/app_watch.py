"""The actors the API's app starts (scaling controller, retrain scheduler, collector supervisor) end with it.

Each is detached, so it outlives `serve shutdown` or the app's deletion unless it notices. `AppWatch` tells
whether no Serve application has the API's ingress deployment any more, seen over a grace period (a redeploy
replaces the app within it); `end_with_app` runs that watch on a daemon thread of the actor and calls the
actor's own ending once the app is gone. Serve is asked through its public `serve.status()`, on a bounded
call: a Serve controller that does not answer is an unanswered look, which changes nothing. An actor kept by a new
bootstrap starts its grace period over, and an ending one tells the bootstrap so (`ENDING`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from core.actors import LIFECYCLE
from core.bounded import BoundedCall
from core.names import INGRESS_DEPLOYMENT

logger = logging.getLogger(__name__)
WATCH_INTERVAL_S = 15.0  # how often an actor looks for its app
APP_GRACE_S = 180.0  # how long its app may be missing before the actor ends itself
LOOK_TIMEOUT_S = 10.0  # how long one look waits for Serve's controller
MAX_END_RETRY_S = 60.0  # the longest wait between two attempts to end the actor


class AppWatch:
    """Whether the API's Serve application is gone: no application has its ingress deployment, seen over
    `grace_s` (at most one look every `every_s`), the latest look included. An unanswered look neither starts nor
    ends the grace period, and the app is not gone until a look answers again.

    `keep()` is what the app's bootstrap tells an actor it keeps: its app is being (re)built, so the grace period
    starts over; `conclude()` decides the end, after which `keep()` answers False (the bootstrap must start a new
    actor, not keep one that is ending)."""

    def __init__(self, deployments: Callable[[], set[str]], grace_s: float = APP_GRACE_S,
                 every_s: float = WATCH_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.deployments, self.grace_s, self.every_s, self.clock = deployments, grace_s, every_s, clock
        self.missing_since: float | None = None
        self.ending = False
        self._answered = False  # whether the latest look was answered
        self._looked_at = -math.inf
        self._lock = threading.Lock()

    def gone(self) -> bool:
        now = self.clock()
        if now - self._looked_at >= self.every_s:
            self._looked_at = now
            try:
                present = INGRESS_DEPLOYMENT in self.deployments()
            except Exception as exc:  # noqa: BLE001 - Serve not answering is no evidence either way
                logger.debug("cannot tell whether the app runs: %s", exc)
                self._answered = False
            else:
                with self._lock:
                    self._answered = True
                    self.missing_since = None if present else (self.missing_since if self.missing_since is not None
                                                               else now)
        with self._lock:
            return (self._answered and self.missing_since is not None
                    and self.clock() - self.missing_since >= self.grace_s)

    def conclude(self) -> bool:
        """Whether the app is gone; once it is, the actor is ending for good (`keep` answers False from then on)."""
        gone = self.gone()
        with self._lock:
            if gone and self.missing_since is not None:  # not kept by a bootstrap meanwhile
                self.ending = True
            return self.ending

    def keep(self) -> bool:
        """The app's bootstrap keeps this actor: the grace period starts over. False when it is ending already."""
        with self._lock:
            if not self.ending:
                self.missing_since = None
            return not self.ending


ENDING = "ending"
"""What an ending actor answers for its fingerprint: equal to no settings' digest, so a bootstrap replaces it."""


def answered_fingerprint(fingerprint: str, stopped: bool, watch: AppWatch | None) -> str:
    """What an actor answers a bootstrap that asks for its fingerprint (core/actors.py `keep_unchanged`): ENDING once
    it has stopped or its app watch has decided it ends; else `fingerprint` with the LIFECYCLE version, its app
    watch's grace period starting over (the app is being built again)."""
    if stopped or (watch is not None and not watch.keep()):
        return ENDING
    return f"{fingerprint}+{LIFECYCLE}"


def serve_deployments(timeout_s: float = LOOK_TIMEOUT_S) -> Callable[[], set[str]]:
    """A lister of every deployment of every Serve application (none when Serve is not running), each look
    waited for at most `timeout_s` (TimeoutError)."""
    look = BoundedCall("serve-status")

    def names() -> set[str]:
        from ray import serve  # imported where it runs: a Ray actor of the cluster
        from ray.exceptions import ActorDiedError
        from ray.serve import context

        try:
            status = look.run(serve.status, timeout_s)
        except ActorDiedError:  # the Serve controller it cached has ended (serve shutdown): find the current one
            context._set_global_client(None)
            status = look.run(serve.status, timeout_s)
        return {name for app in status.applications.values() for name in app.deployments}

    return names


def end_current_actor() -> None:
    """End the actor this runs in for good (Ray does not restart it)."""
    import ray

    ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


def end_with_app(what: str, stop: Callable[[], None], grace_s: float = APP_GRACE_S, *,
                 watch: AppWatch | None = None, sleep: Callable[[float], None] = time.sleep,
                 end_actor: Callable[[], None] = end_current_actor) -> AppWatch:
    """Start a daemon thread that, once the app has been gone for `grace_s`, calls the actor's `stop` and then
    ends the actor; `what` names it in the log. The default watch asks Serve (a look every 15 s, or every third
    of a shorter grace). Returns the watch: the actor's `fingerprint()` asks it `keep()`."""
    watch = watch or AppWatch(serve_deployments(), grace_s, every_s=min(WATCH_INTERVAL_S, grace_s / 3))

    def run() -> None:
        while not watch.conclude():
            sleep(watch.every_s)
        logger.warning("%s: no Serve application has %s any more (serve shutdown or the app deleted): ending",
                       what, INGRESS_DEPLOYMENT)
        try:
            stop()
        except Exception:  # noqa: BLE001 - logged; it ends all the same
            logger.exception("%s: stopping failed", what)
        attempt = 0
        while True:
            try:
                end_actor()
                return
            except Exception:  # noqa: BLE001 - tried again; meanwhile it answers ENDING, so a bootstrap replaces it
                attempt += 1
                logger.exception("%s: could not end itself (attempt %d)", what, attempt)
                sleep(min(watch.every_s * attempt, MAX_END_RETRY_S))

    threading.Thread(target=run, name="app-watch", daemon=True).start()
    return watch
