"""A node's latest forecast from stored telemetry as Ray metrics gauges: the next model step's point forecast
and interval (kcloud_forecast_power_watts, bound point/lower/upper; core/metrics_catalog.py)."""

from __future__ import annotations

from core.forecasts import PowerForecast
from core.metrics_catalog import FORECAST_POWER_WATTS, create


class ForecastGauges:
    """Publishes forecasts per node; a no-op where Ray metrics are unavailable."""

    def __init__(self) -> None:
        self._gauge = create(FORECAST_POWER_WATTS)

    def publish(self, node_id: str, forecast: PowerForecast) -> None:
        if self._gauge is None or not forecast.point:
            return
        model_id = forecast.model_version.rpartition("/")[0] or forecast.model_version  # "power_lstm/3" -> power_lstm
        for bound, values in (("point", forecast.point), ("lower", forecast.lower), ("upper", forecast.upper)):
            self._gauge.set(values[0], tags={"node_id": node_id, "model_id": model_id, "bound": bound})
