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
