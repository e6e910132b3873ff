"""ReplaySource: a small canonical CSV played with a fake clock (real time, sped up, looping, finishing)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from collectors.replay import ReplaySource
from core.telemetry import SourceKind, TelemetrySample

CSV = """\
timestamp,node_id,power_watts,cpu_utilization,memory_usage,gpu_utilization,temperature,workload_type
2024-01-01T00:00:00Z,a,100,10,20,,40,idle
2024-01-01T00:00:00Z,b,200,30,40,90,50,training
2024-01-01T00:00:10Z,a,110,11,21,,41,idle
2024-01-01T00:00:10Z,b,210,31,41,91,51,training
2024-01-01T00:00:20Z,a,120,12,22,,42,idle
2024-01-01T00:00:20Z,b,220,32,42,92,52,training
"""
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(CSV)
    return path


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def node_rows(samples: list[TelemetrySample]) -> list[TelemetrySample]:
    return [s for s in samples if s.device_id == "node"]


def keys(samples: list[TelemetrySample]) -> list[tuple[str, float | None]]:
    return [(s.node_id, s.power_watts) for s in node_rows(samples)]


def test_real_time_returns_rows_as_their_time_comes(trace: Path) -> None:
    clock = Clock()
    source = ReplaySource(trace, clock=clock)
    first = source.sample()
    assert keys(first) == [("a", 100.0), ("b", 200.0)]
    assert {s.timestamp for s in first} == {at(0)}
    a, b = node_rows(first)
    assert (a.source, a.device_id, a.memory_usage, a.temperature) == (SourceKind.REPLAY, "node", 20.0, 40.0)
    utilization = {(s.node_id, s.device_id): s.utilization for s in first if s.device_id != "node"}
    assert utilization == {("a", "cpu"): 10.0, ("b", "cpu"): 30.0, ("b", "gpu"): 90.0}  # one device per feature
    clock.now += 9.9
    assert source.sample() == []
    clock.now += 0.1
    second = source.sample()
    assert keys(second) == [("a", 110.0), ("b", 210.0)] and {s.timestamp for s in second} == {at(10)}


def test_speed_plays_faster_and_restamps_to_replay_time(trace: Path) -> None:
    clock = Clock()
    source = ReplaySource(trace, speed=10, clock=clock)
    source.sample()
    clock.now += 2.5  # 25 s of trace
    rows = source.sample()
    assert keys(rows) == [("a", 110.0), ("b", 210.0), ("a", 120.0), ("b", 220.0)]
    assert [s.timestamp for s in node_rows(rows)] == [at(1), at(1), at(2), at(2)]
    assert source.available() == (False, f"replay of {trace} finished after 6 rows")
    clock.now += 100
    assert source.sample() == []


def test_loop_starts_again_one_step_after_the_last_row(trace: Path) -> None:
    clock = Clock()
    source = ReplaySource(trace, loop=True, clock=clock)
    source.sample()
    clock.now += 30  # period = 20 s span + 10 s step
    rows = source.sample()
    assert keys(rows) == [("a", 110.0), ("b", 210.0), ("a", 120.0), ("b", 220.0), ("a", 100.0), ("b", 200.0)]
    assert rows[-1].timestamp == at(30)
    assert source.available() == (True, "")


def test_cap_per_call_with_a_huge_speed(trace: Path) -> None:
    clock = Clock()
    source = ReplaySource(trace, loop=True, speed=10_000, clock=clock, max_rows_per_call=5)  # 1 ms per 10 s step
    source.sample()
    clock.now += 10
    assert len(source.sample()) <= 5 + 3  # the cap counts rows; a row brings up to 4 samples


def test_single_series_takes_the_given_node_id(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("timestamp,power_watts,cpu_utilization\n0,50,5\n1,60,6\n")
    node, cpu = ReplaySource(path, node_id="node-7", clock=Clock()).sample()
    assert (node.node_id, node.power_watts, node.memory_usage) == ("node-7", 50.0, None)
    assert (cpu.node_id, cpu.device_id, cpu.utilization) == ("node-7", "cpu", 5.0)


def test_bad_file_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,power_watts\n2024-01-01,-5\n")
    source = ReplaySource(path)
    ok, reason = source.available()
    assert not ok and reason.startswith(f"cannot replay {path}") and "negative" in reason
    assert source.sample() == []


def test_regression_a_node_id_no_sample_takes_makes_the_file_unavailable_not_a_stalled_replay(tmp_path: Path) -> None:
    """Its row raised in every round of the replay, which then replayed nothing more."""
    path = tmp_path / "odd.csv"
    path.write_text("timestamp,node_id,power_watts\n0,ok,5\n60,b\\x,6\n")
    ok, reason = ReplaySource(path).available()
    assert not ok and "line 3: node_id='b\\\\x'" in reason, reason


def test_speed_must_be_positive(trace: Path) -> None:
    with pytest.raises(ValueError, match="speed"):
        ReplaySource(trace, speed=0)


def test_backfill_lays_one_cycle_out_as_the_past_before_the_live_replay(trace: Path) -> None:
    clock = Clock()
    source = ReplaySource(trace, clock=clock, backfill=True, max_rows_per_call=8)
    first, second = source.sample(), source.sample()  # the cap (in samples) splits the past over two calls
    past = node_rows(first) + node_rows(second)
    assert len(node_rows(first)) == 4 and [(s.node_id, s.power_watts) for s in past] == [
        ("a", 100.0), ("b", 200.0), ("a", 110.0), ("b", 210.0), ("a", 120.0), ("b", 220.0)]
    assert [s.timestamp for s in past] == [at(-30), at(-30), at(-20), at(-20), at(-10), at(-10)]  # period 30 s
    live = source.sample()  # then the trace again from its start, stamped from the first call on
    assert keys(live) == [("a", 100.0), ("b", 200.0)] and {s.timestamp for s in live} == {at(0)}


def test_aligned_nodes_start_together_and_loop_on_the_longest_series(tmp_path: Path) -> None:
    """The shipped sample's runs were recorded on different days: replayed as recorded, one node was live and the
    others days stale, so the README's scaling policy on `hybrid_1` only held on stale telemetry."""
    path = tmp_path / "runs.csv"
    path.write_text("timestamp,node_id,power_watts\n"
                    "2024-01-01T00:00:00Z,a,100\n2024-01-01T00:00:10Z,a,110\n2024-01-01T00:00:20Z,a,120\n"
                    "2024-01-03T00:00:00Z,b,200\n2024-01-03T00:00:10Z,b,210\n")
    clock = Clock()
    source = ReplaySource(path, clock=clock, loop=True, align_nodes=True)
    assert keys(source.sample()) == [("a", 100.0), ("b", 200.0)]
    clock.now = T0 + 10
    assert keys(source.sample()) == [("a", 110.0), ("b", 210.0)]
    clock.now = T0 + 30  # the cycle is a's 20 s plus a step
    assert keys(source.sample()) == [("a", 120.0), ("a", 100.0), ("b", 200.0)]
    backfilled = ReplaySource(path, clock=Clock(), align_nodes=True, backfill=True)
    past = node_rows(backfilled.sample())
    assert {s.node_id for s in past} == {"a", "b"} and min(s.timestamp for s in past) == at(-30)
    assert keys(ReplaySource(path, clock=Clock()).sample()) == [("a", 100.0)]  # as recorded: b is two days later


