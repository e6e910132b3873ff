"""RemoteStore: every failure behind the store actor is StoreUnavailable, in words without addresses (no Ray)."""

from __future__ import annotations

import pytest

from core.actors import ActorUnavailable, NamedActor
from core.names import STORE_ACTOR
from core.stores.base import StoreUnavailable, WriteRefused
from core.stores.remote import RemoteStore, StoreActorUnavailable


class _RayTaskError(RuntimeError):
    """Like Ray's wrapper of an actor method's exception: the original is its `cause`."""

    def __init__(self, cause: BaseException):
        super().__init__(f"ray::TelemetryStoreService.latest() (pid=1, ip=10.0.0.7)\n{cause}")
        self.cause = cause


def test_calls_go_to_the_store_actor(monkeypatch):
    monkeypatch.setattr(NamedActor, "call", lambda self, method, *args: (self.name, method, args))
    assert RemoteStore().latest("n1") == (STORE_ACTOR, "latest", ("n1",))
    assert RemoteStore().write(iter([])) == (STORE_ACTOR, "write", ([],))


def test_a_missing_actor_and_a_failing_backend_are_store_unavailable(monkeypatch):
    def missing(self, method, *args):
        raise StoreActorUnavailable("the telemetry store is not running")

    monkeypatch.setattr(NamedActor, "call", missing)
    with pytest.raises(StoreUnavailable, match="is not running"):
        RemoteStore().nodes()

    def backend_down(self, method, *args):
        raise _RayTaskError(StoreUnavailable("InfluxDB query at http://10.0.0.9:8086 failed"))

    monkeypatch.setattr(NamedActor, "call", backend_down)
    with pytest.raises(StoreActorUnavailable) as caught:
        RemoteStore().latest()
    assert str(caught.value) == "the telemetry store failed: StoreUnavailable"
    assert isinstance(caught.value, StoreUnavailable) and isinstance(caught.value, ActorUnavailable)


def test_a_write_refused_for_good_stays_a_refusal(monkeypatch):
    """A buffer retries StoreUnavailable for ever; a refusal must reach it as such, so it can drop and count."""

    def refused(self, method, *args):
        raise _RayTaskError(WriteRefused("InfluxDB at <address> refused 3 of 3 line(s): HTTP 422: retention"))

    monkeypatch.setattr(NamedActor, "call", refused)
    with pytest.raises(WriteRefused, match="refused 3 of 3") as caught:
        RemoteStore().write([])
    assert not isinstance(caught.value, StoreUnavailable)
