"""Backtest: train on the first part of every series, forecast the rest from rolling origins.

    python -m training.evaluate --data FILE.csv --step 10min --horizon 1h [--sequence-length N]
        [--train-fraction 0.8] [--epochs N] --output report.json [--plot report.png] [--model ID]

Test points are the observed (not imputed) steps of the last part of every series. Every one is forecast
at every lead 1..H from the origin H steps (..1 step) before it, by the LSTM and by each baseline, so
all methods are scored on exactly the same (origin, lead) pairs; inputs may reach back into the training
part (that is history), targets never do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.registry import ModelRegistry
from core.telemetry_csv import load_telemetry_csv
from training.cli import add_model_flags, duration_arg, fraction_arg, load_with_overrides, run_cli, write_atomically
from training.metrics import interval_metrics, mae_by_lead, point_metrics
from training.power.baselines import DirectLightGBM, last_value, seasonal_naive, seasonal_period
from training.power.dataset import PreparedData, prepare, train_forecaster
from training.power.forecaster import PowerForecaster
from training.power.windows import Role


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="canonical telemetry CSV")
    parser.add_argument("--horizon", type=duration_arg, help="forecast horizon, e.g. 1h (default: config)")
    parser.add_argument("--train-fraction", type=fraction_arg, default=0.8, help="share of every series that trains")
    parser.add_argument("--output", required=True, help="report JSON path")
    parser.add_argument("--plot", help="PNG of actual vs forecast with the interval")
    parser.add_argument("--model", help="evaluate a registered model (id or id/version) instead of training")
    parser.add_argument("--model-path", help="model registry root (default: config model_path / $MODEL_PATH)")
    add_model_flags(parser)
    return parser.parse_args(argv)


def run_backtest(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or load) the forecaster and the baselines, score them all; returns the report."""
    started = time.monotonic()
    config = load_with_overrides(args, horizon_s=args.horizon)
    predictor = config.predictor
    model_config = config.models.power_predictor
    frame = load_telemetry_csv(args.data)
    model_info: dict[str, Any]
    if args.model:
        registry = ModelRegistry(args.model_path or config.model_path)
        folder, metadata = registry.resolve(args.model)
        forecaster = PowerForecaster.load(folder)
        _check_compatible(forecaster, predictor.step, predictor.horizon_steps)
        prepared = prepare(frame, step_s=predictor.step, max_gap_s=predictor.max_gap,
                           features=forecaster.pipeline.features, sequence_length=forecaster.sequence_length,
                           horizon=forecaster.horizon, train_fraction=args.train_fraction)
        prepared = PreparedData(prepared.segments, prepared.roles, forecaster.pipeline,
                                forecaster.sequence_length, forecaster.horizon)
        model_info = {"source": "registry", "model_id": metadata.model_id, "version": metadata.version}
    else:
        prepared = prepare(frame, step_s=predictor.step, max_gap_s=predictor.max_gap, features=config.features,
                           sequence_length=model_config.sequence_length, horizon=predictor.horizon_steps,
                           train_fraction=args.train_fraction)
        forecaster, weights = train_forecaster(prepared, model_config, num_workers=args.num_workers,
                                               use_gpu=args.use_gpu, cpus_per_worker=args.cpus_per_worker,
                                               verbose=not args.quiet)
        model_info = {"source": "trained", "best_epoch": weights.best_epoch, "epochs_run": weights.epochs_run,
                      "train_seconds": round(weights.duration_s, 1), "seed": model_config.seed,
                      "hidden_size": model_config.hidden_size, "num_layers": model_config.num_layers}
    report = score(prepared, forecaster, model_config.interval_coverage, model_config.confidence_tolerance,
                   seed=model_config.seed, plot=args.plot)
    report["model"] = model_info
    report["data"] = {"file": str(args.data), "series": sorted({s.node_id for s in prepared.segments}),
                      "train_fraction": args.train_fraction, "sequence_length": prepared.sequence_length}
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return report


