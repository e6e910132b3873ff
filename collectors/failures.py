"""FailureTracker: counts a source's consecutive failed reads and trips after N in a row (degrade, never raise)."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class FailureTracker:
    """Consecutive-failure counter for one source.

    `failed(reason)` logs and counts; after `limit` failures in a row the tracker trips and the source reports
    itself unavailable with `reason()`. A successful read (`ok()`) resets the run, not the total.
    """

    def __init__(self, name: str, limit: int = 5) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.name = name
        self.limit = limit
        self.consecutive = 0
        self.total = 0
        self.last_error = ""

    @property
    def tripped(self) -> bool:
        return self.consecutive >= self.limit

    def ok(self) -> None:
        self.consecutive = 0

    def failed(self, reason: str) -> None:
        self.consecutive += 1
        self.total += 1
        self.last_error = reason
        if self.consecutive == self.limit:
            logger.error("%s: %s", self.name, self.reason())
        elif not self.tripped:
            logger.warning("%s: read failed (%d in a row): %s", self.name, self.consecutive, reason)

    def reason(self) -> str:
        return (f"marked unavailable after {self.consecutive} consecutive failed reads "
                f"(last: {self.last_error})")
