"""When the supervisor replaces a collector: at once when it is dead, after UNANSWERED_PINGS unanswered pings in a
row when it is wedged, never for one slow answer (a status call probing a slow NPU tool made the health check time
out, and the replacement lost the samples the collector had not flushed). Ray's calls are stood in for; no Ray."""

from __future__ import annotations

import pytest
from ray.exceptions import GetTimeoutError, RayActorError

from collectors import supervisor
from collectors.supervisor import UNANSWERED_PINGS, CollectorSupervisor


class Method:
    def __init__(self, name: str, calls: list[str]):
        self.name, self.calls = name, calls

    def remote(self) -> str:
        self.calls.append(self.name)
        return self.name


class Handle:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.node_id, self.status = Method("node_id", self.calls), Method("status", self.calls)


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> list[Exception | None]:
    """What each ping gets, in order: None answers, an exception is raised by ray.get."""
    queue: list[Exception | None] = []

    def get(_ref, timeout=None):
        outcome = queue.pop(0)
        if outcome is not None:
            raise outcome
        return "n1"

    monkeypatch.setattr(supervisor.ray, "get", get)
    return queue


def bare() -> CollectorSupervisor:
    instance = object.__new__(CollectorSupervisor)
    instance._misses = {}
    return instance


def test_a_wedged_collector_is_replaced_only_after_pings_in_a_row_go_unanswered(answers):
    watcher, handle = bare(), Handle()
    answers += [GetTimeoutError()] * (UNANSWERED_PINGS - 1) + [None] + [GetTimeoutError()] * UNANSWERED_PINGS
    verdicts = [watcher._must_replace("node-a", handle) for _ in range(2 * UNANSWERED_PINGS)]
    assert verdicts == [False] * (2 * UNANSWERED_PINGS - 1) + [True]  # the answer in between reset the count
    assert set(handle.calls) == {"node_id"}  # the ping probes no source


def test_a_dead_collector_is_replaced_at_once(answers):
    answers.append(RayActorError())
    assert bare()._must_replace("node-a", Handle())
