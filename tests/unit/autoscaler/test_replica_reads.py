"""The tick's replica reads (autoscaler/replica_reads.py): waited for together at most a deadline, never piling up."""

from __future__ import annotations

import threading
import time

from autoscaler.replica_reads import ReadLate, ReplicaReads


def wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_results_errors_and_late_reads_come_back_each_under_its_policy():
    release = threading.Event()
    reads = ReplicaReads(deadline_s=0.5)
    started = time.monotonic()
    outcomes = reads.run({"a": lambda: 3, "b": lambda: (_ for _ in ()).throw(ValueError("bad")),
                          "stuck": lambda: release.wait(10)})
    assert time.monotonic() - started < 3
    assert outcomes["a"] == 3 and isinstance(outcomes["b"], ValueError)
    assert isinstance(outcomes["stuck"], ReadLate) and "no answer within the tick's 0.5 s" in str(outcomes["stuck"])
    release.set()


def test_a_read_still_running_is_not_started_again_and_is_read_afresh_once_it_returned():
    release, calls = threading.Event(), []

    def stuck():
        calls.append(1)
        release.wait(10)
        return 7

    reads = ReplicaReads(deadline_s=0.2)
    assert isinstance(reads.run({"p": stuck})["p"], ReadLate)
    again = reads.run({"p": stuck})["p"]
    assert isinstance(again, ReadLate) and "has not returned" in str(again) and calls == [1]
    release.set()
    wait_until(lambda: not reads._calls["p"].busy)
    assert reads.run({"p": stuck})["p"] == 7 and calls == [1, 1]


def test_stuck_reads_hold_at_most_the_slots_and_a_read_without_one_starts_no_thread():
    """Review: every policy's read started a thread at once, waiting for a slot; with the slots held by reads stuck
    on one backend, the others were late without having read, and started stale reads once a slot freed."""
    release, calls = threading.Event(), []

    def stuck():
        release.wait(10)

    reads = ReplicaReads(deadline_s=0.3, workers=1)
    outcomes = reads.run({"stuck": stuck, "quick": lambda: calls.append(1) or 2})
    assert isinstance(outcomes["stuck"], ReadLate)
    assert isinstance(outcomes["quick"], ReadLate) and "no read could start" in str(outcomes["quick"])
    release.set()
    time.sleep(0.3)
    assert calls == []  # it never ran: no stale read once the slot freed
    assert reads.run({"quick": lambda: calls.append(1) or 2}) == {"quick": 2}
