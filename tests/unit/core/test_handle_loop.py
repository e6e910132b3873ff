"""run_with_handles: coroutines from synchronous code on one loop per process, cancelled on timeout."""

from __future__ import annotations

import asyncio
import threading

import pytest

from core.handle_loop import run_with_handles


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
