"""A slot held for a blocking call is freed when the call ends, not when a cancelled caller stops waiting for it
(deployments/power.py: a client that disconnected freed its store-read slot while the read ran on)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from core.held_threads import run_holding


def test_a_cancelled_caller_keeps_the_slot_until_its_call_ends():
    async def scenario() -> None:
        slots, release = asyncio.Semaphore(1), threading.Event()
        started = threading.Event()

        def read() -> str:
            started.set()
            release.wait(10)
            return "window"

        caller = asyncio.create_task(run_holding(slots, read))
        while not started.is_set():
            await asyncio.sleep(0.01)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert slots.locked()  # the read still runs: its slot stays taken
        release.set()
        for _ in range(500):
            if not slots.locked():
                break
            await asyncio.sleep(0.01)
        assert not slots.locked()
        assert await run_holding(slots, lambda: 42) == 42 and not slots.locked()

    asyncio.run(scenario())


def test_a_call_that_raises_frees_its_slot_and_raises_to_the_caller():
    async def scenario() -> None:
        slots = asyncio.Semaphore(1)

        def broken() -> None:
            raise OSError("store down")

        with pytest.raises(OSError, match="store down"):
            await run_holding(slots, broken)
        assert not slots.locked()

    asyncio.run(scenario())


def test_a_call_that_fails_after_its_caller_left_is_logged_and_one_still_awaited_is_not(caplog):
    """Regression: the error of a call whose caller was cancelled (a client that went away) was dropped unseen."""
    async def scenario() -> None:
        slots, release, started = asyncio.Semaphore(1), threading.Event(), threading.Event()

        def write() -> None:
            started.set()
            release.wait(10)
            raise OSError("disk full")

        caller = asyncio.create_task(run_holding(slots, write))
        while not started.is_set():
            await asyncio.sleep(0.01)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        release.set()
        while slots.locked():
            await asyncio.sleep(0.01)
        with pytest.raises(OSError):
            await run_holding(slots, write)  # awaited: raised to its caller, not logged

    asyncio.run(scenario())
    logged = [record for record in caplog.records if "after its caller stopped waiting" in record.getMessage()]
    assert len(logged) == 1 and "disk full" in str(logged[0].exc_info[1])
