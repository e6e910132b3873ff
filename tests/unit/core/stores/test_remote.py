"""RemoteStore: every failure behind the store actor is StoreUnavailable, in words without addresses (no Ray)."""

from __future__ import annotations

import logging
import pickle

import pytest
from ray.exceptions import GetTimeoutError

from core.actors import ActorUnavailable, NamedActor
from core.names import STORE_ACTOR
from core.stores import remote
from core.stores.base import StoreUnavailable, WriteRefused
from core.stores.remote import RemoteStore, StoreActorUnavailable


class _RayTaskError(RuntimeError):
    """Like Ray's wrapper of an actor method's exception: the original is its `cause`."""

    def __init__(self, cause: BaseException):
        super().__init__(f"ray::TelemetryStoreService.latest() (pid=1, ip=10.0.0.7)\n{cause}")
        self.cause = cause


def answer_with(monkeypatch, answer) -> None:
    """The store actor's calls answered by `answer(actor, method, *args)` as their results are read."""
    monkeypatch.setattr(NamedActor, "send", lambda self, method, *args: (self, method, args))
    monkeypatch.setattr(NamedActor, "result", lambda self, call: answer(call[0], call[1], *call[2]))


def test_calls_go_to_the_store_actor(monkeypatch):
    answer_with(monkeypatch, lambda self, method, *args: (self.name, method, args))
    assert RemoteStore().latest("n1") == (STORE_ACTOR, "latest", ("n1",))
    assert RemoteStore().window("n1", None, None, 60) == (STORE_ACTOR, "window", ("n1", None, None, 60))


@pytest.mark.parametrize(("reader", "window", "latest"), [("controller", "control_window", "control_latest"),
                                                             ("retraining", "retraining_window", "latest")])
def test_the_controller_and_a_retraining_read_in_groups_of_their_own(monkeypatch, reader, window, latest):
    answer_with(monkeypatch, lambda self, method, *args: method)
    store = RemoteStore(reader=reader)
    assert store.window("n1", None, None, 60) == window and store.latest() == latest


@pytest.mark.parametrize("reader", ["controller", "retraining"])
def test_an_older_store_actor_without_the_group_still_answers_its_windows(monkeypatch, caplog, reader):
    """A store actor started by an earlier version has no `control_window`: every forecast window of the controller
    failed as "store unavailable", for as long as that actor ran. The missing method is no backend failure: not
    logged as one (review: a warning a minute per process)."""
    def send(self, method, *args):
        if method not in ("window", "latest"):
            raise AttributeError(f"'ActorHandle' object has no attribute {method!r}")
        return method

    monkeypatch.setattr(NamedActor, "send", send)
    monkeypatch.setattr(NamedActor, "result", lambda self, call: call)
    with caplog.at_level(logging.WARNING, logger="core.stores.remote"):
        assert RemoteStore(reader=reader).window("n1", None, None, 60) == "window"
        assert RemoteStore(reader=reader).latest("n1") == "latest"
    assert not caplog.records


def test_an_attribute_error_the_actor_raised_is_not_taken_for_an_older_actor(monkeypatch):
    """Regression: Ray's wrapper of an AttributeError raised inside the actor's window read is an AttributeError too,
    so the failed read was sent again, to the API's group."""
    class _RayTaskAttributeError(_RayTaskError, AttributeError):
        pass

    sent = []

    def send(self, method, *args):
        sent.append(method)
        return method

    def result(self, call):
        raise _RayTaskAttributeError(AttributeError("'NoneType' object has no attribute 'execute'"))

    monkeypatch.setattr(NamedActor, "send", send)
    monkeypatch.setattr(NamedActor, "result", result)
    with pytest.raises(StoreUnavailable, match="the telemetry store failed"):
        RemoteStore(reader="controller").window("n1", None, None, 60)
    assert sent == ["control_window"]


def test_a_large_write_goes_in_chunks_each_with_its_own_timeout(monkeypatch):
    """One call for a whole spilled segment (20,000 samples: four InfluxDB writes of up to 10 s) timed out at 10 s
    while the actor went on writing, and the buffer sent it again."""
    calls = []

    def call(self, method, *args):
        calls.append((method, len(args[0]), self.timeout_s))
        return len(args[0])

    answer_with(monkeypatch, call)
    assert RemoteStore().write(iter([object()] * 12_000)) == 12_000
    assert calls == [("write", 5000, 30.0), ("write", 5000, 30.0), ("write", 2000, 30.0)]
    calls.clear()
    assert RemoteStore().write([]) == 0 and calls == []  # nothing to send


