"""PrometheusStore.window sends its range queries at once (tests/integration/test_prometheus_store.py reads real
windows from a real Prometheus)."""

from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime, timedelta

from core.stores import prometheus
from core.stores.prometheus import PrometheusStore


def test_a_window_s_range_queries_run_at_once_not_one_after_another(monkeypatch) -> None:
    """Regression: the 8 queries of a window ran one after another, each with its own 10 s timeout: 8 round trips a
    window (a scaling tick over 1,000 nodes, 8,000 in a row), and 80 s against a Prometheus that hangs."""
    store = PrometheusStore("http://prom:9090")
    queries = len(store._window_exprs("n1", 60))
    together = threading.Barrier(queries, timeout=5)  # broken (an error) unless every query waits at once

    def urlopen(request, timeout):
        together.wait()
        return io.BytesIO(json.dumps({"status": "success", "data": {"result": []}}).encode())

    monkeypatch.setattr(prometheus, "open_url", urlopen)
    end = datetime(2026, 12, 1, tzinfo=UTC)
    frame = store.window("n1", end - timedelta(minutes=10), end, 60)
    assert len(frame) == 10 and frame["power_watts"].isna().all()
