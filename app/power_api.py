"""Translation between the power-prediction HTTP bodies and the forecaster's value types."""

from __future__ import annotations

from app.errors import ApiError
from app.schemas import PowerPoint, PowerPredictionRequest, PowerPredictionResponse
from training.data import NUMERIC_FEATURES
from training.durations import parse_duration
from training.inference import PowerForecast, PowerHistory


def wants_stored_history(request: PowerPredictionRequest) -> bool:
    """A request naming a node but bringing no power history asks for the stored window."""
    return request.node_id is not None and (request.features is None or not request.features.power_watts)


def to_history(request: PowerPredictionRequest) -> PowerHistory:
    """The forecaster's input for a request; 422 naming the field when the window cannot be filled."""
    features = request.features
    if features is None or not features.power_watts:
        raise ApiError(422, ["body", "features", "power_watts"],
                       "recent power history is required (or a node_id whose telemetry is stored)")
    numeric = {name: tuple(values) for name in NUMERIC_FEATURES if (values := getattr(features, name))}
    return PowerHistory(power_watts=tuple(features.power_watts), numeric=numeric,
                        workload_type=features.workload_type, end_time=request.end_time,
                        horizon_s=parse_duration(request.prediction_horizon))


def to_response(request: PowerPredictionRequest, forecast: PowerForecast) -> PowerPredictionResponse:
    points = [
        PowerPoint(timestamp=t, predicted_power=p, lower=lo, upper=hi, confidence=c)
        for t, p, lo, hi, c in zip(forecast.timestamps, forecast.point, forecast.lower, forecast.upper,
                                   forecast.confidence, strict=True)
    ]
    total = float(sum(forecast.point))
    return PowerPredictionResponse(
        workload_id=request.workload_id,
        node_id=request.node_id,
        predictions=points,
        total_predicted_power=round(total, 2),
        predicted_energy_kwh=round(total * forecast.step_s / 3600.0 / 1000.0, 4),
        model_version=forecast.model_version,
        step_seconds=forecast.step_s,
        interval_coverage=forecast.interval_coverage,
        window_coverage=forecast.window_coverage,
        padded_steps=forecast.padded_steps,
    )
