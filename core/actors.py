"""One client for the cluster's named actors (store, collector supervisor, scaling controller, retrain scheduler)."""

from __future__ import annotations

from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from core.names import NAMESPACE


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
        try:
            actor = ray.get_actor(self.name, namespace=self.namespace)
        except ValueError as exc:
            raise self.error(f"{self.description} is not running{self.hint}") from exc
        try:
            return ray.get(getattr(actor, method).remote(*args), timeout=self.timeout_s)
        except (GetTimeoutError, RayActorError) as exc:
            raise self.error(f"{self.description} did not answer: {type(exc).__name__}{self.hint}") from exc
