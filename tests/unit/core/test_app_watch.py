"""The actors the app starts end with it (issue 10): `AppWatch` tells when the API's Serve app has been gone for
its grace period, and `end_with_app` then stops the actor and ends it. The real look at Serve, and the actors
ending on a real cluster without the app, run in tests/integration/test_multinode.py."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from core.actors import LIFECYCLE
from core.app_watch import ENDING, AppWatch, answered_fingerprint, end_with_app, serve_deployments
from core.names import INGRESS_DEPLOYMENT


class FakeServe:
    def __init__(self) -> None:
        self.now = 0.0
        self.deployments: set[str] | None = {INGRESS_DEPLOYMENT, "CostPredictor"}
        self.looks = 0

    def names(self) -> set[str]:
        self.looks += 1
        if self.deployments is None:
            raise TimeoutError("serve-status: no answer within 10 s")
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


def test_the_app_is_gone_only_when_the_latest_look_answered():
    """Regression: looks that failed after one that found the app missing let the grace period run out on stale
    evidence (a redeploy meanwhile could not be seen)."""
    serve = FakeServe()
    app = watch(serve)
    serve.deployments = set()
    app.gone()  # missing since 0
    serve.now, serve.deployments = 60, None  # Serve stops answering
    assert not app.gone()
    serve.now, serve.deployments = 75, set()
    assert app.gone()  # answered again: missing since 0


def test_a_bootstrap_keeping_the_actor_starts_the_grace_over_and_an_ending_one_is_not_kept():
    serve = FakeServe()
    app = watch(serve)
    serve.deployments = set()
    app.gone()  # missing since 0
    serve.now = 50
    assert app.keep()  # a redeploy's bootstrap keeps the actor while its app is being built
    assert answered_fingerprint("digest", False, app) == f"digest+{LIFECYCLE}"
    serve.now = 75
    assert not app.conclude()  # missing since the look at 75 only
    serve.now = 135
    assert app.conclude() and app.ending
    assert not app.keep() and answered_fingerprint("digest", False, app) == ENDING  # the bootstrap starts a new one
    assert answered_fingerprint("digest", True, None) == ENDING  # stopped by hand


def test_a_look_after_serve_shutdown_finds_the_current_controller(monkeypatch):
    """serve.status() caches the Serve controller's handle: after `serve shutdown` every look failed on the dead
    handle, so the actors never ended."""
    from ray import serve
    from ray.exceptions import ActorDiedError, ActorUnavailableError
    from ray.serve import context

    calls: list[str] = []

    def status():
        calls.append("status")
        if len(calls) == 1:
            raise ActorDiedError()
        if len(calls) == 4:
            raise ActorUnavailableError("restarting", None)  # passing: no evidence, the cache kept
        return SimpleNamespace(applications={})  # no controller any more: Serve reports no application

    monkeypatch.setattr(serve, "status", status)
    monkeypatch.setattr(context, "_set_global_client", lambda client: calls.append(f"cache {client}"))
    look = serve_deployments(timeout_s=5)
    assert look() == set()
    assert calls == ["status", "cache None", "status"]
    with pytest.raises(ActorUnavailableError):
        look()
    assert calls[3:] == ["status"]


class Actor:
    """What `end_with_app` drives: the actor's stop, and its end, in the order they happen."""

    def __init__(self, stop_fails: bool = False) -> None:
        self.calls: list[str] = []
        self.stop_fails = stop_fails
        self.ended = threading.Event()

    def stop(self) -> None:
        self.calls.append("stop")
        if self.stop_fails:
            raise RuntimeError("a collector did not answer")

    def end(self) -> None:
        self.calls.append("end")
        self.ended.set()


def run_until_gone(actor: Actor, serve: FakeServe, present_looks: int) -> list[float]:
    """Serve shows the app for `present_looks` looks, then none; the clock moves by each sleep."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        serve.now += seconds
        if serve.looks >= present_looks:
            serve.deployments = set()

    end_with_app("test actor", actor.stop, watch=watch(serve), sleep=sleep, end_actor=actor.end)
    assert actor.ended.wait(timeout=10)
    return slept


def test_the_actor_is_stopped_then_ended_once_its_app_is_gone():
    serve, actor = FakeServe(), Actor()
    slept = run_until_gone(actor, serve, present_looks=3)
    assert actor.calls == ["stop", "end"]
    assert set(slept) == {15}
    assert serve.now == 3 * 15 + 60  # missing from the 4th look, gone a grace period later


def test_an_actor_whose_stop_fails_is_ended_all_the_same():
    serve, actor = FakeServe(), Actor(stop_fails=True)
    run_until_gone(actor, serve, present_looks=1)
    assert actor.calls == ["stop", "end"]


def test_a_short_grace_looks_more_often(monkeypatch):
    from core import app_watch

    looked: list[AppWatch] = []

    def spy(*args, **kwargs) -> AppWatch:
        looked.append(AppWatch(*args, **kwargs))
        return looked[-1]

    monkeypatch.setattr(app_watch, "AppWatch", spy)
    monkeypatch.setattr(app_watch, "serve_deployments", lambda: lambda: {INGRESS_DEPLOYMENT})  # no Ray here
    for grace_s in (6.0, 180.0):
        end_with_app("test actor", lambda: None, grace_s, sleep=lambda _: threading.Event().wait(3600))
    assert [(w.grace_s, w.every_s) for w in looked] == [(6.0, 2.0), (180.0, 15.0)]
