"""The tick's replica-count reads: concurrent, and waited for together at most a deadline.

Each read has its own limit (an HTTP timeout, the exec plugin's 20 s, Ray's GCS timeout), but a tick that waited for
the slowest held every other policy's decision as long: a Kubernetes API stalled for one target delayed the
scale-out of another. A read still running at the deadline is left to finish alone (on a daemon thread, its result
unused) and its policy holds this tick; the next tick starts no second read of that policy's target until it has
returned, so stuck reads never pile up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from typing import TypeVar

from core.bounded import BoundedCall, StillRunning

T = TypeVar("T")

READ_DEADLINE_S = 15.0  # the longest a tick waits for its replica reads
READ_WORKERS = 16  # reads running at once; the others wait for a slot, within the deadline


class ReadLate(Exception):
    """A read not back by the tick's deadline, or one that an earlier tick's read of the same target still holds."""


class ReplicaReads:
    """Runs one read per policy, at most `workers` at a time, and waits for them all at most `deadline_s`."""

    def __init__(self, deadline_s: float = READ_DEADLINE_S, workers: int = READ_WORKERS):
        self.deadline_s = deadline_s
        self._slots = threading.BoundedSemaphore(workers)
        self._calls: dict[str, BoundedCall] = {}  # per policy name: the read under way, if any

    def run(self, reads: Mapping[str, Callable[[], T]]) -> dict[str, T | BaseException]:
        """Each policy's read result, or the exception it raised, or ReadLate."""
        self._calls = {name: call for name, call in self._calls.items() if call.busy or name in reads}
        outcomes: dict[str, T | BaseException] = {}
        futures: dict[str, Future] = {}
        for name, read in reads.items():
            call = self._calls.setdefault(name, BoundedCall(f"replica-read-{name}"))
            try:
                futures[name] = call.start(lambda read=read: self._in_a_slot(read))
            except StillRunning:
                outcomes[name] = ReadLate(f"its read from an earlier tick has not returned after "
                                          f"{call.running_for():.0f} s")
            except RuntimeError as exc:  # no thread to be had
                outcomes[name] = exc
        done, _ = wait(futures.values(), timeout=self.deadline_s)
        for name, future in futures.items():
            if future not in done:
                outcomes[name] = ReadLate(f"no answer within the tick's {self.deadline_s:g} s")
            elif (error := future.exception()) is not None:
                outcomes[name] = error
            else:
                outcomes[name] = future.result()
        return outcomes

    def _in_a_slot(self, read: Callable[[], T]) -> T:
        with self._slots:
            return read()
