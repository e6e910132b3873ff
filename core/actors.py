"""The cluster's named actors (store, collector supervisor, scaling controller, retrain scheduler): one client
for calling them, and the lifecycle of the singletons pinned to the head node."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from core.names import NAMESPACE

logger = logging.getLogger(__name__)


class ActorUnavailable(RuntimeError):
    """The named actor is not running or did not answer in time; the message says which, for a person."""


class NamedActor:
    """Calls methods of the actor called `name`, looked up on every call (so a restarted actor is found).

    `description` names the actor in messages ("the scaling controller"); `hint` is added to them (e.g. how to
    enable it). Not there, dead or too slow: `error` (ActorUnavailable or a subclass). An exception the method
    itself raises reaches the caller as that exception.
    """

    def __init__(self, name: str, description: str, *, namespace: str = NAMESPACE, timeout_s: float = 10.0,
                 hint: str = "", error: type[ActorUnavailable] = ActorUnavailable):
        self.name, self.description, self.namespace = name, description, namespace
        self.timeout_s, self.hint, self.error = timeout_s, hint, error

    def exists(self) -> bool:
        """Whether the actor is registered now (it may still be starting or restarting)."""
        try:
            ray.get_actor(self.name, namespace=self.namespace)
        except ValueError:
            return False
        return True

    def call(self, method: str, *args: Any) -> Any:
        """The method's result, waited for at most `timeout_s`."""
        return self.result(self.send(method, *args))

    async def call_async(self, method: str, *args: Any) -> Any:
        """`call` from an event loop: a worker thread only for the lookup, none while the actor answers (waiting in
        one, a slow actor held a thread of the loop's small pool per request, and the routes sharing it waited)."""
        call = await asyncio.to_thread(self.send, method, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(call.future()), self.timeout_s)
        except (TimeoutError, RayActorError) as exc:
            if isinstance(exc, RayTaskError):  # the method's own error (a TimeoutError it raised), as `call` gives it
                raise
            raise self._unanswered(exc) from exc

    def send(self, method: str, *args: Any) -> ray.ObjectRef:
        """Call the method without waiting: its result's reference (`result` waits for it)."""
        try:
            actor = ray.get_actor(self.name, namespace=self.namespace)
        except ValueError as exc:
            raise self.error(f"{self.description} is not running{self.hint}") from exc
        return getattr(actor, method).remote(*args)

    def result(self, call: ray.ObjectRef) -> Any:
        """A sent call's result, waited for at most `timeout_s` (the call itself goes on after a timeout)."""
        try:
            return ray.get(call, timeout=self.timeout_s)
        except (GetTimeoutError, RayActorError) as exc:
            raise self._unanswered(exc) from exc

    def _unanswered(self, exc: Exception) -> ActorUnavailable:
        return self.error(f"{self.description} did not answer: {type(exc).__name__}{self.hint}")


def settings_digest(*parts: Any) -> str:
    """A singleton's fingerprint: the digest of the JSON-able arguments it was started with."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


LIFECYCLE = "lifecycle-3"
"""Added to the fingerprints of the singletons tied to the app (core/app_watch.py `answered_fingerprint`): a
singleton started by code from before a lifecycle change, or a change of the methods the app calls (lifecycle-3: the
controller's `events_page`), answers without it, so a bootstrap replaces it even when its settings are unchanged."""

HEAD = {"node:__internal_head__": 0.001}
RESTART_WAIT_S = 2.0  # how long keep_unchanged gives an actor that is restarting before asking again
"""The resource request that places an actor on the head node."""


def find_actor(name: str, namespace: str = NAMESPACE) -> ray.actor.ActorHandle | None:
    """The handle of the actor registered as `name`, or None."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def start_head_singleton(service: type, name: str, fingerprint: str, stop: Callable[[], object], *args: Any,
                         timeout_s: float = 15.0) -> ray.actor.ActorHandle:
    """The cluster's one `service` actor called `name`: detached, pinned to the head node and restarted after a
    failure. A running one whose `fingerprint()` answers `fingerprint` is kept; any other (started with other
    settings, an older version, one not answering) is ended by `stop` and a new one started with `args`."""
    ended: list[bool] = []
    running = keep_unchanged(name, f"{fingerprint}+{LIFECYCLE}", lambda: (ended.append(True), stop()), timeout_s)
    if running is not None:
        return running
    if ended and find_actor(name) is not None:  # the ended one holds the name: get_if_exists would hand it back dead
        raise ActorUnavailable(f"the replaced {name} actor is still registered {timeout_s:g} s after it was ended; "
                               "try again")
    return ray.remote(service).options(
        name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=-1,
        max_task_retries=-1, num_cpus=0, resources=HEAD,
    ).remote(*args)


def keep_unchanged(name: str, fingerprint: str, stop: Callable[[], object],
                   timeout_s: float) -> ray.actor.ActorHandle | None:
    """The running actor `name` when its `fingerprint()` answers `fingerprint`; otherwise any running one (started
    with other settings, an older version, ending, or not answering twice in a row: a busy actor gets a second
    chance) is ended by `stop`, and None is returned."""
    running = find_actor(name)
    if running is None:
        return None
    answer = "no answer"
    for _ in range(2):
        try:
            answer = ray.get(running.fingerprint.remote(), timeout=timeout_s)
        except GetTimeoutError:  # busy
            continue
        except ActorUnavailableError:  # restarting: it answers fast, so give it a moment
            time.sleep(RESTART_WAIT_S)
            continue
        except (AttributeError, RayActorError):
            answer = "gone or of an older version"
        break
    if answer == fingerprint:
        return running
    logger.info("%s: replacing the running actor (its fingerprint: %s)", name, answer)
    stop()
    return None


def kill_and_wait(name: str, handle: ray.actor.ActorHandle, timeout_s: float) -> bool:
    """End the actor for good and wait, at most `timeout_s`, until its name is free for a new one; whether it is."""
    ray.kill(handle, no_restart=True)
    return not wait_until_gone([name], timeout_s)


def wait_until_gone(names: list[str], timeout_s: float) -> list[str]:
    """Wait, at most `timeout_s` for all of them together, until no actor is registered under these names; returns
    those still registered then (logged)."""
    deadline = time.monotonic() + timeout_s
    left = list(names)
    while left and time.monotonic() < deadline:
        left = [name for name in left if find_actor(name) is not None]
        if left:
            time.sleep(0.2)
    if left:
        logger.warning("actors still registered %.0f s after they were ended: %s", timeout_s, left)
    return left
