"""A node's latest forecast from stored telemetry as Ray metrics gauges: the next model step's point forecast
and interval (kcloud_forecast_power_watts, bound point/lower/upper; core/metrics_catalog.py)."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime

from core.forecasts import PowerForecast
from core.metrics_catalog import FORECAST_POWER_WATTS, create

MAX_NODES = 10_000  # (node, model) pairs whose newest published step is remembered (the least recent forgotten)


class ForecastGauges:
    """Publishes forecasts per node; a no-op where Ray metrics are unavailable. A forecast for an earlier step than
    the one a node's gauges show (a workload's window cut back to its oldest node's bin, a request answered late) is
    not published over it."""

    def __init__(self) -> None:
        self._gauge = create(FORECAST_POWER_WATTS)
        self._shown: OrderedDict[tuple[str, str], datetime] = OrderedDict()

    def publish(self, node_id: str, forecast: PowerForecast) -> None:
        if self._gauge is None or not forecast.point:
            return
        model_id = forecast.model_version.rpartition("/")[0] or forecast.model_version  # "power_lstm/3" -> power_lstm
        key, step = (node_id, model_id), forecast.timestamps[0]
        if (shown := self._shown.get(key)) is not None and step < shown:
            return
        self._shown[key] = step
        self._shown.move_to_end(key)
        if len(self._shown) > MAX_NODES:
            self._shown.popitem(last=False)
        for bound, values in (("point", forecast.point), ("lower", forecast.lower), ("upper", forecast.upper)):
            self._gauge.set(values[0], tags={"node_id": node_id, "model_id": model_id, "bound": bound})
