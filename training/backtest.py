"""Backtest of one trace: train on the first part of every series (or, with `split` "time", on every step before
one cut in time for all series), forecast the rest from rolling origins.

Test points are the observed (not imputed) steps of the test part. Every one is forecast
at every lead 1..H from the origin H steps (..1 step) before it, by the LSTM, by the served forecast
(training.power.blend), by the features-only mode (the input window's power withheld and estimated from its
other features: training.power.features_only) and by each baseline, so all methods are scored on exactly the
same (origin, lead) pairs; inputs may reach back into the training part (that is history), targets never do.
A registered model (`--model`) is scored only on test steps after those it trained on (its data span, per series).
The served forecast's blend of the LSTM and the LightGBM follows their outcomes as they land (training.power.
online_blend), and its intervals and confidence are corrected online, series by series, by the outcomes of its
earlier forecasts (training.power.online_calibration), as the service does for the nodes it forecasts from the store;
`served_static_calibration` keeps the interval figures without that correction (around the online blend's point
since it came in, so not comparable with reports from before), `served_static_blend` the point figures of the blend
chosen on the calibration split alone.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.atomic_files import atomic_write_with
from core.registry import ModelRegistry
from core.registry_metadata import DataSpan
from training.cli import train_scaling
from training.metrics import interval_metrics, mae_by_lead, point_metrics
from training.power.baselines import last_value, seasonal_naive, seasonal_period
from training.power.calibration import CalibratedForecast
from training.power.dataset import PreparedData, prepare
from training.power.extrapolation import served_forecast
from training.power.features_only import fit_features_only, withheld_windows
from training.power.forecaster import PowerForecaster
from training.power.online_calibration import adapt_in_time
from training.power.scaling import TrainScaling
from training.power.served import fit_gbm, train_served
from training.power.windows import NotEnoughData, Role, Split, Windows
from training.settings import PowerPredictorConfig, TrainingConfig

FORECASTERS = ("lstm", "served")  # the project's own from a measured power history
NO_TEST_WINDOWS = "no test windows: the series are too short for the sequence length and train fraction"
MODES = ("features_only",)  # the project's own without one: the cost of not measuring power
OWN = (*FORECASTERS, *MODES)  # every other forecast in a report is a baseline


@dataclass(frozen=True)
class TrainOptions:
    """How the LSTM trains (Ray Train scaling) and whether it prints progress."""

    scaling: TrainScaling = TrainScaling()
    verbose: bool = True

    @classmethod
    def from_flags(cls, args: argparse.Namespace) -> TrainOptions:
        """The options `training.cli.add_model_flags`' flags give (the backtest's and the replay's commands)."""
        return cls(scaling=train_scaling(args), verbose=not args.quiet)


def prepare_training(frame: pd.DataFrame, config: TrainingConfig, *, train_fraction: float,
                     split: Split = "series") -> PreparedData:
    """The backtest's series split into training and test parts, as `config` trains them.

    Raises:
        NotEnoughData: a series too short for a window, no test window, or no training or calibration window (found
            before any training: a suite checks every case up front with this).
    """
    predictor, model_config = config.predictor, config.models.power_predictor
    prepared = prepare(frame, step_s=predictor.step, max_gap_s=predictor.max_gap, features=config.features,
                       sequence_length=model_config.sequence_length, horizon=predictor.horizon_steps,
                       train_fraction=train_fraction, split=split)
    if len(prepared.windows(Role.TEST)) == 0:
        raise NotEnoughData(NO_TEST_WINDOWS)
    prepared.require_training_windows(train_fraction, model_config.interval_coverage)
    return prepared


