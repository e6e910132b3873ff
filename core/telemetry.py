"""Telemetry value types: one normalized sample shape for every source (BMC, NVML, NPU, host, replay)."""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

logger = logging.getLogger(__name__)
_REPORTED: set[tuple[str, str, str]] = set()  # (node, device, field) already logged as out of range

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


ID_PATTERN = r"^[^\x00-\x1f\x7f\\]+$"
"""Node and device ids: no control character and no backslash, which InfluxDB's line protocol cannot carry in a tag
(the same ids in every store)."""
MAX_ID_CHARS = 253  # a Kubernetes node name's limit


READING_FIELDS = frozenset({"power_watts", "utilization", "memory_usage", "temperature", "power_limit_watts",
                            "energy_joules"})
"""The measured values of a sample (what `TelemetrySample.reading` may leave out)."""


class TelemetrySample(BaseModel):
    """One reading of one device (or the whole node, device_id "node") at one time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timestamp: datetime  # UTC
    node_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)
    source: SourceKind
    device_id: str = Field("node", min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)
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

    @classmethod
    def reading(cls, **fields: Any) -> TelemetrySample:
        """A device's reading, where a value out of its range (a sensor's 255 °C, a negative power) is left out
        (None, logged once per device and field) instead of costing the whole sample, or every device's in a
        source's round. Identity fields (timestamp, node, source, device) still raise ValidationError."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
            if not bad or not bad <= READING_FIELDS:
                raise
            node, device = str(fields.get("node_id")), str(fields.get("device_id", "node"))
            new = sorted(name for name in bad if (node, device, name) not in _REPORTED)
            if new:  # once per device and field: a broken sensor would repeat it every round
                _REPORTED.update((node, device, name) for name in new)
                logger.warning("telemetry: %s %s: out of range, left out (from now on without a word): %s", node,
                               device, ", ".join(f"{name}={fields[name]!r}" for name in new))
            return cls(**{**fields, **dict.fromkeys(bad)})
