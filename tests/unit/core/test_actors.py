"""The named-actor client: who is missing or slow becomes ActorUnavailable, for a person to read (no Ray)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from types import SimpleNamespace

import pytest
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayTaskError

from core.actors import ActorUnavailable, NamedActor, keep_unchanged
from core.app_watch import ENDING
from core.names import NAMESPACE


class _Method:
    def __init__(self, calls: list, name: str):
        self.calls, self.name = calls, name

    def remote(self, *args):
        self.calls.append((self.name, args))
        return f"ref-{self.name}"


class _Actor:
    def __init__(self):
        self.calls: list = []

    def __getattr__(self, name: str) -> _Method:
        return _Method(self.calls, name)


@pytest.fixture
def actor(monkeypatch: pytest.MonkeyPatch) -> _Actor:
    found = _Actor()

    def get_actor(name: str, namespace: str):
        if (name, namespace) != ("store", NAMESPACE):
            raise ValueError(f"Failed to look up actor with name '{name}'")
        return found

    monkeypatch.setattr(ray, "get_actor", get_actor)
    return found


def test_the_answer_comes_back_and_missing_actors_say_so(actor, monkeypatch):
    monkeypatch.setattr(ray, "get", lambda ref, timeout: (ref, timeout))
    client = NamedActor("store", "the telemetry store", timeout_s=3.0)
    assert client.call("latest", "n1") == ("ref-latest", 3.0)
    assert actor.calls == [("latest", ("n1",))]
    assert client.exists()
    ghost = NamedActor("ghost", "the scaling controller", hint=" (enable it with args.autoscaler.enabled)")
    assert not ghost.exists()
    with pytest.raises(ActorUnavailable) as missing:
        ghost.call("policies")
    assert str(missing.value) == "the scaling controller is not running (enable it with args.autoscaler.enabled)"


@pytest.mark.parametrize("failure", [GetTimeoutError("timed out after 3 s"), ActorDiedError()])
def test_a_dead_or_slow_actor_is_unavailable_by_type_only(actor, monkeypatch, failure):
    class Unreachable(ActorUnavailable):
        pass

    def get(ref, timeout):
        raise failure

    monkeypatch.setattr(ray, "get", get)
    with pytest.raises(Unreachable) as caught:
        NamedActor("store", "the telemetry store", error=Unreachable).call("nodes")
    assert str(caught.value) == f"the telemetry store did not answer: {type(failure).__name__}"


def test_the_method_s_own_error_reaches_the_caller(actor, monkeypatch):
    def get(ref, timeout):
        raise KeyError("no such policy")

    monkeypatch.setattr(ray, "get", get)
    with pytest.raises(KeyError):
        NamedActor("store", "the telemetry store").call("policy", "x")


class _Ref:
    """An ObjectRef's future: answered (or raising) at once, or never."""

    def __init__(self, answer=None, never: bool = False):
        self.answer, self.never = answer, never

    def future(self) -> concurrent.futures.Future:
        done: concurrent.futures.Future = concurrent.futures.Future()
        if isinstance(self.answer, Exception):
            done.set_exception(self.answer)
        elif not self.never:
            done.set_result(self.answer)
        return done


def test_an_async_call_answers_and_a_slow_or_dead_actor_is_unavailable_without_holding_a_thread(monkeypatch):
    """Regression: the API waited for the controller in a worker thread (`asyncio.to_thread(call)`): a controller
    busy with a long tick held one of the loop's few pool threads per waiting request."""
    refs = {"policies": _Ref(["web"]), "slow": _Ref(never=True), "dead": _Ref(ActorDiedError()),
            "own": _Ref(KeyError("no such policy")),
            "own_timeout": _Ref(RayTaskError("tick", "Traceback ...", TimeoutError("lock")).as_instanceof_cause())}
    monkeypatch.setattr(ray, "get_actor", lambda name, namespace: SimpleNamespace(**{
        method: SimpleNamespace(remote=lambda *args, ref=ref: ref) for method, ref in refs.items()}))
    client = NamedActor("controller", "the scaling controller", timeout_s=0.2)

    async def calls():
        assert await client.call_async("policies") == ["web"]
        started = time.monotonic()
        with pytest.raises(ActorUnavailable, match="^the scaling controller did not answer: TimeoutError$"):
            await client.call_async("slow")
        assert time.monotonic() - started < 2.0
        with pytest.raises(ActorUnavailable, match="did not answer: ActorDiedError"):
            await client.call_async("dead")
        with pytest.raises(KeyError):  # the method's own error, as `call` gives it
            await client.call_async("own")
        with pytest.raises(TimeoutError) as own:  # even a TimeoutError of its own: not "did not answer"
            await client.call_async("own_timeout")
        assert not isinstance(own.value, ActorUnavailable)
        # eight requests waiting on a slow actor leave the loop's pool (two threads here) free for other work
        asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=2))
        waiting = [asyncio.create_task(client.call_async("slow")) for _ in range(8)]
        await asyncio.sleep(0.05)
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 0.1) == "free"
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(result, ActorUnavailable) for result in results)

    asyncio.run(calls())


def test_a_busy_or_restarting_actor_gets_a_second_chance_before_a_bootstrap_replaces_it(actor, monkeypatch):
    """Before, one fingerprint call that timed out (a supervisor busy stopping, a store actor restarting) had the
    bootstrap kill a healthy actor."""
    answers: list = []

    def get(ref, timeout):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(ray, "get", get)
    stopped: list[str] = []
    answers += [GetTimeoutError(), "digest"]
    assert keep_unchanged("store", "digest", lambda: stopped.append("stop"), 1.0) is actor and stopped == []
    answers += [ActorUnavailableError("restarting", None), "digest"]
    assert keep_unchanged("store", "digest", lambda: stopped.append("stop"), 1.0) is actor and stopped == []
    answers += [GetTimeoutError(), GetTimeoutError()]  # twice: not answering
    assert keep_unchanged("store", "digest", lambda: stopped.append("stop"), 1.0) is None and stopped == ["stop"]
    answers += [ENDING]  # an actor that is ending is replaced, not kept
    assert keep_unchanged("store", "digest", lambda: stopped.append("stop"), 1.0) is None
    assert stopped == ["stop", "stop"]


def test_a_singleton_whose_ended_actor_still_holds_its_name_is_not_handed_back_dead(actor, monkeypatch):
    """Regression: get_if_exists returned the actor just ended (its name not freed in time), dead for good."""
    from core import actors

    monkeypatch.setattr(actors, "keep_unchanged", lambda name, fingerprint, stop, timeout_s: stop() and None)  # ended
    with pytest.raises(ActorUnavailable, match="still registered"):
        actors.start_head_singleton(object, "store", "digest", lambda: None, timeout_s=1.0)
    created = []
    monkeypatch.setattr(actors.ray, "remote", lambda service: SimpleNamespace(options=lambda **options: SimpleNamespace(
        remote=lambda *args: created.append(options["get_if_exists"]) or actor)))
    monkeypatch.setattr(actors, "keep_unchanged", lambda *args: None)  # none found: another builder's, started since,
    assert actors.start_head_singleton(object, "store", "digest", lambda: None) is actor  # is handed back, alive
    assert created == [True]
