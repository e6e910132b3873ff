"""Scores on the holdout: the new forecaster's, and the active model's on the very same windows."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from core.registry import ModelRegistry
from training.metrics import interval_metrics, point_metrics
from training.power.dataset import PreparedData
from training.power.forecaster import ArtifactError, PowerForecaster
from training.power.windows import NotEnoughData, Role


class HoldoutMetrics(BaseModel):
    """A forecaster's scores on the holdout (TEST role) windows; watts unless named otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mae: float
    rmse: float
    mape: float  # percent
    coverage: float  # share of actual values inside the interval
    nominal_coverage: float
    mean_interval_width: float
    mean_confidence: float
    hit_rate: float  # share of forecasts within `confidence_tolerance` of the actual value
    confidence_tolerance: float
    last_value_mae: float  # the "no change" baseline on the same points
    holdout_points: int


class Incumbent(BaseModel):
    """The active version and its MAE on the new model's holdout."""

    model_config = ConfigDict(frozen=True)

    version: int
    mae: float


def holdout_metrics(forecaster: PowerForecaster, prepared: PreparedData, coverage: float,
                    tolerance: float) -> HoldoutMetrics:
    """The forecaster's scores on the holdout windows of `prepared`."""
    test = prepared.windows(Role.TEST, pipeline=forecaster.pipeline, sequence_length=forecaster.sequence_length)
    if len(test) == 0:
        raise NotEnoughData("holdout too short for one forecast; raise --holdout-fraction")
    forecast = forecaster.forecast(test.inputs, test.last_power)
    last_value = test.last_power[:, None].repeat(test.targets.shape[1], axis=1)
    return HoldoutMetrics(
        **point_metrics(forecast.point, test.targets, test.mask),
        **interval_metrics(forecast.lower, forecast.upper, forecast.point, forecast.confidence,
                           test.targets, test.mask, nominal=coverage, tolerance=tolerance),
        last_value_mae=point_metrics(last_value, test.targets, test.mask)["mae"],
        holdout_points=int(test.mask.sum()),
    )


def score_incumbent(registry: ModelRegistry, model_id: str, prepared: PreparedData, coverage: float,
                    tolerance: float) -> Incumbent | None:
    """The active model scored on `prepared`'s holdout; None when none is active or it is not comparable
    (unreadable, or another step or horizon)."""
    if registry.active_version(model_id) is None:
        return None
    folder, metadata = registry.get(model_id)
    try:
        current = PowerForecaster.load(folder)
    except ArtifactError:
        return None
    if current.pipeline.step_s != prepared.pipeline.step_s or current.horizon != prepared.horizon:
        return None
    return Incumbent(version=metadata.version, mae=holdout_metrics(current, prepared, coverage, tolerance).mae)
