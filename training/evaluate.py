"""Backtest: train on the first part of every series, forecast the rest from rolling origins.

    python -m training.evaluate --data FILE.csv --step 10min --horizon 1h [--sequence-length N]
        [--train-fraction 0.8] [--epochs N] --output report.json [--plot report.png]
    python -m training.evaluate --data FILE.csv --step 10min --horizon 1h --model ID --output report.json
    python -m training.evaluate --suite SUITE.yaml [--data-root DIR] --output suite.json

The first form backtests one trace (training.backtest; `metrics.features_only` scores the same points with the
power history withheld and estimated from the other features); the second runs every case of a suite file
(training.suite), prints a table and writes per-case results with an aggregate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.atomic_files import atomic_write_with
from core.telemetry_csv import load_telemetry_csv
from training.backtest import TrainOptions, backtest
from training.cli import (
    add_model_flags,
    duration_arg,
    fraction_arg,
    given,
    load_with_overrides,
    model_overrides,
    output_path,
    plot_path,
    refuse_overwriting_inputs,
    run_cli,
)
from training.power.windows import SPLITS
from training.settings import TrainingConfig, load_training_config
from training.suite import run_suite
from training.suite_config import load_suite
from training.suite_report import table

DEFAULT_TRAIN_FRACTION = 0.8


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="canonical telemetry CSV")
    source.add_argument("--suite", help="suite YAML: many traces, steps, horizons and seeds (see training.suite)")
    parser.add_argument("--data-root", help="with --suite: folder the cases' trace paths are relative to")
    parser.add_argument("--horizon", type=duration_arg, help="forecast horizon, e.g. 1h (default: config)")
    parser.add_argument("--train-fraction", type=fraction_arg,
                        help=f"share of every series (--split time: of all steps) that trains (default "
                             f"{DEFAULT_TRAIN_FRACTION}; a suite's own)")
    parser.add_argument("--split", choices=SPLITS,
                        help="series (default): the last share of every series tests; time: one cut in time for all "
                             "series, so no series recorded later trains the forecast of an earlier one")
    parser.add_argument("--output", required=True, type=output_path, help="report JSON path")
    parser.add_argument("--plot", type=plot_path, help="PNG of actual vs forecast with the interval")
    parser.add_argument("--model", help="evaluate a registered model (id or id/version) instead of training")
    parser.add_argument("--model-path", help="model registry root (default: config model_path / $MODEL_PATH)")
    add_model_flags(parser, suite=True)
    args = parser.parse_args(argv)
    refuse_overwriting_inputs(parser, args)
    if args.suite:
        clashing = given(args, ["--horizon", "--plot", "--model", "--train-fraction", "--split", "--step", "--seed",
                                "--model-path"])
        if clashing:
            parser.error(f"{', '.join(clashing)}: not with --suite (the suite file sets them per case)")
    elif args.data_root:
        parser.error("--data-root: only with --suite")
    if args.model:  # a registered model is loaded, not trained: its own window, size and training stand
        trains = [*given(args, ["--sequence-length", "--epochs", "--hidden-size", "--cpus-per-worker"]),
                  *(["--num-workers"] if args.num_workers != 1 else []), *(["--use-gpu"] if args.use_gpu else [])]
        if trains:
            parser.error(f"{', '.join(trains)}: not with --model (the registered model is evaluated as trained)")
    elif args.model_path:
        parser.error("--model-path: only with --model (the registry it is loaded from)")
    return args


def backtest_config(args: argparse.Namespace) -> TrainingConfig:
    """The config file with the flags applied; a forecaster it trains takes the input window that
    `predictor.resolutions` serves its step and horizon with where `--sequence-length` is not given, as train_lstm's
    does (the default 1 min / 1 h: 60 steps, not `models.power_predictor`'s 168)."""
    config = load_training_config(args.config)
    overrides = model_overrides(args, horizon_s=args.horizon)
    if not args.model:  # a registered model keeps its own window
        overrides = overrides.with_served_window(config)
    return overrides.apply(config)


def run_backtest(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or load) the forecaster and the baselines on `--data`, score them all; returns the report."""
    config = backtest_config(args)
    frame = load_telemetry_csv(args.data)
    train_fraction = args.train_fraction or DEFAULT_TRAIN_FRACTION
    report = backtest(frame, config, train_fraction=train_fraction, options=TrainOptions.from_flags(args),
                      model=args.model, model_path=args.model_path, plot=args.plot, split=args.split or "series")
    report["data"] = {"file": str(args.data), **report["data"]}
    return report


def _single(args: argparse.Namespace) -> int:
    report = run_backtest(args)
    text = json.dumps(report, indent=2)
    atomic_write_with(Path(args.output), lambda tmp: tmp.write_text(text))
    summary = ", ".join(f"{k} {v['mae']:.2f}" for k, v in report["metrics"].items())
    served, alone = report["metrics"]["served"], report["metrics"]["features_only"]
    sys.stderr.write(f"evaluate: MAE (W) at 1..{report['horizon_steps']} steps: {summary}; "
                     f"served as {report['served']['method']}: {served['nominal_coverage']:.0%} interval covers "
                     f"{served['coverage']:.1%}; mean confidence {served['mean_confidence']:.3f} vs hit rate "
                     f"{served['hit_rate']:.3f}; features only (power withheld): interval covers "
                     f"{alone['coverage']:.1%}; report in {args.output}\n")
    return 0


def _suite(args: argparse.Namespace) -> int:
    suite_file = Path(args.suite)
    suite = load_suite(suite_file)
    base = load_with_overrides(args)

    def write(result: dict[str, Any]) -> None:
        text = json.dumps(result, indent=2)
        atomic_write_with(Path(args.output), lambda tmp: tmp.write_text(text))

    result = run_suite(suite, suite_file, base=base, data_root=args.data_root, options=TrainOptions.from_flags(args),
                       log=lambda line: sys.stderr.write(line + "\n"), progress=write)
    write(result)
    sys.stdout.write(table(result["cases"], result["aggregate"]) + "\n")
    sys.stderr.write(f"evaluate: {len(result['cases'])} suite cases; results in {args.output}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli("evaluate", lambda: _suite(args) if args.suite else _single(args))


if __name__ == "__main__":
    raise SystemExit(main())
