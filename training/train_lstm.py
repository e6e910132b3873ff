"""Train the power forecaster with Ray Train and register it.

    python -m training.train_lstm --data FILE.csv [--horizon 1h] [--step 1min] [--epochs N]
        [--holdout-fraction 0.1] [--model-id power_lstm] [--num-workers N] [--use-gpu]
        [--storage-path PATH|URI] [--resources-per-worker JSON] [--settings-from tune.json] [--state-path DIR]

The last `--holdout-fraction` of every series (with `--from-store`: of all nodes' steps, from one time on) is never
trained on: the registered model's metrics (MAE/RMSE/MAPE, interval coverage, confidence vs hit rate) are measured
there. When a model is already active, the new one is activated only if its MAE is no higher on that same holdout
(at the active one's step over its leads for a finer step or a longer horizon); one that answers less than the
active one (a coarser step, a shorter horizon) or cannot be compared fairly is registered but not activated
(`--force-activate` skips the comparison). Fewer epochs than `models.power_predictor.min_epochs`, or a horizon under
two steps unless `--no-activate`, are refused. Works locally and under `ray job submit`
(on several machines, `--storage-path` must be storage they all reach: training.power.checkpoint_storage).
`--settings-from` trains with the best settings of a `python -m training.tune` search (flags still win).
The run holds the model's retrain lock in the service's `--state-path`, as the API's retrain jobs and the retrain
scheduler do (training/cli_attempt.py): a model another retraining holds is refused, naming it.
Without `--sequence-length` or `--settings-from`, a run at a step and horizon `predictor.resolutions` serves
takes that resolution's input window (else `models.power_predictor.sequence_length`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from core.durations import format_duration
from core.registry import ModelRegistry
from core.settings import ConfigError, format_errors
from core.telemetry_csv import load_telemetry_csv
from training.cli import (
    add_keep_versions_flag,
    add_model_flags,
    add_state_path_flag,
    duration_arg,
    model_overrides,
    read_store,
    require_writable_folder,
    resolved_path,
    resources_arg,
    run_cli,
    state_path,
    store_since_s,
    store_span,
    train_scaling,
)
from training.cli_attempt import CliRun
from training.power.retrain import retrain_power
from training.power.retrain_spec import RetrainSpec
from training.power.tune_report import with_best_settings
from training.retrain_attempt import power_outcome
from training.retrain_data import TrainingData
from training.settings import load_training_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train_lstm", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="canonical telemetry CSV")
    source.add_argument("--from-store", action="store_true",
                        help="train on the telemetry store (the cluster's store actor, else INFLUX_HOST / embedded)")
    parser.add_argument("--since", type=duration_arg,
                        help="with --from-store: how much history to read (default: 14d, or 4 of the trained windows "
                             "(input window + horizon) where longer, 8 weeks at 1h)")
    parser.add_argument("--horizon", type=duration_arg, help="forecast horizon, e.g. 1h (default: config)")
    parser.add_argument("--holdout-fraction", type=float, default=0.1,
                        help="last share of every series (with --from-store: of all nodes' steps, from one time "
                             "on) kept for the model's metrics (default 0.1)")
    parser.add_argument("--model-id", default="power_lstm", help="registry id (default power_lstm)")
    parser.add_argument("--model-path", help="registry root (default: config model_path / $MODEL_PATH)")
    activation = parser.add_mutually_exclusive_group()
    activation.add_argument("--force-activate", action="store_true",
                            help="activate even if it does not beat the active one")
    activation.add_argument("--no-activate", action="store_true", help="register without activating")
    parser.add_argument("--storage-path", help="Ray Train checkpoints: a path every node mounts, or a URI such as "
                                               "s3://bucket/dir (default: config storage_path / $KCLOUD_STORAGE_PATH, "
                                               "else a local temporary folder, for one machine)")
    parser.add_argument("--resources-per-worker", type=resources_arg, default={},
                        help='custom Ray resources each worker reserves, as JSON, e.g. \'{"trainer": 1}\'')
    parser.add_argument("--settings-from", metavar="TUNE_JSON",
                        help="use the best settings of a search (python -m training.tune --output TUNE_JSON)")
    add_state_path_flag(parser)
    add_keep_versions_flag(parser)
    add_model_flags(parser)
    args = parser.parse_args(argv)
    store_span(parser, args)
    if not 0.0 < args.holdout_fraction < 0.5:
        parser.error(f"--holdout-fraction: {args.holdout_fraction} must lie between 0 and 0.5")
    return args


def build_spec(args: argparse.Namespace) -> RetrainSpec:
    """The run the flags ask for (the config file is read here; its overrides apply when the run starts)."""
    activation = "never" if args.no_activate else "force" if args.force_activate else "if_better"
    try:
        config = load_training_config(args.config).with_storage_path(args.storage_path)
        if args.settings_from:
            config = with_best_settings(config, args.settings_from, step_s=args.step)
        overrides = model_overrides(args, horizon_s=args.horizon)
        if not args.settings_from:  # a search's best settings include its input window
            overrides = overrides.with_served_window(config)
        return RetrainSpec(config=config, overrides=overrides,
                           model_id=args.model_id, holdout_fraction=args.holdout_fraction, activation=activation,
                           scaling=train_scaling(args), skip_short=args.from_store,
                           split="time" if args.from_store else "series", verbose=not args.quiet)
    except ValidationError as exc:
        raise ConfigError(format_errors("command line", exc)) from None


def shape_note(spec: RetrainSpec) -> str | None:
    """A note when this run trains another shape than the one `predictor.resolutions` serves its model id at (the
    flags and the config's `predictor` set what is trained; the service routes by what each version was trained
    for)."""
    served = spec.config.predictor.resolution(spec.model_id)
    if served is None:
        return None
    config = spec.effective_config()
    trained = config.predictor.step, config.predictor.prediction_horizon, config.models.power_predictor.sequence_length
    serving = served.step, served.horizon, served.sequence_length
    if trained == serving:
        return None

    def shape(step: int, horizon: int, window: int) -> str:
        return f"{format_duration(step)} steps up to {format_duration(horizon)} from {window} steps"

    return (f"note: predictor.resolutions serves {spec.model_id} at {shape(*serving)}; this run trains "
            f"{shape(*trained)} (--step, --horizon and --sequence-length set it)")


def _csv(path: str) -> Callable[[int], pd.DataFrame]:
    return lambda _step_s: load_telemetry_csv(path)


def _store(since_s: int, verbose: bool) -> Callable[[int], pd.DataFrame]:
    return lambda step_s: read_store(since_s, step_s, verbose=verbose)


def training_data(args: argparse.Namespace, spec: RetrainSpec) -> TrainingData:
    """What the run trains on, as its record names it (a file by its name only)."""
    if args.from_store:
        return TrainingData(source="store", since_s=store_since_s(args, spec.effective_config()))
    return TrainingData(source="csv", path=str(resolved_path(args.data)), label=Path(args.data).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        spec = build_spec(args)
        spec.effective_config()  # what the run would refuse, refused before the model's retrain lock is taken
        if note := shape_note(spec):
            sys.stderr.write(f"train_lstm: {note}\n")
        data = training_data(args, spec)
        source = _store(data.since_s, verbose=not args.quiet) if args.from_store else _csv(args.data)
        registry = ModelRegistry(args.model_path or spec.config.model_path)
        require_writable_folder("--model-path" if args.model_path else "model_path", str(registry.root))
        require_writable_folder("--storage-path" if args.storage_path else "storage_path", spec.config.storage_path)
        run = CliRun("train_lstm", spec.model_id, data, state_path(args, "train_lstm"), registry,
                     args.keep_versions)
        result = run.run(lambda held: retrain_power(source, spec, registry=held),
                         lambda done: power_outcome(done, registry))
        for line in result.summary_lines():
            sys.stderr.write(f"train_lstm: {line}\n")
        return 0

    return run_cli("train_lstm", body)


if __name__ == "__main__":
    raise SystemExit(main())
