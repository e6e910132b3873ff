"""The soak test's bookkeeping without a cluster: how answers are counted per window, the criteria, the writer's
retries, and how an answer's body is read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import httpx

from bench.soak_load import TelemetryWriter, _app_error
from bench.soak_report import (
    KILL_LANDS_S,
    RESTART_SLACK_S,
    Answer,
    FaultSpan,
    SampleFigures,
    ScalingFigures,
    SoakReport,
    criteria,
    render,
    window_figures,
)
from core.stores.base import StoreUnavailable
from core.telemetry import TelemetrySample


def scaling(applied: int = 1, replicas: int = 2, pending: int = 0) -> ScalingFigures:
    return ScalingFigures(policy="p", expected_actions=1, applied_actions=applied, failed_actions=0, failures=[],
                          pending_actions=pending, expected_replicas=2, replicas=replicas)


def samples(written: int = 8, stored: int = 8, unacknowledged: int = 0) -> SampleFigures:
    return SampleFigures(written=written, unacknowledged=unacknowledged, stored=stored, failed_writes=1,
                         per_node={"n": (written, stored)})


def test_answers_are_counted_in_the_window_they_came_back_in():
    answers = [
        Answer(9.0, "cost", 200, 500.0),  # sent before the kill at 10 s, answered at 9.5 s: baseline
        Answer(9.9, "power, history", 500, 300.0, app_body=False, detail="Internal Server Error"),  # held by it
        Answer(9.8, "telemetry nodes", 503, 400.0, app_body=True, detail="the telemetry store did not answer"),
        Answer(12.0, "power, history", 500, 10.0, app_body=False),  # a bare 500 after the kill: not excused
        Answer(13.0, "cost", 500, 10.0, app_body=True),  # the API's own 500
        Answer(14.0, "policies", 422, 10.0, app_body=True),
        Answer(15.0, "events", 0, 30000.0, detail="ReadTimeout"),  # answered after the window: not in it
    ]
    baseline = window_figures(answers, "baseline", 0.0, 10.0)
    assert (baseline.requests, baseline.ok) == (1, 1)
    window = window_figures(answers, "predictor replica killed", 10.0, 20.0, FaultSpan(10.0, 12.0, replica=True))
    assert (window.requests, window.ok, window.documented_503, window.killed_in_flight) == (5, 0, 1, 1)
    assert (window.other_5xx, window.other) == (2, 1)
    assert window.unavailable == ["telemetry nodes: the telemetry store did not answer"]
    assert len(window.examples) == 3
    not_a_replica = window_figures(answers, "store actor killed", 10.0, 20.0, FaultSpan(10.0, 12.0))
    assert (not_a_replica.documented_503, not_a_replica.killed_in_flight, not_a_replica.other_5xx) == (1, 0, 3)


def test_a_request_the_killed_replica_held_is_excused_in_whichever_window_it_ends():
    killed = FaultSpan(10.0, 12.0, replica=True)
    answers = [Answer(9.5, "power, history", 0, 30000.0, detail="ReadTimeout"),  # held, timed out at 39.5 s
               Answer(10.0 + KILL_LANDS_S / 2, "power, history", 0, 30000.0),  # sent before the kill landed: held
               Answer(10.1 + KILL_LANDS_S, "power, history", 0, 30000.0, detail="ReadTimeout")]  # after it: a fault
    later = window_figures(answers, "controller killed", 30.0, 60.0, FaultSpan(30.0, 31.0), all_faults=[killed])
    assert (later.killed_in_flight, later.other) == (2, 1)
    assert window_figures(answers, "controller killed", 30.0, 60.0, FaultSpan(30.0, 31.0)).other == 3


def test_a_503_counts_as_documented_only_while_a_part_restarts():
    answers = [Answer(at, "telemetry nodes", 503, 10.0, app_body=True, detail="not available")
               for at in (1.0, 20.0, 21.0 + RESTART_SLACK_S)]
    assert window_figures(answers, "baseline", 0.0, 10.0).other_5xx == 1  # nothing restarts in the baseline
    after = window_figures(answers, "store actor killed", 10.0, 60.0, FaultSpan(10.0, 21.0))
    assert (after.documented_503, after.other_5xx) == (1, 1)  # the last came long after the store was back
    never_back = window_figures(answers, "store actor killed", 10.0, 60.0, FaultSpan(10.0, None))
    assert (never_back.documented_503, never_back.other_5xx) == (2, 0)


def test_criteria_catch_double_scaling_lost_samples_and_5xx():
    window = window_figures([Answer(1.0, "cost", 200, 5.0)], "baseline", 0.0, 10.0)
    assert all(criteria([window], [], samples(), [scaling()]).values())
    assert not criteria([window], [], samples(), [scaling(applied=2, replicas=3)])["no double scaling"]
    assert not criteria([window], [], samples(), [scaling(applied=1, pending=1)])["no double scaling"]
    assert not criteria([window], [], samples(), [scaling(applied=0, replicas=1)])["scaling actions as expected"]
    assert not criteria([window], [], samples(stored=7), [scaling()])["no sample lost"]
    assert not criteria([window], [], samples(unacknowledged=2), [scaling()])["no sample lost"]
    failed = window_figures([Answer(1.0, "cost", 502, 5.0)], "baseline", 0.0, 10.0)
    verdict = criteria([failed], [], samples(), [scaling()])
    assert [name for name, ok in verdict.items() if not ok] == [
        "no 5xx but documented 503s while a part restarts (and Serve's 500s for what a killed replica held)"]
    report = SoakReport(clients=16, duration_s=60, windows=[failed], faults=[], samples=samples(),
                        scaling=[scaling()], criteria=verdict)
    assert not report.passed
    assert "FAIL  no 5xx" in render(report) and "baseline" in render(report)


class FlakyStore:
    """Refuses the first `failures` writes, then stores (idempotently, like every backend)."""

    def __init__(self, failures: int):
        self.failures = failures
        self.rows: set[tuple[str, datetime]] = set()

    def write(self, batch: Sequence[TelemetrySample]) -> int:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("restarting")
        self.rows.update((s.node_id, s.timestamp) for s in batch)
        return len(batch)


def test_the_writer_keeps_what_the_store_did_not_acknowledge_and_sends_it_again():
    store = FlakyStore(failures=2)
    t0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    writer = TelemetryWriter(lambda: store, {"a": 100.0, "b": 200.0}, t0)
    writer.pending.extend(writer.samples_at(t0))
    assert not writer._flush() and not writer._flush()
    assert writer.failed_writes == 2 and len(writer.pending) == 2
    writer.set("b", 950.0)
    writer.pending.extend(writer.samples_at(t0.replace(second=1)))
    assert writer._flush() and writer.pending == []
    assert writer.written == {"a": 2, "b": 2} and len(store.rows) == 4
    writer.backfill(3)
    assert writer.written == {"a": 5, "b": 5} and len(store.rows) == 10


def test_the_api_error_body_is_told_from_a_bare_answer():
    body = {"detail": [{"loc": [], "msg": "the telemetry store did not answer", "type": "unavailable"}],
            "request_id": "abc"}
    assert _app_error(httpx.Response(503, json=body)) == "the telemetry store did not answer"
    assert _app_error(httpx.Response(500, text="Internal Server Error")) is None
    assert _app_error(httpx.Response(503, json={"detail": "no request id"})) is None
