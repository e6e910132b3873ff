"""Translation between the power-prediction HTTP bodies and the forecaster's value types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from app.schemas import PowerPoint, PowerPredictionRequest, PowerPredictionResponse
from core.durations import parse_duration
from core.forecasts import PowerForecast, PowerHistory
from core.telemetry_csv import NUMERIC_FEATURES


class MissingPowerHistory(ValueError):
    """A request brings no power history, no features to estimate one from, and names no node or configured
    workload to read one for."""


def stored_nodes(request: PowerPredictionRequest, workloads: Mapping[str, Sequence[str]]) -> list[str] | None:
    """The nodes whose stored windows a request asks for: none when it brings its own power history, else its
    `node_id`, else the nodes the config's `workloads` map lists for its `workload_id` (None: not stored)."""
    if request.features is not None and request.features.power_watts:
        return None
    if request.node_id is not None:
        return [request.node_id]
    return list(workloads[request.workload_id]) if request.workload_id in workloads else None


def has_feature_lists(request: PowerPredictionRequest) -> bool:
    """Whether the request brings feature lists (utilization, temperature, ...) to estimate power from."""
    return request.features is not None and any(getattr(request.features, name) for name in NUMERIC_FEATURES)


def to_history(request: PowerPredictionRequest) -> PowerHistory:
    """The forecaster's input for a request that brings its own lists: its power history, or without one the
    features to estimate it from (the features-only mode).

    Raises:
        MissingPowerHistory: no power history and no features.
    """
    features = request.features
    numeric = {name: tuple(values) for name in NUMERIC_FEATURES if features and (values := getattr(features, name))}
    if features is None or not (features.power_watts or numeric or features.workload_type):
        raise MissingPowerHistory(
            "recent power history is required, or features to estimate it from (" + ", ".join(NUMERIC_FEATURES)
            + ", workload_type), or a node_id whose telemetry is stored, or a workload_id listed in the config's "
              "workloads")
    return PowerHistory(power_watts=tuple(features.power_watts or ()), numeric=numeric,
                        workload_type=features.workload_type, end_time=request.end_time,
                        horizon_s=parse_duration(request.prediction_horizon), step_s=request.step_s)


def to_response(request: PowerPredictionRequest, forecast: PowerForecast) -> PowerPredictionResponse:
    """The HTTP answer: every step, and the workload's power averaged over the horizon, its peak and the energy."""
    points = [
        PowerPoint(timestamp=t, predicted_power=p, lower=lo, upper=hi, confidence=c)
        for t, p, lo, hi, c in zip(forecast.timestamps, forecast.point, forecast.lower, forecast.upper,
                                   forecast.confidence, strict=True)
    ]
    watt_steps = float(sum(forecast.point))
    return PowerPredictionResponse(
        workload_id=request.workload_id,
        node_id=request.node_id,
        predictions=points,
        total_predicted_power=round(watt_steps / len(forecast.point), 2) if forecast.point else 0.0,
        peak_predicted_power=round(max(forecast.point, default=0.0), 2),
        predicted_energy_kwh=round(watt_steps * forecast.step_s / 3600.0 / 1000.0, 4),
        model_version=forecast.model_version,
        step_seconds=forecast.step_s,
        interval_coverage=forecast.interval_coverage,
        confidence_tolerance=forecast.confidence_tolerance,
        window_coverage=forecast.window_coverage,
        padded_steps=forecast.padded_steps,
        history_source="features_only" if forecast.estimated_from else "request",
        estimated_from=list(forecast.estimated_from) or None,
        trained_on_synthetic_data=forecast.trained_on_synthetic_data,
        outside_training_range=list(forecast.outside_training_range),
        online_calibration_points=forecast.online_calibration_points,
    )
