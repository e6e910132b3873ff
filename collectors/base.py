"""TelemetrySource: what every telemetry source implements. Sources degrade; they never take a node down."""

from __future__ import annotations

from abc import ABC, abstractmethod

from core.telemetry import SourceKind, TelemetrySample


class TelemetrySource(ABC):
    """One kind of telemetry on one node.

    `available()` says whether it can be read here (and why not, or what it misses: a partial read); `sample()`
    returns the current readings (an empty list when a transient read failed; it logs and counts instead of raising);
    `min_interval_s` is how often the underlying device refreshes, so collectors never poll faster.
    """

    kind: SourceKind
    min_interval_s: float = 1.0

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, "") when readable, (True, caveat) when read with one (some devices left out, its last read failed),
        else (False, reason)."""

    @abstractmethod
    def sample(self) -> list[TelemetrySample]:
        """Current readings of every device of this source on this node."""

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Release sessions and handles (default: nothing to release)."""
