"""Forecasting from what a caller knows: recent history lists in, a calibrated `PowerForecast` out.

The value types live in core.forecasts (no Ray, no HTTP here). History lists are at
the model's step, most recent last, aligned at their ends. When they are shorter than the model's window,
the earliest known value of each series is repeated backwards (the segment marks those steps imputed, but the
model has no input for that: it reads them as history); a feature that is absent entirely is marked missing (the
model was trained with missing flags). `window_coverage` says what share of the window was real power history
(not padded in front, not held over a gap in a store's telemetry).

Without any power history (the features-only mode), the window's power is estimated from its features and
the forecast carries the mode's own calibration (training.power.features_only); `estimated_from` names the
features the estimate used.

A window whose power lies beyond the range the model trained on is answered as an extrapolation, named so
(`outside_training_range`; training.power.extrapolation).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from core.durations import format_duration
from core.forecasts import ForecastRequestError, PowerForecast, PowerHistory, last_value_time
from core.telemetry_csv import NUMERIC_FEATURES
from training.power.calibration import CalibratedForecast
from training.power.extrapolation import extrapolated, level_ratios
from training.power.features import Segment
from training.power.features_only import estimated_segment
from training.power.forecaster import PowerForecaster


def horizon_steps(forecaster: PowerForecaster, horizon_s: int) -> int:
    """Lead steps for a horizon, refusing what the model cannot honestly forecast."""
    step_s = forecaster.pipeline.step_s
    if horizon_s % step_s:
        raise ForecastRequestError("prediction_horizon", f"must be a whole number of the model's {step_s}s steps")
    steps = horizon_s // step_s
    if steps > forecaster.horizon:
        limit = format_duration(forecaster.horizon * step_s)
        raise ForecastRequestError(
            "prediction_horizon",
            f"{format_duration(horizon_s)} is beyond the served model's horizon of {limit}; "
            "train a model with a longer horizon (train_lstm --horizon)")
    return steps


def history_segment(history: PowerHistory, sequence_length: int, step_s: int) -> tuple[Segment, int]:
    """The model's input segment for a history, and how many leading steps were padded (power NaN: none given)."""
    given = history.power_watts or max((history.numeric.get(name, ()) for name in NUMERIC_FEATURES), key=len)
    padded = sequence_length - min(len(given), sequence_length)
    power = np.asarray(history.power_watts[-sequence_length:], dtype=float)
    numeric = {}
    for name in NUMERIC_FEATURES:
        values = np.asarray(history.numeric.get(name, ())[-sequence_length:], dtype=float)
        # a shorter list starts later: before it the feature is missing, as training reads a column that starts late
        numeric[name] = _pad_front(values, sequence_length, fill=np.nan)
    end_time = last_value_time(history, step_s)
    start = pd.Timestamp(end_time) - pd.Timedelta(seconds=step_s * (sequence_length - 1))
    segment = Segment(
        node_id="request",
        start=start,
        step_s=step_s,
        power=_pad_front(power, sequence_length) if power.size else np.full(sequence_length, np.nan),
        numeric=numeric,
        workload=np.full(sequence_length, history.workload_type, dtype=object),
        imputed=np.arange(sequence_length) < padded,
    )
    return segment, padded


def _pad_front(values: np.ndarray, length: int, fill: float | None = None) -> np.ndarray:
    """The last `length` values, the missing front filled with `fill` (None: the first value)."""
    if values.size >= length:
        return values[-length:]
    return np.concatenate([np.full(length - values.size, values[0] if fill is None else fill), values])


def check_history(forecaster: PowerForecaster, history: PowerHistory) -> int:
    """Lead steps of a history the model can answer; refuses (ForecastRequestError) one it cannot."""
    steps = horizon_steps(forecaster, history.horizon_s)
    if not history.power_watts:
        estimation_features(forecaster, history)
    return steps


def estimation_features(forecaster: PowerForecaster, history: PowerHistory) -> tuple[str, ...]:
    """The features the power of a history without one will be estimated from."""
    if forecaster.features_only is None:
        raise ForecastRequestError("features", "power_watts is required: this model was trained before the "
                                               "features-only mode; retrain it")
    estimator = forecaster.features_only.estimator
    given = {name for name, values in history.numeric.items() if values}
    label = history.workload_type
    if label and label in estimator.workload_vocab:  # a label the model never saw tells it nothing
        given.add("workload_type")
    used = estimator.fits[estimator.choose(given)].features
    if not used:
        unknown = (f"; workload_type {label[:64]!r} is not one it learned ({', '.join(estimator.workload_vocab[:10])})"
                   if label and label not in estimator.workload_vocab and estimator.workload_vocab else "")
        raise ForecastRequestError(
            "features", f"none of the given features ({', '.join(sorted(given)) or 'none'}) can estimate power for "
            f"this model, which learned it from {', '.join(estimator.inputs) or 'none'}{unknown}; send power_watts")
    return used


