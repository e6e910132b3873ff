"""A node's latest forecast from stored telemetry as Ray metrics gauges: the next model step's point forecast
and interval (kcloud_forecast_power_watts, bound point/lower/upper; core/metrics_catalog.py)."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from core.forecasts import PowerForecast
from core.metrics_catalog import FORECAST_POWER_WATTS, create

MAX_NODES = 10_000  # (node, model) pairs whose newest published step is remembered (the least recent forgotten)
UNASKED_AFTER_S = 900.0  # a node no forecast was published for in this long shows none (at least `stale_after_s`)


class ForecastGauges:
    """Publishes forecasts per node; a no-op where Ray metrics are unavailable. A forecast for an earlier step than
    the one a node's gauges show (a workload's window cut back to its oldest node's bin, a request answered late) is
    not published over it. A node withdrawn (its telemetry stale), forgotten (beyond MAX_NODES) or not forecast for
    `unasked_after_s` (no policy reads it any more: looked for at each publish and each `expire`, which the replica
    calls as it polls the registry) shows NaN: no forecast, rather than its last one for good."""

    def __init__(self, unasked_after_s: float = UNASKED_AFTER_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._gauge = create(FORECAST_POWER_WATTS)
        self.unasked_after_s, self._clock = unasked_after_s, clock
        self._lock = threading.Lock()  # publishes come from request threads, `expire` from the registry poll
        # per (node, model): the step its gauges show and when it was published, least recently published first
        self._shown: OrderedDict[tuple[str, str], tuple[datetime, float]] = OrderedDict()

    def publish(self, node_id: str, forecast: PowerForecast) -> None:
        if self._gauge is None or not forecast.point:
            return
        model_id = forecast.model_version.rpartition("/")[0] or forecast.model_version  # "power_lstm/3" -> power_lstm
        key, step, now = (node_id, model_id), forecast.timestamps[0], self._clock()
        with self._lock:
            if (shown := self._shown.get(key)) is not None and step < shown[0]:
                return
            self._shown[key] = (step, now)
            self._shown.move_to_end(key)
            if len(self._shown) > MAX_NODES:
                self._set(*self._shown.popitem(last=False)[0], (math.nan,) * 3)
            self._expire(now)
            self._set(node_id, model_id, (forecast.point[0], forecast.lower[0], forecast.upper[0]))

    def expire(self) -> None:
        """NaN in the gauges of every node not forecast for `unasked_after_s`."""
        if self._gauge is not None:
            with self._lock:
                self._expire(self._clock())

    def _expire(self, now: float) -> None:
        while self._shown:  # least recently published first
            unasked, (_, published) = next(iter(self._shown.items()))
            if now - published <= self.unasked_after_s:
                return
            del self._shown[unasked]
            self._set(*unasked, (math.nan,) * 3)

    def withdraw(self, node_id: str, model_version: str) -> None:
        """NaN in the node's gauges of the model: it has no current forecast (its telemetry is stale)."""
        model_id = model_version.rpartition("/")[0] or model_version
        if self._gauge is not None:
            with self._lock:
                if self._shown.pop((node_id, model_id), None) is not None:
                    self._set(node_id, model_id, (math.nan,) * 3)

    def _set(self, node_id: str, model_id: str, values: tuple[float, float, float]) -> None:
        for bound, value in zip(("point", "lower", "upper"), values, strict=True):
            self._gauge.set(value, tags={"node_id": node_id, "model_id": model_id, "bound": bound})
