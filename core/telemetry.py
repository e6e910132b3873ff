"""Telemetry value types: one normalized sample shape for every source (BMC, NVML, NPU, host, replay)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

Watts = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]


class SourceKind(StrEnum):
    IPMI = "ipmi"
    NVML = "nvml"
    NPU = "npu"  # Huawei Ascend (npu-smi)
    XPU = "xpu"  # Baidu Kunlun (xpu_smi)
    HOST = "host"
    REPLAY = "replay"


class Quality(StrEnum):
    OK = "ok"  # read from the device as is
    DERIVED = "derived"  # computed (summed PSUs, energy-counter delta, mean of devices)
    STALE = "stale"  # the device answered with a value it did not refresh
    ESTIMATED = "estimated"  # filled or modelled, not measured


ID_PATTERN = r"^[^\x00-\x1f\x7f\\]+$"
"""Node and device ids: no control character and no backslash, which InfluxDB's line protocol cannot carry in a tag
(the same ids in every store)."""


class TelemetrySample(BaseModel):
    """One reading of one device (or the whole node, device_id "node") at one time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timestamp: datetime  # UTC
    node_id: str = Field(min_length=1, max_length=253, pattern=ID_PATTERN)
    source: SourceKind
    device_id: str = Field("node", min_length=1, max_length=253, pattern=ID_PATTERN)
    power_watts: Watts | None = None
    utilization: Percent | None = None  # GPU/NPU/AI-core or CPU utilization of this device
    memory_usage: Percent | None = None
    temperature: Annotated[float, Field(ge=-50, le=150)] | None = None  # °C
    power_limit_watts: Watts | None = None
    energy_joules: Annotated[float, Field(ge=0)] | None = None  # cumulative counter where the device has one
    quality: Quality = Quality.OK

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp must carry a time zone (UTC)")
        return value