@dataclass(frozen=True)
class _Input:
    window: np.ndarray  # [T, F]
    last_power: float
    padded: int
    filled: int  # steps inside the window held over a gap (PowerHistory.filled_steps)
    end: datetime
    scale: float | None  # the power estimate's typical error (features-only mode); None: measured power
    estimated_from: tuple[str, ...]
    level_ratio: float  # NaN within the training range, else the window's peak over the training peak


def _model_input(forecaster: PowerForecaster, history: PowerHistory) -> _Input:
    segment, padded = history_segment(history, forecaster.sequence_length, forecaster.pipeline.step_s)
    scale, used = None, ()
    if not history.power_watts:
        used = estimation_features(forecaster, history)
        estimator = forecaster.features_only.estimator
        segment, chosen = estimated_segment(segment, estimator)
        if 0 < padded < len(segment.power):  # before any list starts: the earliest estimate repeated, as the
            # earliest measured power is (a label alone, no list, is read at every step)
            front = np.full(padded, segment.power[padded])
            segment = replace(segment, power=np.concatenate([front, segment.power[padded:]]))
        scale = estimator.fits[chosen[-1]].scale
    filled = min(history.filled_steps, forecaster.sequence_length - padded) if history.power_watts else 0
    return _Input(forecaster.pipeline.transform(segment), float(segment.power[-1]), padded, filled,
                  segment.end.to_pydatetime(), scale, used,
                  float(level_ratios(forecaster.pipeline, segment.power[None])[0]))


def _forecast_inputs(forecaster: PowerForecaster, inputs: list[_Input], lstm_weight: np.ndarray | None,
                     follow_blend: bool) -> list[tuple[CalibratedForecast, int]]:
    """Each input's calibrated forecast and its row in it: one pass for measured histories (`lstm_weight`: the online
    blend's; `follow_blend`: with both models' points), one for estimated."""
    answers: list[tuple[CalibratedForecast, int] | None] = [None] * len(inputs)
    for estimated in (False, True):
        rows = [i for i, given in enumerate(inputs) if (given.scale is not None) == estimated]
        if not rows:
            continue
        windows = np.stack([inputs[i].window for i in rows])
        last = np.asarray([inputs[i].last_power for i in rows])
        result = (forecaster.forecast_features_only(windows, last, np.asarray([inputs[i].scale for i in rows]))
                  if estimated else forecaster.forecast(windows, last, lstm_weight, partner=follow_blend))
        calibration = forecaster.features_only.calibration if estimated else forecaster.served_calibration
        result = extrapolated(result, np.asarray([inputs[i].level_ratio for i in rows]), last, calibration)
        for row, i in enumerate(rows):
            answers[i] = (result, row)
    return [answer for answer in answers if answer is not None]


def forecast_histories(forecaster: PowerForecaster, histories: list[PowerHistory], version: str, *,
                       synthetic: bool = False, lstm_weight: np.ndarray | None = None,
                       follow_blend: bool = False) -> list[PowerForecast]:
    """Forecast many histories in one forward pass per mode (validate each with `check_history` first).

    `synthetic`: the model was trained on generated data (said in every forecast). `lstm_weight` [H]: the served
    blend's per-lead weights as the online blend has them (training.power.online_blend), for a model that
    `blends_online`; None: the calibration split's. `follow_blend`: the forecasts carry both models' points for the
    online blend to learn from (`PowerForecast.blend_experts`), where the model has both."""
    step_s = forecaster.pipeline.step_s
    horizons = [horizon_steps(forecaster, h.horizon_s) for h in histories]
    inputs = [_model_input(forecaster, history) for history in histories]
    coverage = forecaster.interval_coverage
    forecasts = []
    for (result, row), given, steps in zip(_forecast_inputs(forecaster, inputs, lstm_weight, follow_blend), inputs,
                                           horizons, strict=True):
        end, padded = given.end, given.padded
        forecasts.append(PowerForecast(
            model_version=version,
            step_s=step_s,
            timestamps=tuple(end + timedelta(seconds=step_s * k) for k in range(1, steps + 1)),
            point=rounded(result.point[row, :steps]),
            lower=rounded(result.lower[row, :steps]),
            upper=rounded(result.upper[row, :steps]),
            confidence=rounded(result.confidence[row, :steps], 4),
            window_coverage=0.0 if given.estimated_from else round(1.0 - (padded + given.filled)
                                                                     / forecaster.sequence_length, 4),
            padded_steps=padded,
            interval_coverage=coverage,
            confidence_tolerance=forecaster.confidence_tolerance,
            peak_upper=None if result.peak_upper is None else rounded(result.peak_upper[row, :steps]),
            estimated_from=given.estimated_from,
            outside_training_range=("power_watts",) if np.isfinite(given.level_ratio) else (),
            trained_on_synthetic_data=synthetic,
            blend_experts=None if result.experts is None else (rounded(result.experts[row, :steps, 0]),
                                                               rounded(result.experts[row, :steps, 1])),
        ))
    return forecasts


def rounded(values: np.ndarray, decimals: int = 2) -> tuple[float, ...]:
    """Values as an answer gives them: watts to 2 decimals (confidence to 4)."""
    return tuple(np.round(np.asarray(values, dtype=float), decimals).tolist())

