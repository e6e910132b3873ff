"""In-process latency of one forecast (one window, sequence 168, hidden 128) on one CPU core.

    python bench/bench_inference.py [--sequence-length 168] [--hidden-size 128] [--horizon 60] [--runs 500]

Measures PowerForecaster.forecast end to end (LSTM forward + calibration), and the whole request path a Serve
replica runs for history lists (training.power.inference.forecast_histories: the input window built from the
lists, the forecast, the answer's values) for one history and for a batch of 16, and what a replica adds before
its first stored-window answer for a node: the online calibration warmed on WARM_ORIGINS past windows (forecast
in batches of 16, then learned from; deployments/node_calibration.py), the store read left out. Then the same
request path for a node's window of a model that blends online (a served blend with its LightGBM partner, which
then runs for every node window, whatever the mix, so the blend can learn from both: `follow_blend`). Target: p50
of one forecast under 5 ms. The LSTM's weights are untrained (latency does not depend on their values); the
LightGBM is fitted as training fits it, on a generated series, and its tree count is printed, since its latency
follows it.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.forecasts import PowerHistory  # noqa: E402
from deployments.node_calibration import WARM_ORIGINS, NodeCalibrations  # noqa: E402
from training.power.blend import ServedBlend  # noqa: E402
from training.power.calibration import Calibration  # noqa: E402
from training.power.features import FeaturePipeline, Segment  # noqa: E402
from training.power.fit import build_model  # noqa: E402
from training.power.forecaster import Architecture, PowerForecaster  # noqa: E402
from training.power.gbm import DirectLightGBM  # noqa: E402
from training.power.inference import forecast_histories  # noqa: E402
from training.power.stored_history import StoredHistory  # noqa: E402
from training.power.windows import Role, build_windows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequence-length", type=int, default=168)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--horizon", type=int, default=60)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    features = ("cpu_utilization", "memory_usage", "gpu_utilization", "npu_utilization", "temperature",
                "workload_type")
    pipeline = FeaturePipeline(features=features, step_s=60, power_mean=2000.0, power_std=800.0,
                               numeric_mean=dict.fromkeys(features[:5], 50.0),
                               numeric_std=dict.fromkeys(features[:5], 20.0),
                               workload_vocab=("batch", "idle", "inference", "training"))
    n_features = len(pipeline.feature_names)
    architecture = Architecture(n_features=n_features, sequence_length=args.sequence_length, horizon=args.horizon,
                                hidden_size=args.hidden_size, num_layers=2, dropout=0.1)
    model = build_model(n_features, args.horizon, args.hidden_size, 2, 0.1)
    calibration = Calibration(coverage=0.8, tolerance=0.1, margins_watts=tuple([20.0] * args.horizon),
                              raw_knots=(0.0, 1.0), rate_knots=(0.0, 1.0), calibration_points=1000,
                              calibration_coverage=0.8)
    forecaster = PowerForecaster(model.state_dict(), architecture, pipeline, calibration)
    rng = np.random.default_rng(0)
    window = rng.normal(size=(1, args.sequence_length, n_features)).astype(np.float32)
    last = np.array([2100.0])
    p50, p90, p99 = _percentiles(args.runs, forecaster.forecast, window, last)
    sys.stdout.write(
        f"inference, 1 window (sequence {args.sequence_length}, hidden {args.hidden_size}, horizon {args.horizon}, "
        f"{n_features} features), 1 thread, {args.runs} runs: p50 {p50:.2f} ms  p90 {p90:.2f} ms  p99 {p99:.2f} ms "
        f"(target p50 < 5 ms: {'met' if p50 < 5 else 'NOT met'})\n")
    history = PowerHistory(power_watts=tuple(rng.uniform(1500, 2500, args.sequence_length).tolist()),
                           numeric={name: (50.0,) * args.sequence_length for name in features[:5]},
                           workload_type="training", horizon_s=args.horizon * 60)
    for batch in (1, 16):
        p50, p90, p99 = _percentiles(args.runs, forecast_histories, forecaster, [history] * batch, "bench")
        sys.stdout.write(f"request path (forecast_histories), {batch} {'history' if batch == 1 else 'histories'}: "
                         f"p50 {p50:.2f} ms  p90 {p90:.2f} ms  p99 {p99:.2f} ms ({p50 / batch:.2f} ms per history)\n")
    windows = _past_windows(history, WARM_ORIGINS)
    runs = max(args.runs // 50, 5)
    p50, p90, slowest = _percentiles(runs, _warm, forecaster, windows, top=100.0)
    sys.stdout.write(f"online calibration warmed for one node ({WARM_ORIGINS} past windows), {runs} runs: "
                     f"p50 {p50:.1f} ms  p90 {p90:.1f} ms  max {slowest:.1f} ms\n")
    forecaster.gbm = _fitted_gbm(pipeline, args.sequence_length, args.horizon)
    forecaster.served = ServedBlend(method="combined", lstm_weight=(0.5,) * args.horizon, calibration=calibration,
                                    calibration_mae={})
    trees = forecaster.gbm.booster.num_trees()
    for batch in (1, 16):
        p50, p90, p99 = _percentiles(args.runs, partial(forecast_histories, follow_blend=True), forecaster,
                                     [history] * batch, "bench")
        sys.stdout.write(f"request path of a model that blends online (LSTM + LightGBM of {trees} trees), {batch} "
                         f"{'node window' if batch == 1 else 'node windows'}: p50 {p50:.2f} ms  p90 {p90:.2f} ms  "
                         f"p99 {p99:.2f} ms ({p50 / batch:.2f} ms per window)\n")


def _fitted_gbm(pipeline: FeaturePipeline, sequence_length: int, horizon: int) -> DirectLightGBM:
    """The served LightGBM partner, fitted as training fits it (600 rounds at most, early-stopped) on a generated
    series: a daily-like cycle with bursts and noise, its features following it."""
    rng = np.random.default_rng(1)
    steps = np.arange(6000)
    power = 2000 + 500 * np.sin(2 * np.pi * steps / 1440) + 300 * (rng.random(steps.size) < 0.05).cumsum() % 2
    power = power + rng.normal(0, 40, steps.size)
    numeric = {name: np.clip(50 + (power - 2000) / 20 + rng.normal(0, 5, steps.size), 0, 100)
               for name in pipeline.features[:5]}
    segment = Segment(node_id="n1", start=pd.Timestamp("2026-11-01", tz="UTC"), step_s=60, power=power,
                      numeric=numeric, workload=np.full(steps.size, "training", dtype=object),
                      imputed=np.zeros(steps.size, bool))
    roles = np.where(steps < 4800, Role.FIT, Role.CALIB).astype(np.int8)
    fit, calib = (build_windows([segment], [roles], pipeline, role=role, sequence_length=sequence_length,
                                horizon=horizon) for role in (Role.FIT, Role.CALIB))
    return DirectLightGBM(seed=0).fit(fit, calib, pipeline.power_std, pipeline)


def _past_windows(history: PowerHistory, count: int) -> list[StoredHistory]:
    """`count` stored windows of `history`'s values ending at consecutive minutes, oldest first."""
    end = datetime(2026, 12, 1, tzinfo=UTC)
    measured = (True,) * len(history.power_watts)
    return [StoredHistory(history.model_copy(update={"end_time": end + timedelta(minutes=k), "step_s": 60}), 60.0,
                          end + timedelta(minutes=k), measured) for k in range(count)]


def _warm(forecaster: PowerForecaster, windows: list[StoredHistory]) -> None:
    """What PowerPredictor._warm_calibrations does in process: forecasts in batches of 16, then learned from."""
    forecasts = []
    for start in range(0, len(windows), 16):
        forecasts += forecast_histories(forecaster, [w.history for w in windows[start:start + 16]], "bench/1")
    NodeCalibrations().warm("n1", windows, forecasts, forecaster.horizon)


def _percentiles(runs: int, call, *args, top: float = 99.0) -> tuple[float, float, float]:
    """p50, p90 and the `top` percentile (p99; 100: the slowest) in ms of `runs` calls of `call(*args)` after 20
    warm-up calls."""
    for _ in range(20):
        call(*args)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        call(*args)
        timings.append((time.perf_counter() - started) * 1000.0)
    p50, p90, high = np.percentile(timings, [50, 90, top])
    return float(p50), float(p90), float(high)


if __name__ == "__main__":
    main()
