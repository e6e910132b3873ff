"""The soak test's figures (bench/soak_harness.py runs it): requests per fault window, samples written vs
stored, scaling actions vs expected, the pass/fail criteria, and the printed table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

RESTART_SLACK_S = 15.0
"""A 503 answered this long after its part came back still counts as "while it restarts": the API waits up to
10 s (store) or 15 s (controller) for an actor before it answers 503."""
KILL_LANDS_S = 0.5
"""ray.kill returns before the replica's process has ended: a request Serve hands it this long after the kill
was sent still dies with it."""


@dataclass(frozen=True)
class Answer:
    """One client request: when it started (s since the soak began), what it was, how it was answered."""

    at_s: float
    kind: str
    status: int  # HTTP status; 0 when no answer came (connection error, timeout)
    latency_ms: float
    app_body: bool = False  # the API's error body (detail + request_id), not a bare answer of Serve's proxy
    detail: str = ""  # the error's message, or the start of a bare body, or the transport error

    @property
    def done_s(self) -> float:
        return self.at_s + self.latency_ms / 1000.0

    @property
    def unavailable(self) -> bool:
        """The API's own 503: "not available right now"."""
        return self.status == 503 and self.app_body


@dataclass(frozen=True)
class FaultSpan:
    """When a part was killed and when it answered again (None: never), s since the soak began."""

    killed_at_s: float
    back_at_s: float | None
    replica: bool = False  # a Serve replica: what it held dies with it

    def restarting(self, answer: Answer) -> bool:
        """`answer` came while the part restarted (or shortly after: RESTART_SLACK_S)."""
        return self.killed_at_s <= answer.done_s and (self.back_at_s is None
                                                     or answer.done_s <= self.back_at_s + RESTART_SLACK_S)

    def held(self, answer: Answer) -> bool:
        """A request the killed replica may have held when it died: sent before the kill landed (KILL_LANDS_S
        after it was sent), answered after the kill by Serve's bare 500 or not at all (the client's timeout),
        whichever window the answer falls in."""
        return (self.replica and answer.status in (0, 500) and not answer.app_body
                and answer.at_s <= self.killed_at_s + KILL_LANDS_S and self.killed_at_s <= answer.done_s)


class WindowFigures(BaseModel):
    """The requests answered in one window: the baseline, or from one fault to the next."""

    name: str
    start_s: float
    end_s: float
    requests: int
    ok: int
    documented_503: int  # the API's 503s while the part killed restarted
    killed_in_flight: int  # requests a killed replica held: Serve's bare 500, or no answer in the client's timeout
    other_5xx: int  # any other 5xx, a 503 when nothing restarts included
    other: int  # unexpected 4xx and requests that got no answer
    p50_ms: float | None
    p99_ms: float | None
    unavailable: list[str]  # what the documented 503s said
    examples: list[str]  # a few unexpected answers


class FaultRecord(BaseModel):
    """One injected fault: what was killed, when, and when the part answered again."""

    name: str
    at_s: float
    killed: str
    recovered_after_s: float | None  # None: not back within the harness's wait


class SampleFigures(BaseModel):
    """Telemetry the writer pushed through the store actor's client, and what the store holds afterwards."""

    written: int  # samples the store acknowledged
    unacknowledged: int  # samples still not acknowledged when the soak ended
    stored: int  # samples read back from the store (one per node and second)
    failed_writes: int  # write calls that failed (retried with the same samples)
    per_node: dict[str, tuple[int, int]]  # node -> (written, stored)


class ScalingFigures(BaseModel):
    """One policy's scale actions over the soak against what its setup makes certain."""

    policy: str
    expected_actions: int
    applied_actions: int
    failed_actions: int  # scale events whose actuation failed (an interrupted intent included)
    failures: list[str]  # what each failed one's actuation says
    pending_actions: int  # intents never completed
    expected_replicas: int
    replicas: int | None  # the target's running replicas at the end


class SoakReport(BaseModel):
    clients: int
    duration_s: float
    windows: list[WindowFigures]
    faults: list[FaultRecord]
    samples: SampleFigures
    scaling: list[ScalingFigures]
    criteria: dict[str, bool]

    @property
    def passed(self) -> bool:
        return all(self.criteria.values())


