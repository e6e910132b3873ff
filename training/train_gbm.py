"""Train the job cost model (LightGBM) and register it.

    python -m training.train_gbm [--data jobs.csv] [--records 20000] [--seed 0] [--model-id cost_gbm]
        [--model-path DIR] [--config FILE] [--catalog FILE] [--force-activate | --no-activate] [--state-path DIR]

`--data` is a CSV of past jobs with the columns of `training.cost.catalog.RECORD_COLUMNS` (gpu_type and
workload_type may be blank). Without it the model is trained on `--records` jobs generated from the
price catalog: fine for demos, never for quoting accuracy. 15 % of the records is held out, chosen by a hash of each
record's values (the same jobs in every run, whatever `--seed`: training.cost.retrain); the new
version is registered with its metrics there (MAE, MAPE, interval coverage, confidence vs hit rate) and
activated only if its MAE on those records is no worse than the active version's (`training.cost.retrain`, the
rule `POST /api/v1/models/retrain` applies too; `--force-activate` skips the comparison). The run holds the model's
retrain lock in the service's `--state-path`, as the API's retrain jobs do (training/cli_attempt.py): a model another
retraining holds is refused, naming it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.registry import ModelRegistry
from core.settings import CONFIG_FLAG_HELP
from training.cli import (
    add_keep_versions_flag,
    add_state_path_flag,
    model_id_arg,
    positive_int,
    require_writable_folder,
    run_cli,
    seed_arg,
    state_path,
)
from training.cli_attempt import CliRun
from training.cost.catalog import load_catalog
from training.cost.retrain import CostRetrainSpec, retrain_cost
from training.retrain_attempt import cost_outcome
from training.retrain_data import GENERATED_JOBS, MAX_GENERATED_JOBS, JobRecordsData
from training.settings import load_training_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train_gbm", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="CSV of past jobs (default: generate them from the price catalog)")
    parser.add_argument("--records", type=generated_jobs,
                        help=f"generated jobs when --data is not given (default {GENERATED_JOBS}, at most "
                             f"{MAX_GENERATED_JOBS:,})")
    parser.add_argument("--seed", type=seed_arg, default=0,
                        help="random seed for the trees, their calibration split and the generated jobs (the holdout "
                             "is chosen by a hash of each record, whatever the seed)")
    parser.add_argument("--model-id", type=model_id_arg, default="cost_gbm", help="registry id (default cost_gbm)")
    parser.add_argument("--model-path", help="registry root (default: config model_path / $MODEL_PATH)")
    parser.add_argument("--config", help=CONFIG_FLAG_HELP)
    parser.add_argument("--catalog", help="price catalog YAML (default configs/prices.yaml)")
    activation = parser.add_mutually_exclusive_group()
    activation.add_argument("--force-activate", action="store_true",
                            help="activate even if it does not beat the active one")
    activation.add_argument("--no-activate", action="store_true", help="register without activating")
    add_state_path_flag(parser)
    add_keep_versions_flag(parser)
    args = parser.parse_args(argv)
    if args.data is not None and args.records is not None:
        parser.error("--records: only without --data (it counts the jobs generated when no records are given)")
    args.records = args.records or GENERATED_JOBS
    return args


def generated_jobs(text: str) -> int:
    """argparse type for --records: 1 to MAX_GENERATED_JOBS."""
    count = positive_int(text)
    if count > MAX_GENERATED_JOBS:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_GENERATED_JOBS:,} generated jobs")
    return count


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        config = load_training_config(args.config)
        catalog = load_catalog(args.catalog)
        if args.data is None:
            data = JobRecordsData(source="catalog", count=args.records, seed=args.seed)
            sys.stderr.write(f"train_gbm: no job records given: training on {args.records} records generated "
                             f"from the price catalog {args.catalog or 'configs/prices.yaml'}\n")
        else:
            data = JobRecordsData(source="csv", path=args.data, label=args.data)
        activation = "never" if args.no_activate else "force" if args.force_activate else "if_better"
        spec = CostRetrainSpec(config=config, model_id=args.model_id, catalog=catalog, seed=args.seed,
                               activation=activation, synthetic=data.synthetic, data=data.describe())
        records = data.records(catalog)  # refused before anything is written
        registry = ModelRegistry(args.model_path or config.model_path)
        require_writable_folder("--model-path" if args.model_path else "model_path", str(registry.root))
        recorded = data if args.data is None else data.model_copy(update={"label": Path(args.data).name})
        run = CliRun("train_gbm", args.model_id, recorded, state_path(args, "train_gbm"), registry,
                     args.keep_versions)
        result = run.run(lambda held: retrain_cost(records, spec, registry=held), cost_outcome)
        for line in result.summary_lines():
            sys.stderr.write(f"train_gbm: {line}\n")
        return 0

    return run_cli("train_gbm", body)


if __name__ == "__main__":
    raise SystemExit(main())
