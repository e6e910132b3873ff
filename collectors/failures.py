"""FailureTracker: counts a source's consecutive failed reads and trips after N in a row (degrade, never raise).

A tripped source is not given up for good: it gets one read every `retry_s` (a GPU back on the bus, a tool that
answers again), and the first read that succeeds resets it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class FailureTracker:
    """Consecutive-failure counter for one source.

    `failed(reason)` logs and counts; after `limit` failures in a row the tracker trips and the source reports
    itself unavailable with `reason()`. A successful read (`ok()`) resets the run, not the total. While tripped,
    `blocked()` lets one read through every `retry_s` (None: every read goes through; the source decides).
    """

    def __init__(self, name: str, limit: int = 5, retry_s: float | None = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.name = name
        self.limit = limit
        self.retry_s = retry_s
        self.clock = clock
        self.consecutive = 0
        self.total = 0
        self.last_error = ""
        self._next_try = 0.0

    @property
    def tripped(self) -> bool:
        return self.consecutive >= self.limit

    def blocked(self) -> bool:
        """Whether the source should skip this read: tripped, and its next retry not due yet."""
        if not self.tripped or self.retry_s is None:
            return False
        now = self.clock()
        if now < self._next_try:
            return True
        self._next_try = now + self.retry_s
        return False

    def ok(self) -> None:
        if self.tripped:
            logger.info("%s: reads again after %d failed in a row", self.name, self.consecutive)
        self.consecutive = 0

    def failed(self, reason: str) -> None:
        self.consecutive += 1
        self.total += 1
        self.last_error = reason
        if self.consecutive == self.limit:
            if self.retry_s is None:  # the source reads every round anyway (e.g. the host's files)
                logger.error("%s: %s", self.name, self.reason())
            else:
                logger.error("%s: %s; retrying every %.0f s", self.name, self.reason(), self.retry_s)
                self._next_try = self.clock() + self.retry_s
        elif not self.tripped:
            logger.warning("%s: read failed (%d in a row): %s", self.name, self.consecutive, reason)

    def reason(self) -> str:
        return (f"marked unavailable after {self.consecutive} consecutive failed reads "
                f"(last: {self.last_error})")