def test_a_missing_actor_and_a_failing_backend_are_store_unavailable(monkeypatch, caplog):
    def missing(self, method, *args):
        raise StoreActorUnavailable("the telemetry store is not running")

    answer_with(monkeypatch, missing)
    with pytest.raises(StoreUnavailable, match="is not running"):
        RemoteStore().nodes()

    def backend_down(self, method, *args):
        raise _RayTaskError(StoreUnavailable("InfluxDB query at http://10.0.0.9:8086 failed"))

    answer_with(monkeypatch, backend_down)
    with pytest.raises(StoreActorUnavailable) as caught:
        RemoteStore().latest()
    # API bodies and records say the type; the operator's log says why (a backend's words may name internal hosts)
    assert str(caught.value) == "the telemetry store failed: StoreUnavailable"
    assert "telemetry store: StoreUnavailable: InfluxDB query at http://10.0.0.9:8086 failed" in caplog.text
    caplog.clear()
    with pytest.raises(StoreActorUnavailable):
        RemoteStore().latest()
    assert caplog.text == ""  # the same reason again within the minute: not logged again
    assert isinstance(caught.value, StoreUnavailable) and isinstance(caught.value, ActorUnavailable)


def test_a_write_refused_for_good_stays_a_refusal(monkeypatch):
    """A buffer retries StoreUnavailable for ever; a refusal must reach it as such, so it can drop and count."""

    calls = []

    def refused_first(self, method, *args):
        calls.append(len(args[0]))
        if len(calls) == 1:
            error = WriteRefused("InfluxDB at <address> refused 3000 of 5000 line(s): HTTP 422", 3000, 2000)
            raise _RayTaskError(pickle.loads(pickle.dumps(error)))  # as Ray brings it back
        return len(args[0])

    answer_with(monkeypatch, refused_first)
    with pytest.raises(WriteRefused, match="refused 3000 of 5000") as caught:
        RemoteStore().write([object()] * 6000)
    assert not isinstance(caught.value, StoreUnavailable)
    assert calls == [5000, 1000]  # the chunk after the refused one was still written
    assert (caught.value.refused, caught.value.written) == (3000, 3000)


def test_regression_a_write_that_timed_out_is_not_sent_again_while_it_waits(monkeypatch):
    """Each retry of a collector (every flush) added one more call of up to 5,000 samples to the queue of an actor
    whose backend hung: memory grew by the hour, and the backlog was written again after the recovery."""
    sent, answered = [], set()

    def send(self, method, *args):
        sent.append(method)
        return len(sent)  # the call's reference

    def result(self, call):
        if call not in answered:
            raise StoreActorUnavailable("the telemetry store did not answer: GetTimeoutError") from GetTimeoutError()
        return 1

    monkeypatch.setattr(NamedActor, "send", send)
    monkeypatch.setattr(NamedActor, "result", result)
    monkeypatch.setattr(remote.ray, "wait", lambda calls, timeout: ([c for c in calls if c in answered], []))
    store = RemoteStore()
    with pytest.raises(StoreActorUnavailable, match="did not answer"):
        store.write([object()])
    for _ in range(3):
        with pytest.raises(StoreActorUnavailable, match="has not answered an earlier write yet"):
            store.write([object()])
    assert sent == ["write"]
    answered.update({1, 2})  # the backend is back: the queued call is answered, and the next
    assert store.write([object()]) == 1 and sent == ["write", "write"]


def test_a_write_that_failed_otherwise_does_not_hold_the_next(monkeypatch):
    calls = []

    def missing(self, method, *args):
        calls.append(method)
        raise StoreActorUnavailable("the telemetry store is not running")

    answer_with(monkeypatch, missing)
    store = RemoteStore()
    for _ in range(2):
        with pytest.raises(StoreActorUnavailable, match="not running"):
            store.write([object()])
    assert calls == ["write", "write"]


def test_a_ray_error_while_sending_is_store_unavailable_too(monkeypatch):
    """While the head's GCS restarts, looking the actor up raises Ray's own errors, not "not found": they reached
    the routes as 500s instead of the store's 503 or the features-only answer."""
    def gcs_down(self, method, *args):
        raise ConnectionError("failed to connect to GCS at 10.0.0.7:6379")

    monkeypatch.setattr(NamedActor, "send", gcs_down)
    for call in (lambda store: store.latest(), lambda store: store.write([object()]), lambda store: store.nodes()):
        with pytest.raises(StoreActorUnavailable) as caught:
            call(RemoteStore())
        assert str(caught.value) == "the telemetry store failed: ConnectionError"


def test_a_node_list_is_reused_for_its_ttl_only_where_asked(monkeypatch):
    """The API's replicas tell an unknown node from a stopped one by the node list: on InfluxDB a 30-day scan, on
    Prometheus the whole database, asked once per request for a node the store does not have."""
    asked = []
    answer_with(monkeypatch, lambda self, method, *args: asked.append((method, args)) or ["n1"])
    clock = [100.0]
    monkeypatch.setattr(remote.time, "monotonic", lambda: clock[0])
    cached, plain = RemoteStore(nodes_ttl_s=30), RemoteStore()
    assert cached.nodes() == cached.nodes() == ["n1"] and len(asked) == 1
    cached.nodes(since=None)
    assert len(asked) == 1
    clock[0] += 30
    assert cached.nodes() == ["n1"] and len(asked) == 2  # its time is up: asked again
    plain.nodes(), plain.nodes()
    assert len(asked) == 4  # no ttl: every call asks
    cached.nodes(since="t"), cached.nodes(since="t")
    assert asked[-2:] == [("nodes", ("t",)), ("nodes", ("t",))]  # with `since`: never reused