def backtest(frame: pd.DataFrame, config: TrainingConfig, *, train_fraction: float, options: TrainOptions,
             model: str | None = None, model_path: str | None = None, plot: str | None = None,
             split: Split = "series") -> dict[str, Any]:
    """Train (or load `model` from the registry) the forecaster and the baselines, score them all; `split`: how the
    test part is cut (training.power.windows.assign_roles)."""
    started = time.monotonic()
    predictor, model_config = config.predictor, config.models.power_predictor
    model_info: dict[str, Any]
    if model:
        folder, metadata = ModelRegistry(model_path or config.model_path).resolve(model)
        if metadata.data_span is None:  # what it trained on cannot be left out of the test part
            raise ValueError(f"--model {model}: its metadata records no data_span, so the rows it trained on cannot "
                             "be told from the test part (it may be scored on its own training data); backtest "
                             "without --model, or a version registered by train_lstm")
        forecaster = PowerForecaster.load(folder)
        _check_compatible(forecaster, predictor.step, predictor.horizon_steps)
        prepared = prepare(frame, step_s=predictor.step, max_gap_s=forecaster.pipeline.served_max_gap_s,
                           features=forecaster.pipeline.features, sequence_length=forecaster.sequence_length,
                           horizon=forecaster.horizon, train_fraction=train_fraction, split=split)
        prepared = replace(prepared, pipeline=forecaster.pipeline, sequence_length=forecaster.sequence_length,
                           horizon=forecaster.horizon).unseen_by(metadata.data_span)
        if len(prepared.windows(Role.TEST)) == 0:
            raise ValueError(f"--model: {model} trained on these series up to where the test part would be "
                             f"({_until(metadata.data_span)}); evaluate it on telemetry recorded after that")
        coverage, tolerance = _own_interval_settings(forecaster, model_config)
        prepared.require_training_windows(  # the LightGBM baseline's, before LightGBM fails on none; calibrated
            train_fraction, coverage if forecaster.features_only is None else None,  # only for an older model
            remedy="pass a larger --train-fraction or a longer trace (the model's window is fixed)")
        gbm = fit_gbm(prepared, model_config.seed)
        if forecaster.features_only is None:  # a model from before the mode: fitted on this training part
            forecaster.features_only = fit_features_only(forecaster, prepared, coverage=coverage, tolerance=tolerance)
        model_info = {"source": "registry", "model_id": metadata.model_id, "version": metadata.version,
                      "data_span": metadata.data_span.model_dump(mode="json") if metadata.data_span else None}
    else:
        prepared = prepare_training(frame, config, train_fraction=train_fraction, split=split)
        forecaster, weights, partner = train_served(prepared, model_config, scaling=options.scaling,
                                                    verbose=options.verbose)
        coverage, tolerance = model_config.interval_coverage, model_config.confidence_tolerance
        gbm = partner or fit_gbm(prepared, model_config.seed)  # the baseline, even where the LSTM is served alone
        model_info = {"source": "trained", "best_epoch": weights.best_epoch, "epochs_run": weights.epochs_run,
                      "refit_epochs": weights.refit_epochs,
                      "half_life_steps": weights.half_life_steps, "relative_power": weights.relative_power,
                      "stopped_early": bool(weights.history and weights.history.stopped_early),
                      "train_seconds": round(weights.duration_s, 1),
                      "epoch_seconds": round(weights.history.epoch_seconds, 1) if weights.history else None,
                      "seed": model_config.seed,
                      "hidden_size": model_config.hidden_size, "num_layers": model_config.num_layers,
                      "calendar": list(prepared.pipeline.calendar)}
    test = prepared.windows(Role.TEST)
    if len(test) == 0:
        raise NotEnoughData(NO_TEST_WINDOWS)
    forecasts = {"lightgbm": gbm.predict(test)}
    report = score(prepared, test, forecaster, forecasts, coverage, tolerance, plot=plot)
    report["model"] = model_info
    report["lightgbm"] = {"half_life_steps": gbm.spec.half_life_steps, "rounds": gbm.booster.current_iteration()}
    report["data"] = {"series": sorted({s.node_id for s in prepared.segments}), "train_fraction": train_fraction,
                      "split": split, "sequence_length": prepared.sequence_length}
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return report


def _own_interval_settings(forecaster: PowerForecaster, model_config: PowerPredictorConfig) -> tuple[float, float]:
    """The nominal coverage and confidence tolerance a registered model was calibrated with (the config's where it
    has no calibration): its intervals and confidence are scored against what they state."""
    coverage = forecaster.interval_coverage or model_config.interval_coverage
    tolerance = forecaster.confidence_tolerance
    return coverage, model_config.confidence_tolerance if tolerance is None else tolerance


def _until(span: DataSpan | None) -> str:
    return span.end.isoformat() if span is not None else "unknown"


def _check_compatible(forecaster: PowerForecaster, step_s: int, horizon_steps: int) -> None:
    if forecaster.pipeline.step_s != step_s:
        raise ValueError(f"--step: the model works at {forecaster.pipeline.step_s}s steps, not {step_s}s")
    if forecaster.horizon != horizon_steps:
        raise ValueError(f"--horizon: the model forecasts {forecaster.horizon} steps, not {horizon_steps}")


