"""A forecast from a window beyond the power the model trained on, as every caller serves it (the service's
inference, the backtest's served forecast, the simulator's forecasts).

A window is beyond the range when a power value lies outside the training power's range widened by a tenth of it on
each side, at least 5 % of its highest level (`FeaturePipeline.beyond_training_range`): the model has seen nothing
of that level, so its forecast is an extrapolation. Its intervals, calibrated in watts at the training level, are
widened by the window's peak over the training peak (its errors assumed to grow with the level; at most
`MAX_LEVEL_RATIO`) to the wider side's width on both sides, and at least to the window's last value on both sides:
neither the model's level nor its direction there is tested, so the interval is centred on the forecast (a forecast
falling from the window's level had its interval run from the forecast itself up to the last value, the median on
its edge). Its confidence is at most the lowest hit rate seen in calibration, since no held-out point says how well
the model does there. The online calibration then corrects both from the node's own outcomes, as for any forecast.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from training.power.calibration import CalibratedForecast, Calibration
from training.power.features import FeaturePipeline
from training.power.forecaster import PowerForecaster
from training.power.online_blend import blend_in_time
from training.power.windows import Windows

MAX_LEVEL_RATIO = 10.0


def level_ratios(pipeline: FeaturePipeline, watts: np.ndarray) -> np.ndarray:
    """Per window of `watts` [N, T]: NaN within the training range, else its peak over the training peak (1 to
    MAX_LEVEL_RATIO); all NaN for a pipeline saved before the range was kept."""
    ratios = np.full(len(watts), np.nan)
    if pipeline.power_range is None:
        return ratios
    high = max(pipeline.power_range[1], 1e-6)
    for row, window in enumerate(watts):
        if pipeline.beyond_training_range(window):
            ratios[row] = min(max(1.0, float(np.max(window)) / high), MAX_LEVEL_RATIO)
    return ratios


def served_forecast(forecaster: PowerForecaster, windows: Windows, origin_time: np.ndarray | None = None, *,
                    experts: tuple[np.ndarray, np.ndarray | None] | None = None) -> CalibratedForecast:
    """The served forecast of windows the forecaster's pipeline built, as the service answers them. With the
    windows' `origin_time` [N] (datetime64), a model that blends online follows its blend in time order over the
    windows' own outcomes (training.power.online_blend), as the service does over its nodes'; without, the blend
    chosen on the calibration split serves every window. `experts`: the models' forecasts of the windows, where the
    caller has them already (`PowerForecaster.experts`)."""
    pipeline = forecaster.pipeline
    if experts is None:
        experts = forecaster.experts(windows.inputs, windows.last_power, partner=origin_time is not None)
    weights = None if origin_time is None else followed_weights(forecaster, experts, windows.targets, windows.mask,
                                                                origin_time)
    watts = windows.inputs[:, :, 0] * pipeline.power_std + pipeline.power_mean  # the pipeline's first column
    return extrapolated(forecaster.forecast_from(experts, weights), level_ratios(pipeline, watts),
                        windows.last_power, forecaster.served_calibration)


def followed_weights(forecaster: PowerForecaster, experts: tuple[np.ndarray, np.ndarray | None], targets: np.ndarray,
                     mask: np.ndarray, origin_time: np.ndarray) -> np.ndarray | None:
    """The per-window LSTM weights [N, H] of a model that blends online, its blend followed in time order over the
    windows' own outcomes (`targets`, scored where `mask`) from origins at `origin_time`; None for one that does not
    (its static mix serves)."""
    lstm, gbm = experts
    if gbm is None or forecaster.served is None:
        return None
    return blend_in_time(lstm[..., 1], gbm, targets, mask, origin_time, forecaster.pipeline.step_s,
                         np.asarray(forecaster.served.lstm_weight))


def extrapolated(forecast: CalibratedForecast, ratios: np.ndarray, last_power: np.ndarray,
                 calibration: Calibration | None) -> CalibratedForecast:
    """`forecast` [N, H] with the rows whose ratio is not NaN answered as extrapolations."""
    beyond = np.isfinite(ratios)
    if not beyond.any():
        return forecast
    ratio, last = np.where(beyond, ratios, 1.0)[:, None], np.asarray(last_power, dtype=float)[:, None]
    point, lower, upper = forecast.point, forecast.lower, forecast.upper
    half = np.maximum(np.maximum(point - lower, upper - point) * ratio, np.abs(last - point))
    wide_lower, wide_upper = np.clip(point - half, 0.0, None), point + half
    floor = min(calibration.rate_knots) if calibration is not None else 0.0
    rows = beyond[:, None]
    return replace(
        forecast,
        lower=np.where(rows, wide_lower, lower),
        upper=np.where(rows, wide_upper, upper),
        confidence=np.where(rows, np.minimum(forecast.confidence, floor), forecast.confidence),
        peak_upper=None if forecast.peak_upper is None else np.where(
            rows, _peak(forecast, wide_upper), forecast.peak_upper))


def _peak(forecast: CalibratedForecast, wide_upper: np.ndarray) -> np.ndarray:
    """The peak bound moved by each lead's widening, and still what it promises (training.power.peak_bound): at
    least the highest upper bound so far, never lower at a later lead. The centred widening differs from lead to lead
    (it follows the lower side and the distance to the last value), so the moved bound alone could fall below an
    earlier lead's upper bound."""
    moved = forecast.peak_upper + wide_upper - forecast.upper
    return np.maximum.accumulate(np.maximum(moved, np.maximum.accumulate(wide_upper, axis=-1)), axis=-1)
