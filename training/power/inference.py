"""Forecasting from what a caller knows: recent history lists in, a calibrated `PowerForecast` out.

Value types shared by the Serve deployments and the API (no Ray, no HTTP here). History lists are at
the model's step, most recent last, aligned at their ends. When they are shorter than the model's window,
the window is filled honestly: the earliest known value of each series is repeated backwards and those
steps are flagged imputed; a feature that is absent entirely is marked missing (the model was trained
with missing flags). `window_coverage` says what share of the window was real power history.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from core.durations import format_duration
from core.telemetry_csv import NUMERIC_FEATURES
from training.power.features import Segment
from training.power.forecaster import PowerForecaster


class PowerHistory(BaseModel):
    """Recent telemetry of one node or workload, one value per model step, oldest first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    power_watts: tuple[float, ...]
    numeric: dict[str, tuple[float, ...]] = {}
    workload_type: str | None = None
    end_time: datetime | None = None  # time of the last value (UTC); None means now, floored to the step
    horizon_s: int  # how far ahead to forecast


class ForecastRequestError(ValueError):
    """A request the model cannot answer as asked; `field` names the offending request field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):  # survives pickling across Serve replicas
        return (ForecastRequestError, (self.field, self.message))


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
            "train a model with a longer --horizon")
    return steps


class PowerForecast(BaseModel):
    """Calibrated forecast for lead steps 1..n after `end_time`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_version: str
    step_s: int
    timestamps: tuple[datetime, ...]
    point: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    confidence: tuple[float, ...]
    window_coverage: float  # share of the input window that was real power history
    padded_steps: int
    interval_coverage: float  # nominal coverage of [lower, upper]
    # peak_upper[k-1] bounds max(actual[1..k]) with probability (1 + interval_coverage) / 2, the level of `upper`
    # (training.power.peak_bound); None from code that cannot bound the peak (a decision then uses max(upper))
    peak_upper: tuple[float, ...] | None = None


class ServedModel(BaseModel):
    """What a PowerPredictor replica serves: version, step, window, horizon, features and live latency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_version: str
    step_seconds: int
    sequence_length: int
    horizon_steps: int
    features: tuple[str, ...]
    latency_ms: dict[str, float | int]  # p50/p90/p99 of model calls and call counts (deployments/latency.py)


def history_segment(history: PowerHistory, sequence_length: int, step_s: int) -> tuple[Segment, int]:
    """The model's input segment for a history, and how many leading steps were padded."""
    power = np.asarray(history.power_watts[-sequence_length:], dtype=float)
    padded = sequence_length - len(power)
    numeric = {}
    for name in NUMERIC_FEATURES:
        values = np.asarray(history.numeric.get(name, ())[-sequence_length:], dtype=float)
        numeric[name] = _pad_front(values, sequence_length) if values.size else np.full(sequence_length, np.nan)
    end_time = history.end_time or utc_now_floor(step_s)
    start = pd.Timestamp(end_time) - pd.Timedelta(seconds=step_s * (sequence_length - 1))
    segment = Segment(
        node_id="request",
        start=start,
        step_s=step_s,
        power=_pad_front(power, sequence_length),
        numeric=numeric,
        workload=np.full(sequence_length, history.workload_type, dtype=object),
        imputed=np.arange(sequence_length) < padded,
    )
    return segment, padded


def _pad_front(values: np.ndarray, length: int) -> np.ndarray:
    if values.size >= length:
        return values[-length:]
    return np.concatenate([np.full(length - values.size, values[0]), values])


def forecast_histories(forecaster: PowerForecaster, histories: list[PowerHistory], version: str) -> list[PowerForecast]:
    """Forecast many histories in one forward pass (validate each with `horizon_steps` first)."""
    step_s = forecaster.pipeline.step_s
    horizons = [horizon_steps(forecaster, h.horizon_s) for h in histories]
    windows, last_power, padding, ends = [], [], [], []
    for history in histories:
        segment, padded = history_segment(history, forecaster.sequence_length, step_s)
        ends.append(segment.times[-1].to_pydatetime())
        windows.append(forecaster.pipeline.transform(segment))
        last_power.append(segment.power[-1])
        padding.append(padded)
    result = forecaster.forecast(np.stack(windows), np.asarray(last_power))
    coverage = forecaster.interval_coverage
    forecasts = []
    for row, (end, steps, padded) in enumerate(zip(ends, horizons, padding, strict=True)):
        forecasts.append(PowerForecast(
            model_version=version,
            step_s=step_s,
            timestamps=tuple(end + timedelta(seconds=step_s * k) for k in range(1, steps + 1)),
            point=_rounded(result.point[row, :steps]),
            lower=_rounded(result.lower[row, :steps]),
            upper=_rounded(result.upper[row, :steps]),
            confidence=tuple(round(float(v), 4) for v in result.confidence[row, :steps]),
            window_coverage=round(1.0 - padded / forecaster.sequence_length, 4),
            padded_steps=padded,
            interval_coverage=coverage,
            peak_upper=None if result.peak_upper is None else _rounded(result.peak_upper[row, :steps]),
        ))
    return forecasts


def _rounded(values: np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in values)


def utc_now_floor(step_s: int) -> datetime:
    """Now, rounded down to the step: the default time of a history's last value."""
    now = datetime.now(UTC).timestamp()
    return datetime.fromtimestamp(now - now % step_s, UTC)
