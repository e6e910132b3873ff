"""Past jobs from a CSV file (`training.cost.catalog.RECORD_COLUMNS`), checked value by value: what the cost
model trains on (`train_gbm --data`, a cost retraining's CSV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.csv_text import read_text_csv
from training.cost.catalog import RECORD_COLUMNS, PriceCatalog
from training.cost.jobs import NONE
from training.cost.schema import (
    COMPONENTS,
    MAX_CPU_CORES,
    MAX_GPUS,
    MAX_HOURS,
    MAX_MEMORY_GB,
    MAX_STORAGE_GB,
    MIN_CPU_CORES,
    MIN_HOURS,
    MIN_MEMORY_GB,
)

MAX_JOB_POWER_W = 1_000_000.0  # a megawatt: beyond any job of MAX_GPUS accelerators (a unit error, W for mW)

# column: (lowest allowed, whether the lowest is excluded, highest allowed, what a valid value is): the request's
# bounds (training.cost.schema), so one record in other units cannot stretch the model's training range
_NUMBERS: dict[str, tuple[float, bool, float, str]] = {
    "cpu_cores": (MIN_CPU_CORES, False, MAX_CPU_CORES, f"a number from {MIN_CPU_CORES:g} to {MAX_CPU_CORES}"),
    "memory_gb": (MIN_MEMORY_GB, False, MAX_MEMORY_GB, f"a number from {MIN_MEMORY_GB:g} to {MAX_MEMORY_GB}"),
    "gpu_count": (0.0, False, MAX_GPUS, f"a whole number 0..{MAX_GPUS}"),
    "storage_gb": (0.0, False, MAX_STORAGE_GB, f"a non-negative number up to {MAX_STORAGE_GB:,}"),
    "network_gb": (0.0, False, MAX_STORAGE_GB, f"a non-negative number up to {MAX_STORAGE_GB:,}"),
    "duration_hours": (MIN_HOURS, False, MAX_HOURS, f"a number of hours from 1/3600 (a second) to {MAX_HOURS:g}"),
    "avg_power_watts": (0.0, False, MAX_JOB_POWER_W, f"a non-negative number of watts up to {MAX_JOB_POWER_W:,.0f}"),
    "cost": (0.0, True, np.inf, "a positive number"),
    **{name: (0.0, False, np.inf, "a non-negative number") for name in COMPONENTS},
}
COST_TOLERANCE = 0.01  # `cost` may differ from the sum of its components by this fraction (rounding)
COST_ROUNDING = 0.01  # ... or by this much (a bill's components rounded to cents: a one-minute job's 0.01)
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _refuse(bad: pd.Series, text: pd.Series, source: str, column: str, what: str) -> None:
    if bad.any():
        row = bad[bad].index[0]  # labels count the file's lines (read_text_csv): blank lines included
        more = f" (and {int(bad.sum()) - 1} more rows)" if bad.sum() > 1 else ""
        raise ValueError(f"{source} line {row + 2}: column {column}: {text[row]!r} is not {what}{more}")


def load_job_records(path: str | Path, catalog: PriceCatalog) -> pd.DataFrame:
    """Read and check a CSV of past jobs; errors name the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    raw = read_text_csv(path)
    raw = raw[~(raw.apply(lambda column: column.str.strip()) == "").all(axis=1)]
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
    parts = frame[list(COMPONENTS)].sum(axis=1)
    allowed = np.maximum(COST_TOLERANCE * frame["cost"], COST_ROUNDING)
    _refuse((frame["cost"] - parts).abs() > allowed, raw["cost"].str.strip(), str(path), "cost",
            f"the sum of {', '.join(COMPONENTS)} (within {COST_TOLERANCE:.0%} or {COST_ROUNDING:g}): the model learns "
            "the components and scores their total against cost; itemise a fee or tax in one of them")
    spot = raw["spot_instance"].str.strip().str.lower()
    _refuse(~spot.isin(list(_BOOLEANS)), raw["spot_instance"], str(path), "spot_instance", "true/false, 1/0 or yes/no")
    frame["spot_instance"] = spot.map(_BOOLEANS).astype(bool)
    gpu_type = raw["gpu_type"].str.strip()
    gpu_type = gpu_type.where(~((gpu_type.str.lower() == NONE) & (frame["gpu_count"] == 0)), "")  # as written out
    unknown = (gpu_type != "") & gpu_type.map(lambda t: t != "" and catalog.gpu_type_name(t) is None)
    _refuse(unknown, gpu_type, str(path), "gpu_type", f"in the price catalog ({', '.join(catalog.gpu.types)})")
    frame["gpu_type"] = gpu_type.map(lambda t: catalog.gpu_type_name(t) if t else None)
    workload = raw["workload_type"].str.strip().str.lower()
    frame["workload_type"] = workload.where(workload != "", None)
    return frame[list(RECORD_COLUMNS)].reset_index(drop=True)
