"""The actuator interface: read and set the replica count of one scaling target.

Only actuators change replica counts, and only the controller calls them (docs/architecture.md). Each backend
(Ray Serve, Kubernetes, KubeRay) implements `replicas` and `scale` for its target kinds; failures raise
`ActuationError` with a message an operator can act on, which the controller records in the event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from autoscaler.schema import ScalingTarget
from core.public_text import error_text


class ActuationError(RuntimeError):
    """The target could not be read or scaled (missing object, refused, unreachable); the message says why."""


class OutsideBounds(ActuationError):
    """The target takes only counts within [low, high] of its own (a KubeRay worker group's min/maxReplicas, which
    KubeRay would clamp silently); nothing was written."""

    def __init__(self, message: str, low: int, high: int):
        super().__init__(message)
        self.low, self.high = low, high


class CountMoved(ActuationError):
    """The target is not at the count the write was decided at (someone changed it since): nothing was written."""

    def __init__(self, replicas: int):
        super().__init__(f"the target is at {replicas} replicas")
        self.replicas = replicas


class ActuationOutcomeUnknown(ActuationError):
    """A change was sent but no answer came (a timeout, a connection dropped), or the answer does not say whether
    it was applied (a gateway's 5xx, a proxy's page): it may have landed, so the caller keeps the cooldown it
    started (autoscaler/intents.py)."""


UNKNOWN_OUTCOME_STATUSES = frozenset({500, 502, 504})
"""HTTP statuses of a write that may have been applied all the same (the server failed while or after applying it,
or a gateway lost its answer); 503 and 4xx say the write was refused."""


@dataclass(frozen=True)
class Scaled:
    """A write that landed: what it changed, and the count the target holds after it as the API answered (an
    admission webhook may store another count than the one asked for; an API that answers no count: the one asked)."""

    detail: str
    replicas: int


@dataclass(frozen=True)
class TargetCount:
    """A target's replica count as read, with the counts it takes at all where it has bounds of its own."""

    replicas: int
    bounds: tuple[int, int] | None = None  # [low, high]: a KubeRay worker group's minReplicas/maxReplicas


class Actuator(ABC):
    """Reads and sets the replica count of the targets of one or more kinds."""

    kinds: tuple[str, ...] = ()
    # how long after an actuation starts a write it sent may still land: its calls' timeouts, all of them, and a
    # margin for the server to apply what it took (an intent a crash interrupted is judged after it: intents.py)
    write_deadline_s: float = 60.0

    @abstractmethod
    def replicas(self, target: ScalingTarget) -> int:
        """The target's desired replica count now (what it was last scaled to)."""

    def read(self, target: ScalingTarget) -> TargetCount:
        """The count, with the target's own bounds where it has them (default: none); one read where it can."""
        return TargetCount(self.replicas(target))

    def replicas_now(self, target: ScalingTarget) -> int:
        """The count read afresh, past any cache: the check right before a write (default: `replicas`)."""
        return self.replicas(target)

    @abstractmethod
    def scale(self, target: ScalingTarget, replicas: int) -> Scaled:
        """Set the desired replica count; return what was changed and the count the target stored."""

    def scale_from(self, target: ScalingTarget, current: int, replicas: int) -> Scaled:
        """`scale`, only while the target is still at `current` (`CountMoved` otherwise, nothing written): every
        write sets an absolute count, so one on a count someone changed since would undo their change. By default
        the count is read afresh right before the write; an actuator whose API can make the write conditional on
        what it read (Kubernetes) does so, leaving no window between the check and the write."""
        now = read_before_write(self, target)
        if now != current:
            raise CountMoved(now)
        return self.scale(target, replicas)

    def ray_nodes(self, target: ScalingTarget) -> list[str] | None:
        """Ray node ids the target's replicas run on, where this actuator can tell (None: it cannot)."""
        return None


def read_before_write(actuator: Actuator, target: ScalingTarget) -> int:
    """The count right before a write (`before_the_write`)."""
    with before_the_write():
        return actuator.replicas_now(target)


@contextmanager
def before_the_write() -> Iterator[None]:
    """What runs before a write is sent (reading the count, checking it): nothing is sent yet, so any failure is a
    plain `ActuationError` (no cooldown). A client library's own error type, or a read answered with something that
    is not the object, would otherwise reach the caller as a write of unknown outcome."""
    try:
        yield
    except ActuationError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure: nothing was written
        raise ActuationError(f"not changed: reading the count before the write failed: {error_text(exc)}") from exc