def _check_compatible(forecaster: PowerForecaster, step_s: int, horizon_steps: int) -> None:
    if forecaster.pipeline.step_s != step_s:
        raise ValueError(f"--step: the model works at {forecaster.pipeline.step_s}s steps, not {step_s}s")
    if forecaster.horizon != horizon_steps:
        raise ValueError(f"--horizon: the model forecasts {forecaster.horizon} steps, not {horizon_steps}")


def score(prepared: PreparedData, forecaster: PowerForecaster, coverage: float, tolerance: float, *,
          seed: int, plot: str | None) -> dict[str, Any]:
    test = prepared.windows(Role.TEST)
    if len(test) == 0:
        raise ValueError("no test windows: the series are too short for the sequence length and train fraction")
    forecasts: dict[str, np.ndarray] = {}
    lstm = forecaster.forecast(test.inputs, test.last_power)
    forecasts["lstm"] = lstm.point
    forecasts["last_value"] = last_value(test)
    train_series = [s.power[r != Role.TEST] for s, r in zip(prepared.segments, prepared.roles, strict=True)]
    period = seasonal_period([p for p in train_series if p.size], prepared.pipeline.step_s)
    mask = test.mask.copy()
    if period is not None:
        forecasts["seasonal_naive"] = seasonal_naive(test, prepared.segments, period)
        mask &= np.isfinite(forecasts["seasonal_naive"])
    gbm = DirectLightGBM(seed=seed).fit(prepared.windows(Role.FIT), prepared.windows(Role.CALIB),
                                        prepared.pipeline.power_std)
    forecasts["lightgbm"] = gbm.predict(test)
    metrics = {name: point_metrics(values, test.targets, mask) for name, values in forecasts.items()}
    metrics["lstm"].update(interval_metrics(lstm.lower, lstm.upper, lstm.point, lstm.confidence, test.targets,
                                            mask, nominal=coverage, tolerance=tolerance))
    baselines = {k: v["mae"] for k, v in metrics.items() if k != "lstm"}
    best = min(baselines, key=baselines.__getitem__)
    report: dict[str, Any] = {
        "horizon_steps": prepared.horizon,
        "step_seconds": prepared.pipeline.step_s,
        "test_points": _distinct_targets(test, mask),
        "forecasts_scored": int(mask.sum()),
        "seasonal_period_steps": period,
        "metrics": metrics,
        "best_baseline": best,
        "lstm_mae_vs_best_baseline": round(metrics["lstm"]["mae"] / baselines[best] - 1.0, 4),
        "mae_by_lead": {name: mae_by_lead(values, test.targets, mask) for name, values in forecasts.items()},
        "per_series": _per_series(test, forecasts, mask),
    }
    if plot:
        from training.power.plots import plot_backtest

        write_atomically(Path(plot), lambda tmp: plot_backtest(tmp, prepared, test, lstm, forecasts, mask))
    return report


def _distinct_targets(test, mask: np.ndarray) -> int:
    origins = test.segment_index[:, None] * 10**9 + test.origin_index[:, None] + np.arange(1, mask.shape[1] + 1)
    return int(np.unique(origins[mask]).size)


def _per_series(test, forecasts: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, dict[str, float]]:
    result = {}
    for node in sorted(set(test.node_ids)):
        rows = test.node_ids == node
        node_mask = mask & rows[:, None]
        if node_mask.any():
            result[node] = {name: round(float(np.abs(values - test.targets)[node_mask].mean()), 3)
                            for name, values in forecasts.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        report = run_backtest(args)
        text = json.dumps(report, indent=2)
        write_atomically(Path(args.output), lambda tmp: tmp.write_text(text))
        summary = ", ".join(f"{k} {v['mae']:.2f}" for k, v in report["metrics"].items())
        lstm = report["metrics"]["lstm"]
        sys.stderr.write(f"evaluate: MAE (W) at 1..{report['horizon_steps']} steps: {summary}; "
                         f"{lstm['nominal_coverage']:.0%} interval covers {lstm['coverage']:.1%}; "
                         f"mean confidence {lstm['mean_confidence']:.3f} vs hit rate {lstm['hit_rate']:.3f}; "
                         f"report in {args.output}\n")
        return 0

    return run_cli("evaluate", body)


if __name__ == "__main__":
    raise SystemExit(main())
