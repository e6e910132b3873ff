"""Search the power forecaster's settings with Ray Tune (ASHA early stopping) and write tune.json.

    python -m training.tune --data FILE.csv | --from-store [--since 14d] [--trials 8] [--time-budget 30m]
        [--num-workers K] [--storage-path PATH|URI] --output tune.json

Every trial trains with `train_lstm`'s Ray Train loop on the same split (the last `--holdout-fraction` of every
series is never trained on; from the store, of all nodes' steps from one time on) and, when it runs to its end, is
scored on that holdout; the first trial runs the configured settings, the baseline. `train_lstm --settings-from
tune.json` trains with the best settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from core.atomic_files import atomic_write_with
from core.telemetry_csv import load_telemetry_csv
from training.cli import (
    add_model_flags,
    duration_arg,
    model_overrides,
    output_path,
    positive_int,
    read_store,
    refuse_overwriting_inputs,
    require_writable_folder,
    resources_arg,
    run_cli,
    store_since_s,
    store_span,
    train_scaling,
)
from training.power.tune_search import SearchPlan, run_search, sequence_lengths
from training.settings import TrainingConfig, load_training_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.tune", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="canonical telemetry CSV")
    source.add_argument("--from-store", action="store_true",
                        help="search on the telemetry store (the cluster's store actor, else INFLUX_HOST / embedded)")
    parser.add_argument("--since", type=duration_arg,
                        help="with --from-store: how much history to read (default: 14d, or 4 of the trained windows "
                             "(input window + horizon) where longer, 8 weeks at 1h)")
    parser.add_argument("--output", required=True, type=output_path, help="where to write the report (tune.json)")
    parser.add_argument("--trials", type=positive_int, default=8,
                        help="trials, the configured settings' included (default 8)")
    parser.add_argument("--time-budget", type=duration_arg,
                        help="stop the search after this long, e.g. 30m (default: no limit)")
    parser.add_argument("--horizon", type=duration_arg, help="forecast horizon, e.g. 1h (default: config)")
    parser.add_argument("--holdout-fraction", type=float, default=0.1,
                        help="last share of every series the trials never train on (default 0.1)")
    parser.add_argument("--storage-path", help="Ray Tune/Train checkpoints: a path every node mounts, or a URI "
                                               "(default: config storage_path / $KCLOUD_STORAGE_PATH, else local)")
    parser.add_argument("--resources-per-worker", type=resources_arg, default={},
                        help='custom Ray resources each worker reserves, as JSON, e.g. \'{"trainer": 1}\'')
    add_model_flags(parser, cpus_per_worker_default="1 per trial's worker")
    args = parser.parse_args(argv)
    refuse_overwriting_inputs(parser, args)
    store_span(parser, args)
    if not 0.0 < args.holdout_fraction < 0.5:
        parser.error(f"--holdout-fraction: {args.holdout_fraction} must lie between 0 and 0.5")
    return args


def base_config(args: argparse.Namespace) -> TrainingConfig:
    """The config file with the flags applied: its power_predictor values are the search's baseline."""
    config = load_training_config(args.config)
    config = model_overrides(args, horizon_s=args.horizon).with_served_window(config).apply(config)
    return config.with_storage_path(args.storage_path)


def read_frame(args: argparse.Namespace, config: TrainingConfig) -> pd.DataFrame:
    if not args.from_store:
        return load_telemetry_csv(args.data)
    longest = max(sequence_lengths(config.models.power_predictor))  # the longest window a trial may read
    return read_store(store_since_s(args, config, longest), config.predictor.step, verbose=not args.quiet)


def search_plan(args: argparse.Namespace) -> SearchPlan:
    """The search the flags ask for; from the store, split as `train_lstm --from-store` splits it."""
    return SearchPlan(trials=args.trials, time_budget_s=args.time_budget, holdout_fraction=args.holdout_fraction,
                      scaling=train_scaling(args, cpus_per_worker_default=1.0), skip_short=args.from_store,
                      split="time" if args.from_store else "series", verbose=not args.quiet)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        config = base_config(args)
        require_writable_folder("--storage-path" if args.storage_path else "storage_path", config.storage_path)
        plan = search_plan(args)
        source = "telemetry store" if args.from_store else args.data
        report = run_search(read_frame(args, config), config, plan, source=source)
        atomic_write_with(Path(args.output), lambda path: path.write_text(report.model_dump_json(indent=2) + "\n"))
        for line in report.summary_lines():
            sys.stderr.write(f"tune: {line}\n")
        sys.stderr.write(f"tune: wrote {args.output}\n")
        return 0 if report.best_config is not None else 1

    return run_cli("tune", body)


if __name__ == "__main__":
    raise SystemExit(main())
