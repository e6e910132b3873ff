"""A clock the collector tests move by hand, so a retry window is judged without racing the real one."""

from __future__ import annotations

import time

import pytest


class FakeClock:
    """Monotonic seconds that move only when `advance` is called."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """`time.monotonic` for the code under test (a source's own `_failures.clock` is set by the test: it was bound
    when the tracker was made)."""
    fake = FakeClock()
    monkeypatch.setattr(time, "monotonic", fake)
    return fake
