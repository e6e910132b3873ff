"""Live inference latency of a replica: the last N model calls as percentiles, and every call as the
kcloud_model_inference_seconds histogram of its model (core/metrics_catalog.py)."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from core.metrics_catalog import MODEL_INFERENCE_SECONDS, create


class LatencyRecorder:
    """Keeps the latest `size` model-call durations (ms) of model `model_id` and how many requests they served.
    Safe across threads: a version is loaded (`restart`) in a worker thread while calls are recorded on the
    replica's inference thread."""

    def __init__(self, model_id: str, size: int = 2048):
        self.model_id = model_id
        self._durations: deque[float] = deque(maxlen=size)
        self._histogram = create(MODEL_INFERENCE_SECONDS)
        self._lock = threading.Lock()
        self.calls = 0
        self.requests = 0

    def record(self, milliseconds: float, count: int = 1) -> None:
        """One model call that served `count` requests."""
        with self._lock:
            self._durations.append(milliseconds)
            self.calls += 1
            self.requests += count
        if self._histogram is not None:
            self._histogram.observe(milliseconds / 1000.0, tags={"model_id": self.model_id})

    def restart(self) -> None:
        """A new version serves from here on: its percentiles and counts start empty (the histogram's series, one
        per model, goes on)."""
        with self._lock:
            self._durations.clear()
            self.calls = 0
            self.requests = 0

    def percentiles(self) -> dict[str, float | int]:
        """p50/p90/p99 of model-call latency in ms over the window, plus totals since the served version loaded."""
        with self._lock:  # one consistent snapshot: a restart or a call meanwhile lands before or after it
            durations, calls, requests = list(self._durations), self.calls, self.requests
        if not durations:
            return {"calls": 0, "requests": 0}
        p50, p90, p99 = np.percentile(np.asarray(durations, dtype=float), [50, 90, 99])
        return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
                "calls": calls, "requests": requests, "mean_batch_size": round(requests / calls, 2)}
