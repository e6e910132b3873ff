"""Serve deployment handles: looked up off the event loop, and called from synchronous code (Ray tasks, actor
threads).

`deployment_handle` looks a deployment's handle up in a thread: Serve's first lookup of a deployment asks the Serve
controller with no timeout (a blocking `ray.get`), which on an event loop would stall every other coroutine on it
while the controller is slow or restarting; the handle found is kept, so later lookups cost nothing.

With `RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0` (one of the throughput settings `make run` exports) a handle
only works inside a running event loop, and Serve caches handles per process, so a handle stays bound to
the loop that first used it. Synchronous callers therefore run their handle calls as coroutines on one
event loop per process, kept in a daemon thread; this works with the setting on or off.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from ray import serve
from ray.serve.handle import DeploymentHandle

T = TypeVar("T")
_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()
_lookups: dict[tuple[str, str], tuple[Future[DeploymentHandle], float]] = {}  # a lookup in flight or the handle
# it found, with when it started
_given_up: dict[tuple[str, str], list[Future[DeploymentHandle]]] = {}  # stuck lookups replaced, still blocked
_now = time.monotonic
STUCK_AFTER_S = 60.0  # a lookup in flight this long is given up for a new one (its thread is left to end), the
# wait doubling with each given-up lookup of the deployment still blocked: a controller down for a day leaves ~11
LOOKUP_TIMEOUT_S = 10.0  # how long a caller waits on Serve's controller for a lookup


async def deployment_handle(deployment: str, app_name: str, timeout_s: float = LOOKUP_TIMEOUT_S) -> DeploymentHandle:
    """The handle of `deployment` in app `app_name`, looked up in a thread the first time (see the module's
    docstring); KeyError when it is not deployed, TimeoutError when Serve's controller does not answer in
    `timeout_s`. Callers waiting on a lookup share it, so a slow controller never piles threads up; a failed one
    is tried again by the next call, and a stuck one too (`_stuck`), its thread left blocked."""
    key = (deployment, app_name)
    with _lock:
        lookup, started = _lookups.get(key, (None, 0.0))
        if lookup is None or lookup.cancelled() or (lookup.done() and lookup.exception() is not None) or (
                _stuck(key, lookup, started)):
            lookup = _look_up(deployment, app_name)
            _lookups[key] = lookup, _now()
    return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(lookup)), timeout_s)


def _stuck(key: tuple[str, str], lookup: Future[DeploymentHandle], started: float) -> bool:
    """Whether `lookup` is to be given up for a new one (under `_lock`): in flight for STUCK_AFTER_S doubled for
    every lookup of the deployment given up before it and still blocked, so a controller that never answers leaves
    threads at a rate that halves with each, not one a minute."""
    blocked = [given_up for given_up in _given_up.get(key, []) if not given_up.done()]
    _given_up[key] = blocked
    if lookup.done() or _now() - started <= STUCK_AFTER_S * 2 ** len(blocked):
        return False
    blocked.append(lookup)
    return True


def _look_up(deployment: str, app_name: str) -> Future[DeploymentHandle]:
    """Serve's lookup in a daemon thread (one that never answers must not hold the process at exit)."""
    found: Future[DeploymentHandle] = Future()

    def look_up() -> None:
        if not found.set_running_or_notify_cancel():
            return
        try:
            found.set_result(serve.get_deployment_handle(deployment, app_name=app_name))
        except BaseException as exc:  # noqa: BLE001 - the caller's await raises it
            found.set_exception(exc)

    threading.Thread(target=look_up, name="serve-handle-lookup", daemon=True).start()
    return found


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
