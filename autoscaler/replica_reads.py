"""The tick's replica-count reads: concurrent, and waited for together at most a deadline.

Each read has its own limit (an HTTP timeout, the exec plugin's 20 s, Ray's GCS timeout), but a tick that waited for
the slowest held every other policy's decision as long: a Kubernetes API stalled for one target delayed the
scale-out of another. A read still running at the deadline is left to finish alone (on a daemon thread, its result
unused) and its policy holds this tick; the next ticks start no second read for that policy until it has returned,
so stuck reads never pile up. At most READ_WORKERS reads run at once, stuck ones included: a read that finds no free
slot before the deadline is late too, and starts no thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from typing import TypeVar

from core.bounded import BoundedCall

T = TypeVar("T")

READ_DEADLINE_S = 15.0  # the longest a tick waits for its replica reads
READ_WORKERS = 32  # reads running at once (one per policy at most); the others wait for a slot, within the deadline


class ReadLate(Exception):
    """A read not back by the tick's deadline, one with no free slot by then, or one an earlier tick's read for the
    same policy still holds."""


class ReplicaReads:
    """Runs one read per policy, at most `workers` at a time, and waits for them all at most `deadline_s`."""

    def __init__(self, deadline_s: float = READ_DEADLINE_S, workers: int = READ_WORKERS):
        self.deadline_s = deadline_s
        self.workers = workers
        self._slots = threading.BoundedSemaphore(workers)
        self._calls: dict[str, BoundedCall] = {}  # per policy name: its last read, under way or not

    def run(self, reads: Mapping[str, Callable[[], T]]) -> dict[str, T | BaseException]:
        """Each policy's read result, or the exception it raised, or ReadLate."""
        deadline = time.monotonic() + self.deadline_s
        self._calls = {name: call for name, call in self._calls.items() if call.busy or name in reads}
        outcomes: dict[str, T | BaseException] = {}
        futures: dict[str, Future] = {}
        for name, read in reads.items():
            call = self._calls.setdefault(name, BoundedCall(f"replica-read-{name}"))
            if call.busy:
                outcomes[name] = ReadLate(f"its read from an earlier tick has not returned after "
                                          f"{call.running_for():.0f} s")
            elif not self._slots.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
                outcomes[name] = ReadLate(f"no read could start within the tick's {self.deadline_s:g} s: "
                                          f"{self.workers} reads are under way")
            else:
                try:
                    futures[name] = call.start(lambda read=read: self._freeing_the_slot(read))
                except RuntimeError as exc:  # no thread to be had
                    self._slots.release()
                    outcomes[name] = exc
        done, _ = wait(futures.values(), timeout=max(deadline - time.monotonic(), 0.0))
        for name, future in futures.items():
            if future not in done:
                outcomes[name] = ReadLate(f"no answer within the tick's {self.deadline_s:g} s")
            elif (error := future.exception()) is not None:
                outcomes[name] = error
            else:
                outcomes[name] = future.result()
        return outcomes

    def _freeing_the_slot(self, read: Callable[[], T]) -> T:
        try:
            return read()
        finally:
            self._slots.release()
