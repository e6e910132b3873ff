"""Train the job cost model (LightGBM) and register it.

    python -m training.train_gbm [--data jobs.csv] [--records 20000] [--seed 0] [--model-id cost_gbm]
        [--model-path DIR] [--config FILE] [--catalog FILE]

`--data` is a CSV of past jobs with the columns of `training.cost.catalog.RECORD_COLUMNS` (gpu_type and
workload_type may be blank). Without it the model is trained on `--records` jobs generated from the
price catalog: fine for demos, never for quoting accuracy. The new version is registered with its
held-out metrics (MAE, MAPE, interval coverage, confidence vs hit rate) and activated.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from core.registry import ModelRegistry
from core.settings import CONFIG_FLAG_HELP
from training.cli import model_id_arg, positive_int, run_cli, seed_arg
from training.cost.catalog import RECORD_COLUMNS, PriceCatalog, generate_job_records, load_catalog
from training.cost.model import CostModel
from training.cost.publish import publish_cost_model
from training.cost.schema import COMPONENTS, MAX_GPUS, MAX_HOURS
from training.settings import load_training_config

# column: (lowest allowed, whether the lowest is excluded, highest allowed, what a valid value is)
_NUMBERS: dict[str, tuple[float, bool, float, str]] = {
    "cpu_cores": (0.0, True, np.inf, "a positive number"),
    "memory_gb": (0.0, True, np.inf, "a positive number"),
    "gpu_count": (0.0, False, MAX_GPUS, f"a whole number 0..{MAX_GPUS}"),
    "storage_gb": (0.0, False, np.inf, "a non-negative number"),
    "network_gb": (0.0, False, np.inf, "a non-negative number"),
    "duration_hours": (0.0, True, MAX_HOURS, f"a positive number up to {MAX_HOURS:g}"),
    "avg_power_watts": (0.0, False, np.inf, "a non-negative number"),
    "cost": (0.0, True, np.inf, "a positive number"),
    **{name: (0.0, False, np.inf, "a non-negative number") for name in COMPONENTS},
}
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _refuse(bad: pd.Series, text: pd.Series, source: str, column: str, what: str) -> None:
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        more = f" (and {int(bad.sum()) - 1} more rows)" if bad.sum() > 1 else ""
        raise ValueError(f"{source} line {row + 2}: column {column}: {text.iloc[row]!r} is not {what}{more}")


def load_job_records(path: str | Path, catalog: PriceCatalog) -> pd.DataFrame:
    """Read and check a CSV of past jobs; errors name the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV file ({' '.join(str(exc).split())})") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in RECORD_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    if raw.empty:
        raise ValueError(f"{path}: no job records")
    frame = pd.DataFrame(index=raw.index)
    for column, (low, exclusive, high, what) in _NUMBERS.items():
        text = raw[column].str.strip()
        values = pd.to_numeric(text, errors="coerce").astype(float)
        ok = np.isfinite(values) & ((values > low) if exclusive else (values >= low)) & (values <= high)
        if column == "gpu_count":
            ok &= values % 1 == 0
        _refuse(~ok, text, str(path), column, what)
        frame[column] = values
    frame["gpu_count"] = frame["gpu_count"].astype(int)
    spot = raw["spot_instance"].str.strip().str.lower()
    _refuse(~spot.isin(list(_BOOLEANS)), raw["spot_instance"], str(path), "spot_instance", "true/false, 1/0 or yes/no")
    frame["spot_instance"] = spot.map(_BOOLEANS).astype(bool)
    gpu_type = raw["gpu_type"].str.strip()
    unknown = (gpu_type != "") & gpu_type.map(lambda t: t != "" and catalog.gpu_type_name(t) is None)
    _refuse(unknown, gpu_type, str(path), "gpu_type", f"in the price catalog ({', '.join(catalog.gpu.types)})")
    frame["gpu_type"] = gpu_type.map(lambda t: catalog.gpu_type_name(t) if t else None)
    workload = raw["workload_type"].str.strip().str.lower()
    frame["workload_type"] = workload.where(workload != "", None)
    return frame[list(RECORD_COLUMNS)].reset_index(drop=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train_gbm", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="CSV of past jobs (default: generate them from the price catalog)")
    parser.add_argument("--records", type=positive_int, default=20000,
                        help="generated jobs when --data is not given (default 20000)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="random seed for the split, trees and generated jobs")
    parser.add_argument("--model-id", type=model_id_arg, default="cost_gbm", help="registry id (default cost_gbm)")
    parser.add_argument("--model-path", help="registry root (default: config model_path / $MODEL_PATH)")
    parser.add_argument("--config", help=CONFIG_FLAG_HELP)
    parser.add_argument("--catalog", help="price catalog YAML (default configs/prices.yaml)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        config = load_training_config(args.config)
        catalog = load_catalog(args.catalog)
        catalog_name = args.catalog or "configs/prices.yaml"
        synthetic = args.data is None
        if synthetic:
            sys.stderr.write(f"train_gbm: no job records given: training on {args.records} records generated "
                             f"from the price catalog {catalog_name}\n")
            records = generate_job_records(args.records, args.seed, catalog)
        else:
            records = load_job_records(args.data, catalog)
        model = CostModel(catalog)
        metrics = model.fit(records, config.models.cost_predictor, seed=args.seed)
        version = publish_cost_model(
            ModelRegistry(args.model_path or config.model_path), args.model_id, model, config, metrics,
            training={"seed": args.seed, "records": len(records), "synthetic_data": synthetic, "data": args.data,
                      "catalog": catalog_name, "currency": catalog.currency}, activate=True)
        label = " (trained on SYNTHETIC jobs: for demos only)" if synthetic else ""
        sys.stderr.write(
            f"train_gbm: registered and activated {args.model_id} version {version}{label}; holdout "
            f"MAE {metrics['mae']:.2f} {catalog.currency}, MAPE {metrics['mape']:.1f}% (list price "
            f"{metrics['list_price_mape']:.1f}%), {metrics['nominal_coverage']:.0%} interval covers "
            f"{metrics['coverage']:.1%}, mean confidence {metrics['mean_confidence']:.3f} vs hit rate "
            f"{metrics['hit_rate']:.3f}\n")
        return 0

    return run_cli("train_gbm", body)


if __name__ == "__main__":
    raise SystemExit(main())
