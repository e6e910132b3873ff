"""Blocking calls run off the event loop while holding a slot that is freed only when the call ends.

`asyncio.to_thread` inside `async with semaphore` frees the slot when the awaiting coroutine ends, and a request
cancelled because its client went away ends it at once while its thread (a store read, say) runs on: repeated, the
calls under way are bounded by the thread pool, not by the semaphore. Here the slot goes with the thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
logger = logging.getLogger(__name__)


async def run_holding(slots: asyncio.Semaphore, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in the default executor (with the caller's context variables, as `asyncio.to_thread`), once one of
    `slots` is free; the slot is released when `fn` returns or raises, whether or not the caller still waits."""
    await slots.acquire()
    return await in_thread(slots.release, fn, *args)


async def in_thread(release: Callable[[], Any], fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in the default executor; `release()` is called when `fn` has ended (a slot the caller holds for
    it). A caller cancelled meanwhile stops waiting; the thread, and the slot, run on to the end."""
    loop = asyncio.get_running_loop()
    try:
        future = loop.run_in_executor(None, functools.partial(contextvars.copy_context().run, fn, *args))
    except BaseException:
        release()
        raise
    waiting = [True]

    def ended(done: asyncio.Future) -> None:
        release()
        error = None if done.cancelled() else done.exception()  # retrieved: never "never retrieved"
        if error is not None and not waiting[0]:  # nobody is left to hear of it
            logger.warning("%s failed after its caller stopped waiting", getattr(fn, "__qualname__", fn),
                           exc_info=error)

    future.add_done_callback(ended)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        waiting[0] = False
        raise