def window_figures(answers: Sequence[Answer], name: str, start_s: float, end_s: float,
                   fault: FaultSpan | None = None, all_faults: Sequence[FaultSpan] = ()) -> WindowFigures:
    """Figures of the answers that came in [start_s, end_s), after `fault` (none for the baseline); a request
    a replica killed at any time of `all_faults` held may come back in a later window."""
    inside = [a for a in answers if start_s <= a.done_s < end_s]
    latencies = np.asarray([a.latency_ms for a in inside if a.status])
    restarting = [a for a in inside if a.unavailable and fault is not None and fault.restarting(a)]
    killers = [span for span in (fault, *all_faults) if span is not None]
    held = [a for a in inside if any(span.held(a) for span in killers)]
    excused = {id(a) for a in restarting + held}
    unexpected = [a for a in inside if a.status != 200 and id(a) not in excused]
    return WindowFigures(
        name=name, start_s=round(start_s, 1), end_s=round(end_s, 1), requests=len(inside),
        ok=sum(a.status == 200 for a in inside), documented_503=len(restarting), killed_in_flight=len(held),
        other_5xx=sum(a.status >= 500 for a in unexpected), other=sum(a.status < 500 for a in unexpected),
        p50_ms=round(float(np.percentile(latencies, 50)), 1) if latencies.size else None,
        p99_ms=round(float(np.percentile(latencies, 99)), 1) if latencies.size else None,
        unavailable=sorted({f"{a.kind}: {a.detail}"[:200] for a in restarting})[:5],
        examples=sorted({f"{a.kind}: {a.status} {a.detail}"[:200] + f" (sent {a.at_s:.2f} s, answered {a.done_s:.2f} s)"
                         for a in unexpected})[:5])


def criteria(windows: Sequence[WindowFigures], faults: Sequence[FaultRecord], samples: SampleFigures,
             scaling: Sequence[ScalingFigures]) -> dict[str, bool]:
    """The soak's pass/fail criteria, by name."""
    return {
        "no 5xx but documented 503s while a part restarts (and Serve's 500s for what a killed replica held)":
            all(w.other_5xx == 0 for w in windows),
        "every request answered, no unexpected 4xx": all(w.other == 0 for w in windows),
        "every killed part came back": all(f.recovered_after_s is not None for f in faults),
        "no sample lost": samples.unacknowledged == 0 and samples.stored == samples.written
                          and all(w == s for w, s in samples.per_node.values()),
        "no double scaling": all(s.applied_actions + s.pending_actions <= s.expected_actions
                                 and (s.replicas or 0) <= s.expected_replicas for s in scaling),
        "scaling actions as expected": all(s.applied_actions == s.expected_actions
                                           and s.replicas == s.expected_replicas for s in scaling),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def render(report: SoakReport) -> str:
    """The report as the plain-text table docs/operations.md quotes."""
    faults = {f.name: f for f in report.faults}
    columns = ("requests", "200", "doc. 503", "in flight", "other 5xx", "other")
    lines = [f"Soak: {report.clients} clients for {report.duration_s:.0f} s; windows by answer time; 'in flight': "
             "requests a killed replica held (Serve's bare 500, or no answer)",
             f"{'window':<26}{'from-to s':>11}" + "".join(f"{c:>10}" for c in columns)
             + f"{'p50 ms':>8}{'p99 ms':>8}{'back after':>12}"]
    for w in report.windows:
        fault = faults.get(w.name)
        back = "-" if fault is None else ("never" if fault.recovered_after_s is None
                                          else f"{fault.recovered_after_s:.1f} s")
        counts = (w.requests, w.ok, w.documented_503, w.killed_in_flight, w.other_5xx, w.other)
        lines.append(f"{w.name:<26}{f'{w.start_s:.0f}-{w.end_s:.0f}':>11}" + "".join(f"{c:>10}" for c in counts)
                     + f"{_ms(w.p50_ms):>8}{_ms(w.p99_ms):>8}{back:>12}")
    totals = [sum(getattr(w, key) for w in report.windows)
              for key in ("requests", "ok", "documented_503", "killed_in_flight", "other_5xx", "other")]
    lines.append(f"{'all':<26}{'':>11}" + "".join(f"{c:>10}" for c in totals))
    s = report.samples
    lines.append(f"samples: written {s.written}, stored {s.stored}, unacknowledged {s.unacknowledged} "
                 f"({s.failed_writes} failed write calls, retried)")
    for p in report.scaling:
        lines.append(f"scaling {p.policy}: {p.applied_actions} scale actions applied (expected {p.expected_actions}),"
                     f" {p.failed_actions} failed, {p.pending_actions} pending; target at {p.replicas} replicas "
                     f"(expected {p.expected_replicas})")
        lines.extend(f"  {p.policy}, failed: {detail}" for detail in p.failures)
    for w in report.windows:
        lines.extend(f"  {w.name}, 503: {said}" for said in w.unavailable)
        lines.extend(f"  {w.name}, unexpected: {example}" for example in w.examples)
    lines.extend(f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in report.criteria.items())
    return "\n".join(lines)
