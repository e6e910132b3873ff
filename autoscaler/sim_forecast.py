"""The simulator's forecaster: trained on the first part of every series exactly as the backtest does (the LSTM,
then the served forecast chosen and calibrated on the calibration split), and its calibrated forecast at every
replayed step of the test part, cut to the leads a policy's risk window needs, with the served mix of the two models
followed online as the replicas follow it on the controller's windows (training/power/online_blend.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from autoscaler.trace_replay import ForecastFn, LeadForecast
from training.backtest import TrainOptions
from training.power.calibration import CalibratedForecast
from training.power.dataset import PreparedData, prepare
from training.power.extrapolation import served_forecast
from training.power.served import train_served
from training.power.windows import NotEnoughData, Role, Split, Windows
from training.settings import PowerPredictorConfig


@dataclass(frozen=True)
class ReplaySeries:
    """The test part of one gap-free segment, and the forecast row of each of its steps (None: no window)."""

    node_id: str
    times: list[datetime]
    trace_watts: list[float]
    rows: list[int | None]


@dataclass(frozen=True)
class ReplayData:
    """What a replay needs from a trained forecaster: the test parts and their calibrated forecasts."""

    series: list[ReplaySeries]
    forecast: CalibratedForecast
    coverage: float
    horizon: int
    facts: dict[str, Any]  # how the model was trained (reported in the settings)

    def forecast_fn(self, series: ReplaySeries, leads: int) -> ForecastFn:
        """The forecast at each step of `series`, cut to its first `leads` leads."""
        if not 1 <= leads <= self.horizon:
            raise ValueError(f"{leads} leads asked of a forecaster trained for 1..{self.horizon}")
        point, upper, peak = self.forecast.point, self.forecast.upper, self.forecast.peak_upper

        def forecast(i: int) -> LeadForecast | None:
            row = series.rows[i]
            if row is None:
                return None
            return LeadForecast(point[row, :leads].tolist(), upper[row, :leads].tolist(),
                                None if peak is None else peak[row, :leads].tolist())

        return forecast


def prepare_replay(frame: pd.DataFrame, model_config: PowerPredictorConfig, *, step_s: int, max_gap_s: int,
                   features: list[str] | tuple[str, ...], horizon: int, train_fraction: float,
                   split: Split = "series") -> tuple[PreparedData, Windows]:
    """The replay's series split into training and test parts, and its test windows.

    Raises:
        NotEnoughData: a series too short for a window, no test part left to replay, or no training or calibration
            window (found before any training: a suite checks every case up front with this).
    """
    prepared = prepare(frame, step_s=step_s, max_gap_s=max(max_gap_s, step_s), features=features,
                       sequence_length=model_config.sequence_length, horizon=horizon, train_fraction=train_fraction,
                       split=split)
    test = prepared.windows(Role.TEST)
    if len(test) == 0:
        raise NotEnoughData("--train-fraction: no test part left to replay (series too short for the sequence length)")
    prepared.require_training_windows(train_fraction, model_config.interval_coverage)
    return prepared, test


def train_for_replay(frame: pd.DataFrame, model_config: PowerPredictorConfig, *, step_s: int, max_gap_s: int,
                     features: list[str] | tuple[str, ...], horizon: int, train_fraction: float,
                     options: TrainOptions, split: Split = "series") -> ReplayData:
    """Train on the first `train_fraction` of every series (`split` "time": of all series at one cut in time) and
    forecast every test step at leads 1..`horizon`."""
    prepared, test = prepare_replay(frame, model_config, step_s=step_s, max_gap_s=max_gap_s, features=features,
                                    horizon=horizon, train_fraction=train_fraction, split=split)
    forecaster, weights, _ = train_served(prepared, model_config, scaling=options.scaling, verbose=options.verbose)
    # the controller's windows are its nodes' own: served with the blend their outcomes taught, followed in time order
    calibrated = served_forecast(forecaster, test, prepared.origin_times(test))
    row_of = {(int(s), int(o)): n for n, (s, o) in enumerate(zip(test.segment_index, test.origin_index, strict=True))}
    series = []
    for index, (segment, roles) in enumerate(zip(prepared.segments, prepared.roles, strict=True)):
        positions = np.flatnonzero(roles == Role.TEST)
        if not positions.size:
            continue
        first = int(positions[0])
        series.append(ReplaySeries(
            node_id=segment.node_id, times=[t.to_pydatetime() for t in segment.times[first:]],
            trace_watts=[float(w) for w in segment.power[first:]],
            rows=[row_of.get((index, position)) for position in range(first, len(segment))]))
    calibration = forecaster.served_calibration
    facts = {"best_epoch": weights.best_epoch, "epochs_run": weights.epochs_run,
             "refit_epochs": weights.refit_epochs,
             "half_life_steps": weights.half_life_steps,
             "train_seconds": round(weights.duration_s, 1), "seed": model_config.seed,
             "served_method": forecaster.served_method,
             "peak_bound_margins_watts": calibration.peak_margins_watts if calibration is not None else None}
    return ReplayData(series, calibrated, forecaster.interval_coverage, horizon, facts)
