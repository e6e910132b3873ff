"""Live inference latency of a replica: the last N model calls as percentiles, and every call as the
kcloud_model_inference_seconds histogram of its model (core/metrics_catalog.py)."""

from __future__ import annotations

from collections import deque

import numpy as np

from core.metrics_catalog import MODEL_INFERENCE_SECONDS, create


class LatencyRecorder:
    """Keeps the latest `size` model-call durations (ms) of model `model_id` and how many requests they served."""

    def __init__(self, model_id: str, size: int = 2048):
        self.model_id = model_id
        self._durations: deque[float] = deque(maxlen=size)
        self._histogram = create(MODEL_INFERENCE_SECONDS)
        self.calls = 0
        self.requests = 0

    def record(self, milliseconds: float, count: int = 1) -> None:
        """One model call that served `count` requests."""
        self._durations.append(milliseconds)
        self.calls += 1
        self.requests += count
        if self._histogram is not None:
            self._histogram.observe(milliseconds / 1000.0, tags={"model_id": self.model_id})

    def restart(self) -> None:
        """A new version serves from here on: its percentiles and counts start empty (the histogram's series, one
        per model, goes on)."""
        self._durations.clear()
        self.calls = 0
        self.requests = 0

    def percentiles(self) -> dict[str, float | int]:
        """p50/p90/p99 of model-call latency in ms over the window, plus totals since the served version loaded."""
        if not self._durations:
            return {"calls": 0, "requests": 0}
        p50, p90, p99 = np.percentile(np.fromiter(self._durations, float), [50, 90, 99])
        return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
                "calls": self.calls, "requests": self.requests,
                "mean_batch_size": round(self.requests / self.calls, 2)}
