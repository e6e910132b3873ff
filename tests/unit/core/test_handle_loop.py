"""run_with_handles: coroutines from synchronous code on one loop per process, cancelled on timeout; deployment_handle:
Serve's lookups off the event loop, shared while in flight, kept once found."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from core import handle_loop
from core.handle_loop import deployment_handle, run_with_handles


def test_runs_coroutines_on_one_loop_from_any_thread():
    async def current_loop():
        return asyncio.get_running_loop()

    loops = [run_with_handles(current_loop(), 5)]
    worker = threading.Thread(target=lambda: loops.append(run_with_handles(current_loop(), 5)))
    worker.start()
    worker.join()
    assert loops[0] is loops[1]


def test_a_timed_out_coroutine_is_cancelled():
    cancelled = threading.Event()

    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        run_with_handles(slow(), 0.2)
    assert cancelled.wait(5)


@pytest.fixture
def lookups(monkeypatch):
    """Serve's lookups answered by `lookups.answer(name)`, counted, none kept from an earlier test."""
    calls: list[str] = []
    state = SimpleNamespace(calls=calls, answer=lambda name: f"handle:{name}")

    def get_deployment_handle(name, app_name):
        calls.append(name)
        return state.answer(name)

    monkeypatch.setattr("core.handle_loop.serve.get_deployment_handle", get_deployment_handle)
    monkeypatch.setattr("core.handle_loop._lookups", {})
    monkeypatch.setattr("core.handle_loop._given_up", {})
    return state


def test_a_slow_lookup_never_stalls_the_event_loop_and_callers_share_it(lookups):
    """Serve's first lookup asks its controller with a blocking call and no timeout: on the loop, it stalled every
    request on it while that controller was slow."""
    release = threading.Event()
    lookups.answer = lambda name: release.wait(5) and f"handle:{name}"

    async def scenario():
        ticks = 0

        async def ticking():
            nonlocal ticks
            while not release.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(ticking())
        with pytest.raises(TimeoutError):
            await deployment_handle("PowerPredictor", "kcloud-power", 0.2)
        waiting = [asyncio.create_task(deployment_handle("PowerPredictor", "kcloud-power", 5)) for _ in range(3)]
        await asyncio.sleep(0.1)
        release.set()
        handles = await asyncio.gather(*waiting)
        await ticker
        return ticks, handles

    ticks, handles = asyncio.run(scenario())
    assert ticks >= 20 and handles == ["handle:PowerPredictor"] * 3
    assert lookups.calls == ["PowerPredictor"]  # one lookup, shared by the timed-out caller and the three after


def test_a_found_handle_is_kept_and_a_missing_deployment_is_looked_up_again(lookups):
    def not_yet(name):
        raise KeyError(f"{name} does not exist")

    lookups.answer = not_yet
    with pytest.raises(KeyError):
        asyncio.run(deployment_handle("CostPredictor", "kcloud", 5))
    lookups.answer = lambda name: f"handle:{name}"
    assert asyncio.run(deployment_handle("CostPredictor", "kcloud", 5)) == "handle:CostPredictor"
    assert asyncio.run(deployment_handle("CostPredictor", "kcloud", 5)) == "handle:CostPredictor"
    assert lookups.calls == ["CostPredictor", "CostPredictor"]


def test_waiters_on_two_loops_share_one_lookup_and_a_stuck_one_is_replaced(lookups, monkeypatch):
    """Callers on other event loops (the ingress's, the handle loop) wait on the same lookup; one that Serve's
    controller never answers is not shared for good."""
    release = threading.Event()
    lookups.answer = lambda name: release.wait(5) and f"handle:{name}"
    found: list[str] = []
    waiters = [threading.Thread(target=lambda: found.append(asyncio.run(deployment_handle("P", "app", 5))))
               for _ in range(2)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.2)
    release.set()
    for waiter in waiters:
        waiter.join(5)
    assert found == ["handle:P", "handle:P"] and lookups.calls == ["P"]

    monkeypatch.setattr("core.handle_loop.STUCK_AFTER_S", 0.1)
    never = threading.Event()
    lookups.answer = lambda name: never.wait(5) and f"handle:{name}"
    with pytest.raises(TimeoutError):
        asyncio.run(deployment_handle("Q", "app", 0.2))
    lookups.answer = lambda name: f"handle:{name}"
    assert asyncio.run(deployment_handle("Q", "app", 5)) == "handle:Q"  # a new lookup, past the stuck one
    never.set()
    assert lookups.calls == ["P", "Q", "Q"]


def test_a_controller_that_never_answers_gets_lookups_ever_more_rarely(lookups, monkeypatch):
    """Regression: every STUCK_AFTER_S a new lookup thread started beside the blocked ones, one a minute per
    deployment for as long as Serve's controller stayed down. Now the wait doubles with each one still blocked;
    once they end, a stuck lookup is given up after STUCK_AFTER_S again."""
    clock = [0.0]
    monkeypatch.setattr("core.handle_loop._now", lambda: clock[0])
    releases: list[threading.Event] = []

    def blocked(name: str) -> str:
        releases.append(release := threading.Event())
        release.wait(10)
        return f"handle:{name}"

    lookups.answer = blocked
    started = []
    for second in range(0, 16 * 60 + 1, 10):  # a caller every 10 s for 16 minutes
        clock[0] = float(second)
        calls = len(lookups.calls)
        with pytest.raises(TimeoutError):
            asyncio.run(deployment_handle("R", "app", 0.01))
        if len(lookups.calls) > calls:
            started.append(second)
    assert started == [0, 70, 200, 450, 940]  # given up after 1, 2, 4 and 8 minutes
    for release in releases[:-1]:  # the given-up ones end; the one in flight stays stuck
        release.set()
    deadline = time.monotonic() + 5
    while any(not lookup.done() for lookup in handle_loop._given_up[("R", "app")]) and time.monotonic() < deadline:
        time.sleep(0.01)
    clock[0] = 940 + handle_loop.STUCK_AFTER_S + 1
    with pytest.raises(TimeoutError):
        asyncio.run(deployment_handle("R", "app", 0.01))
    assert len(lookups.calls) == 6  # given up after STUCK_AFTER_S again
    for release in releases:
        release.set()
