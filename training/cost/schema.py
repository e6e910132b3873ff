"""Request and response types of the job cost estimate (``POST /api/v1/predict/cost``).

``gpu_type`` is resolved by the cost model that prices the job, in the price catalog it was trained with
(case-insensitively; without one, that catalog's default type; an unknown one is ``UnknownGpuType``, a 422 naming
the field): not in ``configs/prices.yaml`` as it is now, which a request would otherwise be checked against while the
model priced it with another (a type added to the file since refused by the model, one dropped from it refused at
the door though the model can price it, a new default type imposed on requests that named none).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

COMPONENTS = ("compute", "gpu", "storage", "network", "energy")
MAX_GPUS = 64
MAX_HOURS = 8760.0
MIN_HOURS = 1 / 3600  # a second: shorter is no job the catalog's hourly prices say anything of
MIN_CPU_CORES = 0.001  # a millicore, Kubernetes' smallest request: less prices a job at no cost with a confidence
MAX_CPU_CORES = 4096
MIN_MEMORY_GB = 0.001  # a megabyte
MAX_MEMORY_GB = 65536
MAX_STORAGE_GB = 1_000_000  # block storage and network egress alike
_COUNT_MISSING = object()  # gpu_type given without gpu_count (Resources._count_with_a_type)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Resources(_Frozen):
    """What the job reserves."""

    # strict: a string or a boolean where a number belongs is refused (true was read as 1), as in the power request
    cpu_cores: float = Field(ge=MIN_CPU_CORES, le=MAX_CPU_CORES, strict=True, description="vCPUs")
    memory_gb: float = Field(ge=MIN_MEMORY_GB, le=MAX_MEMORY_GB, strict=True, description="RAM, GB")
    gpu_count: int = Field(0, ge=0, le=MAX_GPUS, description="accelerators (GPUs or NPUs); required with gpu_type")
    gpu_type: str | None = Field(None, min_length=1, max_length=64,
                                 description="accelerator type from the price catalog; default: its default type")
    storage_gb: float = Field(0.0, ge=0, le=MAX_STORAGE_GB, strict=True,
                              description="block storage kept for the job, GB")
    network_gb: float = Field(0.0, ge=0, le=MAX_STORAGE_GB, strict=True, description="network egress, GB")

    @model_validator(mode="before")
    @classmethod
    def _count_with_a_type(cls, data: Any) -> Any:
        """A gpu_type without gpu_count would be priced as no accelerator at all: make gpu_count's check refuse it."""
        if isinstance(data, dict) and data.get("gpu_type") is not None and "gpu_count" not in data:
            return {**data, "gpu_count": _COUNT_MISSING}
        return data

    @field_validator("gpu_count", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        if value is _COUNT_MISSING:
            raise ValueError("required with gpu_type (1 or more; 0 prices the job without an accelerator)")
        if isinstance(value, bool | str):  # 2.0 is a whole number; true and "2" are not numbers
            raise ValueError(f"must be a whole number, not {type(value).__name__}")
        return value

    @field_validator("gpu_type")
    @classmethod
    def _named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must name an accelerator type of the price catalog, or be left out")
        return value.strip() if value is not None else None


class CostQuery(_Frozen):
    """One job to price."""

    resources: Resources
    duration_hours: float = Field(ge=MIN_HOURS, le=MAX_HOURS, strict=True, description="at least a second (1/3600)")
    spot_instance: bool = Field(False, strict=True)
    workload_type: str | None = Field(None, pattern=r"^[A-Za-z0-9_ -]{1,32}$",
                                      description="training, inference, batch, idle, ... (others allowed)")

    @field_validator("workload_type")
    @classmethod
    def _normalize_workload(cls, value: str | None) -> str | None:
        return (value.strip().lower() or None) if value is not None else None


class CostBreakdown(_Frozen):
    """Cost components; they add up to ``CostEstimate.predicted_cost``."""

    compute: float = Field(ge=0)
    gpu: float = Field(ge=0)
    storage: float = Field(ge=0)
    network: float = Field(ge=0)
    energy: float = Field(ge=0)

    def total(self) -> float:
        return math.fsum(getattr(self, name) for name in COMPONENTS)


class CostEstimate(_Frozen):
    """The model's answer for one ``CostQuery``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, protected_namespaces=())
    predicted_cost: float = Field(ge=0)
    lower: float = Field(ge=0, description="lower end of the prediction interval")
    upper: float = Field(ge=0, description="upper end of the prediction interval")
    interval_coverage: float = Field(gt=0, lt=1, description="nominal probability that the cost lies in the interval")
    confidence: float = Field(ge=0, le=1, description="estimated P(|actual - predicted_cost| <= 10% of it)")
    cost_breakdown: CostBreakdown
    expected_power_watts: float = Field(ge=0, description="average IT power assumed for the job")
    energy_kwh: float = Field(ge=0, description="IT energy the energy cost pays for (before PUE), at the price per "
                                                "kWh the training records paid for their measured energy")
    currency: str = "USD"
    model_version: str
    trained_on_synthetic_data: bool = Field(
        False, description="the answering model learned from generated jobs (the demo's, priced from the catalog), "
                           "not billed ones: its numbers demonstrate the service, they are no quote")
    outside_training_range: tuple[str, ...] = Field(
        (), description="the job's features outside the range of the jobs the model trained on (e.g. gpu_count): "
                        "its estimate is an extrapolation, and its confidence at most the lowest seen in calibration")

    @model_validator(mode="after")
    def _consistent(self) -> CostEstimate:
        if abs(self.cost_breakdown.total() - self.predicted_cost) > 1e-6:
            raise ValueError(f"cost_breakdown sums to {self.cost_breakdown.total()}, not {self.predicted_cost}")
        if not self.lower <= self.predicted_cost <= self.upper:
            raise ValueError(f"interval [{self.lower}, {self.upper}] does not contain {self.predicted_cost}")
        return self
