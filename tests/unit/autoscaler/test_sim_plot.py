"""Where the simulator's plot draws a divider between replayed series (no plotting here)."""

from __future__ import annotations

from autoscaler.sim_plot import series_starts


def steps(*rows: tuple[str, str]) -> list[dict[str, str]]:
    return [{"series": series, "time": f"2026-01-01T{clock}:00+00:00"} for series, clock in rows]


def test_a_divider_where_another_node_starts_and_where_the_same_node_resumes_after_a_gap():
    """Two segments of one node, replayed back to back, had no divider between them."""
    replayed = steps(("a", "00:00"), ("a", "00:10"), ("a", "01:30"), ("a", "01:40"), ("b", "00:00"), ("b", "00:10"))
    assert series_starts(replayed, 600) == [2, 4]
    assert series_starts(steps(("a", "00:00"), ("a", "00:10")), 600) == []
