"""A store read for a retraining is refused, naming its size and the way out, before any window is read when it
would take more rows than the host can train on (366 days of 100 nodes at 1 min: tens of GiB at the peak)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.settings import ConfigError
from core.stores.frame import MAX_ROWS, stored_frame


class Nodes:
    """A store that lists nodes and must not be read."""

    def __init__(self, count: int) -> None:
        self.names = [f"n{i}" for i in range(count)]

    def nodes(self, since: datetime) -> list[str]:
        return self.names

    def window(self, *args, **kwargs):
        raise AssertionError("read although refused")

    long_window = window


def test_a_read_over_the_row_limit_is_refused_before_any_window_is_read(monkeypatch):
    monkeypatch.delenv("KCLOUD_MAX_STORE_ROWS", raising=False)
    year = 366 * 86400
    with pytest.raises(ValueError, match=r"100 node\(s\) × 527,040 bins of 60 s \(31622400 s\) is 52,704,000 rows, "
                                         r"more than the 8,000,000 one read takes \(KCLOUD_MAX_STORE_ROWS"):
        stored_frame(Nodes(100), year, 60, now=datetime(2026, 12, 1, tzinfo=UTC))
    monkeypatch.setenv("KCLOUD_MAX_STORE_ROWS", "99")
    with pytest.raises(ValueError, match="name fewer nodes"):
        stored_frame(Nodes(2), 3000, 60)  # 2 × 50 bins
    with pytest.raises(ValueError, match="holds no power readings"):  # within it: read (the named nodes only)
        stored_frame(Nodes(2), 3000, 60, only={"other"})
    monkeypatch.setenv("KCLOUD_MAX_STORE_ROWS", "50")
    with pytest.raises(ValueError, match="1 node\\(s\\) × 51 bins"):  # off a bin's start: the partial bin counts
        stored_frame(Nodes(1), 3000, 60, now=datetime(2026, 12, 1, 0, 0, 30, tzinfo=UTC))
    monkeypatch.delenv("KCLOUD_MAX_STORE_ROWS")  # review: one node's 3 years at 1 min passed the row limit, then
    with pytest.raises(ValueError, match=r"1,576,801 bins of 60 s .* more than the 1,000,000 one window read takes"):
        stored_frame(Nodes(1), 3 * 365 * 86400, 60)  # each window read failed as "the telemetry store failed"
    monkeypatch.setenv("KCLOUD_MAX_STORE_ROWS", "lots")
    with pytest.raises(ConfigError, match="KCLOUD_MAX_STORE_ROWS"):
        stored_frame(Nodes(1), 3000, 60)
    assert MAX_ROWS // (14 * 1440) == 396  # the scheduler's 14 days at 1 min: up to 396 nodes by default


def test_a_retraining_read_takes_each_node_s_window_as_a_long_read(tmp_path):
    """Weeks of a node: a backend whose requests time out sooner (InfluxDB's 10 s) gives the read longer."""
    from core.stores.sqlite import SqliteStore
    from core.telemetry import TelemetrySample

    class Recording(SqliteStore):
        long: list[str] = []

        def long_window(self, node_id, start, end, step_s):
            self.long.append(node_id)
            return super().long_window(node_id, start, end, step_s)

    now = datetime(2026, 12, 1, tzinfo=UTC)
    with Recording(tmp_path / "telemetry") as store:
        store.write([TelemetrySample(timestamp=datetime(2026, 11, 30, 23, minute, tzinfo=UTC), node_id=node,
                                     source="ipmi", power_watts=100.0) for node in ("a", "b") for minute in range(5)])
        assert set(stored_frame(store, 3600, 60, now=now)["node_id"]) == {"a", "b"}
        assert sorted(store.long) == ["a", "b"]