def score(prepared: PreparedData, test: Windows, forecaster: PowerForecaster, extra: dict[str, np.ndarray],
          coverage: float, tolerance: float, *, plot: str | None = None) -> dict[str, Any]:
    """Score the LSTM, the served forecast, the features-only mode and the baselines (`extra`, already forecast)
    on the test windows."""
    lstm = forecaster.forecast_lstm(test.inputs, test.last_power)
    origins = prepared.origin_times(test)
    experts = forecaster.experts(test.inputs, test.last_power)  # once, for the online blend and the static one
    static = served_forecast(forecaster, test, origins, experts=experts)  # its blend followed online, as served
    served = adapt_in_time(static, test.targets, test.mask, test.node_ids, origins, prepared.pipeline.step_s,
                           coverage=forecaster.interval_coverage,
                           tolerance=forecaster.confidence_tolerance)  # the model's own, as the service corrects
    calibrated = {"lstm": lstm, "served": served, "features_only": _features_only(prepared, test, forecaster)}
    forecasts: dict[str, np.ndarray] = {name: forecast.point for name, forecast in calibrated.items()}
    forecasts["last_value"] = last_value(test)
    train_series = [s.power[r != Role.TEST] for s, r in zip(prepared.segments, prepared.roles, strict=True)]
    period = seasonal_period([p for p in train_series if p.size], prepared.pipeline.step_s)
    mask = test.mask.copy()
    if period is not None:
        forecasts["seasonal_naive"] = seasonal_naive(test, prepared.segments, period)
        mask &= np.isfinite(forecasts["seasonal_naive"])
    forecasts.update(extra)
    metrics = {name: point_metrics(values, test.targets, mask) for name, values in forecasts.items()}
    for name, forecast in calibrated.items():
        metrics[name].update(interval_metrics(forecast.lower, forecast.upper, forecast.point, forecast.confidence,
                                              test.targets, mask, nominal=coverage, tolerance=tolerance))
    baselines = {k: v["mae"] for k, v in metrics.items() if k not in OWN}
    best = min(baselines, key=baselines.__getitem__)
    report: dict[str, Any] = {
        "horizon_steps": prepared.horizon,
        "step_seconds": prepared.pipeline.step_s,
        "test_points": _distinct_targets(test, mask),
        "forecasts_scored": int(mask.sum()),
        # forecasts no method is scored on: seasonal naive had no season before them to copy (a series' start)
        "forecasts_left_out": int(test.mask.sum() - mask.sum()),
        "seasonal_period_steps": period,
        "metrics": metrics,
        "best_baseline": best,
        "lstm_mae_vs_best_baseline": _relative(metrics["lstm"]["mae"], baselines[best]),
        "served_mae_vs_best_baseline": _relative(metrics["served"]["mae"], baselines[best]),
        "served": _served_facts(forecaster),
        "served_static_calibration": interval_metrics(static.lower, static.upper, static.point, static.confidence,
                                                      test.targets, mask, nominal=coverage, tolerance=tolerance),
        # the served point had the blend chosen on the calibration split served every window (no online blend)
        "served_static_blend": point_metrics(served_forecast(forecaster, test, experts=experts).point, test.targets,
                                             mask),
        "mae_by_lead": {name: mae_by_lead(values, test.targets, mask) for name, values in forecasts.items()},
        "per_series": _per_series(test, forecasts, mask),
    }
    if plot:
        _plot(Path(plot), prepared, test, served, forecasts, mask, forecaster.served_method)
    return report


def _relative(mae: float, best: float) -> float | None:
    """How much larger `mae` is than the best baseline's, as a fraction; None when that baseline is exact (a
    constant series), where no ratio exists."""
    return round(mae / best - 1.0, 4) if best > 0 else None


def _features_only(prepared: PreparedData, test: Windows, forecaster: PowerForecaster) -> CalibratedForecast:
    """The features-only forecast of the test windows: their power withheld, estimated from the features."""
    if forecaster.features_only is None:
        raise ValueError("the forecaster has no features-only mode")
    withheld, scale = withheld_windows(prepared, Role.TEST, forecaster.features_only.estimator, forecaster.pipeline,
                                       forecaster.sequence_length)
    if len(withheld) != len(test) or not np.array_equal(withheld.mask, test.mask):
        raise RuntimeError("the features-only windows are not the test windows")
    return forecaster.forecast_features_only(withheld.inputs, withheld.last_power, scale)


def _served_facts(forecaster: PowerForecaster) -> dict[str, Any]:
    if forecaster.served is None:
        return {"method": "lstm", "lstm_weight": None, "calibration_mae": None}
    blend = forecaster.served
    return {"method": blend.method, "lstm_weight": [round(w, 3) for w in blend.lstm_weight],
            "calibration_mae": blend.calibration_mae}


def _plot(path: Path, prepared: PreparedData, test: Windows, served: CalibratedForecast,
          forecasts: dict[str, np.ndarray], mask: np.ndarray, method: str) -> None:
    from training.power.plots import plot_backtest

    atomic_write_with(path, lambda tmp: plot_backtest(tmp, prepared, test, served, forecasts, mask, method))


def _distinct_targets(test: Windows, mask: np.ndarray) -> int:
    origins = test.segment_index[:, None] * 10**9 + test.origin_index[:, None] + np.arange(1, mask.shape[1] + 1)
    return int(np.unique(origins[mask]).size)


def _per_series(test: Windows, forecasts: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, dict[str, float]]:
    result = {}
    for node in sorted(set(test.node_ids)):
        rows = test.node_ids == node
        node_mask = mask & rows[:, None]
        if node_mask.any():
            result[node] = {name: round(float(np.abs(values - test.targets)[node_mask].mean()), 3)
                            for name, values in forecasts.items()}
    return result
