"""A call that may hang in a driver or on the network, made on a daemon thread of its own and waited for at most
a deadline. A call still running after it (a device read stuck in the kernel, a BMC that stopped answering) is left
to finish alone; the next call is refused until it has, so stuck threads never pile up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any


class StillRunning(TimeoutError):
    """The previous call has not returned yet."""


class BoundedCall:
    """One call at a time on its own daemon thread (`name` names the thread)."""

    def __init__(self, name: str):
        self.name = name
        self._last: Future | None = None
        self._started_at = 0.0  # monotonic start of the last call
        self.limit_s: float | None = None  # the time limit the last call was started with (`run`'s)
        self._starting = threading.Lock()  # the check and the start as one step (two callers: one call)

    @property
    def busy(self) -> bool:
        """Whether the last call has not returned yet (its thread may still be exiting after it did)."""
        return self._last is not None and not self._last.done()

    def running_for(self) -> float:
        """Seconds the call under way has run (0 when none is)."""
        return time.monotonic() - self._started_at if self.busy else 0.0

    def start(self, fn: Callable[[], Any], limit_s: float | None = None) -> Future:
        """Start `fn` (`limit_s`: its time limit, kept as `limit_s` with it); its Future holds the result or the
        exception. Raises StillRunning while the last call runs."""
        future: Future = Future()
        future.set_running_or_notify_cancel()  # a caller's cancel() cannot make the call look finished

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as err:  # handed to the caller through the Future
                future.set_exception(err)

        with self._starting:
            if self.busy:
                raise StillRunning(f"{self.name}: the previous call is still running")
            self._last, self._started_at, self.limit_s = future, time.monotonic(), limit_s
            try:
                threading.Thread(target=run, name=self.name, daemon=True).start()
            except RuntimeError as err:  # no thread to be had: this call failed, the next may start
                future.set_exception(err)
                raise
        return future

    def run(self, fn: Callable[[], Any], timeout_s: float) -> Any:
        """`fn()`'s result, waited for at most `timeout_s`. Raises StillRunning, TimeoutError, or what `fn` raised."""
        future = self.start(fn, timeout_s)
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            raise TimeoutError(f"{self.name}: no answer within {timeout_s:g} s") from None
