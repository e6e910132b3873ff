"""Jobs as the cost model reads them: a table by column (`Jobs`), from past job records or from requests.

Requests are turned into one array per column without pandas (building a DataFrame cost ~3 ms a request);
the functions of training.cost.catalog and training.cost.model accept either form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from training.cost.schema import CostQuery

if TYPE_CHECKING:  # the catalog imports this module
    from training.cost.catalog import PriceCatalog

JOB_COLUMNS = ("cpu_cores", "memory_gb", "gpu_count", "gpu_type", "storage_gb", "network_gb", "duration_hours",
               "spot_instance", "workload_type")
NONE = "none"  # gpu_type without GPUs, workload_type when not given
Jobs = pd.DataFrame | Mapping[str, np.ndarray]
"""Job rows by column (``JOB_COLUMNS``): a DataFrame (records) or one array per column (requests)."""


def job_columns(queries: Sequence[CostQuery]) -> dict[str, np.ndarray]:
    """The ``JOB_COLUMNS`` of the queries, one array each."""
    resources = [q.resources for q in queries]
    columns = {name: np.array([getattr(r, name) for r in resources], float)
               for name in ("cpu_cores", "memory_gb", "gpu_count", "storage_gb", "network_gb")}
    return {**columns, "gpu_type": np.array([r.gpu_type for r in resources], object),
            "duration_hours": np.array([q.duration_hours for q in queries], float),
            "spot_instance": np.array([q.spot_instance for q in queries], bool),
            "workload_type": np.array([q.workload_type for q in queries], object)}


def numbers(jobs: Jobs, name: str) -> np.ndarray:
    """A numeric column as floats."""
    return np.asarray(jobs[name], dtype=float)


def job_workload_type(name: object) -> str:
    """A job's workload_type as the model reads it: lower case, "none" when not given."""
    return name.strip().lower() if isinstance(name, str) and name.strip() else NONE


def normalized_frame(frame: pd.DataFrame, catalog: PriceCatalog) -> pd.DataFrame:
    """Job records as the model reads them: catalog spelling of gpu_type, `job_workload_type`, boolean spot."""
    frame = frame.reset_index(drop=True).copy()
    frame["gpu_type"] = [catalog.job_gpu_type(c, t) for c, t in zip(frame["gpu_count"], frame["gpu_type"], strict=True)]
    frame["workload_type"] = [job_workload_type(w) for w in frame["workload_type"]]
    frame["spot_instance"] = frame["spot_instance"].astype(bool)
    return frame


def query_jobs(queries: Sequence[CostQuery], catalog: PriceCatalog) -> dict[str, np.ndarray]:
    """`normalized_frame` for requests: the same columns, as arrays."""
    jobs = job_columns(queries)
    jobs["gpu_type"] = np.array([catalog.job_gpu_type(c, t) for c, t in zip(jobs["gpu_count"], jobs["gpu_type"],
                                                                             strict=True)], object)
    jobs["workload_type"] = np.array([job_workload_type(w) for w in jobs["workload_type"]], object)
    return jobs
