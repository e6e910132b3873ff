"""Translation between the power-prediction HTTP bodies and the forecaster's value types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from app.errors import ApiError
from app.schemas import PowerPoint, PowerPredictionRequest, PowerPredictionResponse
from core.durations import parse_duration
from core.telemetry_csv import NUMERIC_FEATURES
from training.power.inference import PowerForecast, PowerHistory


def stored_nodes(request: PowerPredictionRequest, workloads: Mapping[str, Sequence[str]]) -> list[str] | None:
    """The nodes whose stored windows a request asks for: none when it brings its own power history, else its
    `node_id`, else the nodes the config's `workloads` map lists for its `workload_id` (None: not stored)."""
    if request.features is not None and request.features.power_watts:
        return None
    if request.node_id is not None:
        return [request.node_id]
    return list(workloads[request.workload_id]) if request.workload_id in workloads else None


def sum_forecasts(forecasts: Sequence[PowerForecast]) -> PowerForecast:
    """A workload's forecast from its nodes' forecasts, lead by lead.

    Point, lower and upper are summed: the summed bounds hold whenever every node's do. That is exact for
    nodes whose errors move together and wider than needed for independent ones; it is not a formal
    coverage guarantee for the sum. Confidence is the lowest node's, window coverage the lowest, padding
    the largest.
    """
    first = forecasts[0]
    if len(forecasts) == 1:
        return first

    def total(name: str) -> tuple[float, ...]:
        return tuple(round(sum(values), 2) for values in zip(*(getattr(f, name) for f in forecasts), strict=True))

    return first.model_copy(update={
        "point": total("point"), "lower": total("lower"), "upper": total("upper"),
        "confidence": tuple(min(values) for values in zip(*(f.confidence for f in forecasts), strict=True)),
        "window_coverage": min(f.window_coverage for f in forecasts),
        "padded_steps": max(f.padded_steps for f in forecasts),
    })


def to_history(request: PowerPredictionRequest) -> PowerHistory:
    """The forecaster's input for a request; 422 naming the field when the window cannot be filled."""
    features = request.features
    if features is None or not features.power_watts:
        raise ApiError(422, ["body", "features", "power_watts"],
                       "recent power history is required (or a node_id whose telemetry is stored, or a "
                       "workload_id listed in the config's workloads)")
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