def test_a_speed_that_puts_a_step_under_a_millisecond_is_refused_with_the_most_it_may_be(trace: Path) -> None:
    """Regression: 10 s steps at speed 1e6 are 10 µs apart; a store keys a node's samples by the millisecond, so
    rows overwrote each other without a count."""
    source = ReplaySource(trace, speed=20_000, clock=Clock())
    ok, reason = source.available()
    assert not ok and "shortest step, 10 s, would take under a millisecond" in reason
    assert "at most speed 10000" in reason
    assert source.sample() == []


def test_rows_of_different_nodes_close_together_do_not_limit_the_speed(tmp_path: Path) -> None:
    """Each node's own steps count: rows of two nodes share no store key, however close they are."""
    path = tmp_path / "close.csv"
    path.write_text("timestamp,node_id,power_watts\n2024-01-01T00:00:00Z,a,100\n2024-01-01T00:00:00.0005Z,b,200\n"
                    "2024-01-01T00:00:10Z,a,110\n2024-01-01T00:00:10.0005Z,b,210\n")
    assert ReplaySource(path, speed=10_000, clock=Clock()).available() == (True, "")
    _, reason = ReplaySource(path, speed=3e4, clock=Clock()).available()
    assert "at most speed 10000" in reason


def test_a_looping_backfilled_replay_started_again_writes_what_the_one_before_wrote(trace: Path) -> None:
    """Regression: a restarted replay (`make run` again on the same store, a replaced collector) backfilled the
    cycle before its start from the trace's first row, over and between the rows its predecessor had replayed live
    there: the store kept one or the other trace point per millisecond, and its bins averaged unrelated ones."""
    def replayed(source: ReplaySource, clock: Clock, until: float) -> dict[tuple[str, datetime], float | None]:
        rows = {}
        while True:
            rows.update({(s.node_id, s.timestamp): s.power_watts for s in node_rows(source.sample())})
            if clock.now >= until:
                return rows
            clock.now = min(until, clock.now + 3)

    clock = Clock()
    clock.now = T0 + 7
    first = replayed(ReplaySource(trace, clock=clock, loop=True, backfill=True, max_rows_per_call=8), clock, T0 + 95)
    clock.now = T0 + 101  # started again
    again = replayed(ReplaySource(trace, clock=clock, loop=True, backfill=True, max_rows_per_call=8), clock, T0 + 130)
    shared = set(first) & set(again)
    assert len(shared) == 6 and all(first[key] == again[key] for key in shared)  # 3 steps of 2 nodes
    start, end = min(t for _, t in first), max(t for _, t in first)
    assert all(key in first for key in again if start <= key[1] <= end)  # none between the former rows
