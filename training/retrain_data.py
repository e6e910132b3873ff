"""What one retraining attempt trains on: telemetry for the power forecaster, past jobs for the cost model.

The values are small and picklable (they travel to the Ray task or actor that trains), and read the data only
when the attempt runs. A CSV file's absolute path stays out of what users see: `label` names it instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from core.durations import format_duration, parse_duration
from core.stores.frame import open_store, stored_frame
from core.telemetry_csv import load_telemetry_csv
from training.cost.catalog import PriceCatalog, generate_job_records
from training.cost.job_records import load_job_records
from training.settings import Resolution

DEFAULT_STORE_SPAN = "14d"
SPAN_WINDOWS = 4  # a scheduled or API retrain reads at least this many of its model's windows (input + horizon)
GENERATED_JOBS = 20_000  # as `train_gbm` without --data
MAX_GENERATED_JOBS = 1_000_000  # a demo catalog's jobs: more only take memory and time (tens of GB at 10^9)


def training_span_s(resolution: Resolution | None, since_s: int) -> int:
    """`since_s`, or more where `resolution`'s windows need it: at least SPAN_WINDOWS of its windows (input window +
    horizon) of telemetry, 8 weeks for an hourly model with a week's window and horizon, where the default span is
    14 days (the store gives what it still holds)."""
    if resolution is None:
        return since_s
    return shape_span_s(resolution.step, resolution.horizon, resolution.sequence_length, since_s)


def shape_span_s(step_s: int, horizon_s: int, sequence_length: int, since_s: int) -> int:
    """`training_span_s` for a model of this step, horizon and input window."""
    return max(since_s, SPAN_WINDOWS * (sequence_length * step_s + horizon_s))


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str | None = None
    label: str | None = None

    def public(self, message: str) -> str:
        """`message` with the file's absolute path replaced by the name users know it by."""
        return message.replace(self.path, self._name()) if self.path else message

    def _name(self) -> str:
        return self.label or Path(self.path or "").name


class TrainingData(_Data):
    """Telemetry for the power forecaster: a canonical CSV file (`path`, shown as `label`) or the telemetry
    store's last `since_s` seconds."""

    source: Literal["csv", "store"]
    since_s: int = Field(parse_duration(DEFAULT_STORE_SPAN), gt=0)

    def frames(self) -> Callable[[int], pd.DataFrame]:
        """The frame source `retrain_power` reads (called with the model's step)."""
        if self.source == "csv":
            return lambda _step_s: load_telemetry_csv(self.path)

        def read(step_s: int) -> pd.DataFrame:
            store = open_store()
            try:
                return stored_frame(store, self.since_s, step_s)
            finally:
                store.close()

        return read

    def describe(self) -> str:
        """The data in words, for the attempt's record."""
        return self._name() if self.source == "csv" else f"telemetry store, last {format_duration(self.since_s)}"


class JobRecordsData(_Data):
    """Past jobs for the cost model: a CSV of job records (`path`, shown as `label`) or `count` jobs generated
    from the price catalog with `seed` (for demos, like `train_gbm` without --data)."""

    source: Literal["csv", "catalog"]
    count: int = Field(GENERATED_JOBS, ge=1, le=MAX_GENERATED_JOBS)
    seed: int = Field(0, ge=0)

    def records(self, catalog: PriceCatalog) -> pd.DataFrame:
        """The job records (`training.cost.catalog.RECORD_COLUMNS`). Raises ValueError naming file, line, column."""
        if self.source == "catalog":
            return generate_job_records(self.count, self.seed, catalog)
        return load_job_records(self.path, catalog)

    @property
    def synthetic(self) -> bool:
        return self.source == "catalog"

    def describe(self) -> str:
        """The data in words, for the attempt's record."""
        return self._name() if self.source == "csv" else f"{self.count} jobs generated from the price catalog"
