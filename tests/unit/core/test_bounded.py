"""A bounded call: one at a time, free again once it returned, even when its thread could not start (no Ray)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from core import bounded
from core.bounded import BoundedCall, StillRunning


def test_one_call_at_a_time_and_free_once_it_returned():
    release = threading.Event()
    call = BoundedCall("test")
    with pytest.raises(TimeoutError):
        call.run(lambda: release.wait(5), timeout_s=0.05)
    with pytest.raises(StillRunning):
        call.run(lambda: "second", timeout_s=0.05)
    release.set()
    call._last.result(timeout=5)
    assert call.run(lambda: "third", timeout_s=5) == "third"


def test_two_callers_at_once_start_one_call():
    """The check and the start were two steps: two threads could both find the call free and read one device at
    once (an IPMI status probe beside the sampling thread)."""
    call, release, started = BoundedCall("test"), threading.Event(), []
    barrier = threading.Barrier(8)

    def caller() -> None:
        barrier.wait()
        try:
            call.start(lambda: started.append(1) or release.wait(5))
        except StillRunning:
            pass

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    release.set()
    assert len(started) == 1


def test_a_thread_that_cannot_start_leaves_the_call_free(monkeypatch):
    """Before, the call stayed busy for good: the source was skipped every round without a word."""
    call = BoundedCall("test")

    class NoThread(threading.Thread):
        def start(self):
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(bounded, "threading", SimpleNamespace(Thread=NoThread))  # in that module only
    with pytest.raises(RuntimeError, match="new thread"):
        call.run(lambda: 1, timeout_s=1)
    assert not call.busy
    monkeypatch.undo()
    assert call.run(lambda: 2, timeout_s=1) == 2


def test_the_limit_of_the_call_under_way_is_kept_with_it_not_taken_by_a_caller_that_found_it_busy():
    """Regression (review): a caller that found a login under way judged it against its own, shorter limit."""
    release = threading.Event()
    call = BoundedCall("limits")
    started = call.start(release.wait, limit_s=5.0)
    with pytest.raises(StillRunning):
        call.start(lambda: None, limit_s=1.0)
    assert call.limit_s == 5.0
    release.set()
    started.result(timeout=10)
