"""Calling Serve deployment handles from synchronous code (Ray tasks, actor threads).

With `RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0` (one of the throughput settings `make run` exports) a handle
only works inside a running event loop, and Serve caches handles per process, so a handle stays bound to
the loop that first used it. Synchronous callers therefore run their handle calls as coroutines on one
event loop per process, kept in a daemon thread; this works with the setting on or off.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _process_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="serve-handles", daemon=True).start()
        return _loop


def run_with_handles(coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """Run `coroutine` on the process's handle loop and wait for it; after `timeout_s` it is cancelled and
    TimeoutError raised (nothing is left running on the loop)."""
    future = asyncio.run_coroutine_threadsafe(coroutine, _process_loop())
    try:
        return future.result(timeout=timeout_s)
    except TimeoutError:
        future.cancel()
        raise
