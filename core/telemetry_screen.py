"""Ingestion screen: samples no node could produce are refused before they are stored, and counted.

A sample is refused, for the first reason that applies, when it is

- `future_timestamp`: stamped more than `future_tolerance_s` after `now` (a clock far ahead would otherwise
  make its node look fresh until real time catches up). A collector screens against its own node's clock, so a
  device whose clock runs ahead of it is caught here; the node's clock itself running ahead is caught by the store
  actor, against the head's clock (collectors/store_actor.py);
- `bmc_sentinel`: a power reading of 65,535 W. DCMI Get Power Reading carries watts in a 16-bit field
  (collectors/ipmi_readings.py parses it), and 0xFFFF, all ones, is what a BMC hands back for a failed
  read. Narrower registers are not screened by value: SDR sensors report a raw byte that the sensor's
  own conversion factors turn into watts, so an all-ones byte has no fixed watt value, and 255 W or
  4,095 W are ordinary readings;
- `implausible_power`: a power reading above its bound: POWER_LIMIT_MARGIN times the sample's own
  `power_limit_watts` when it carries one above zero and its device enforces it (NVML's GPU limit: capping
  acts over a control period, so a reading may overshoot the limit for a moment, but half again above it is
  a bad reading), else `max_node_watts`, the wall power of a whole node. A BMC's active DCMI limit only
  raises that bound (POWER_LIMIT_MARGIN times it, when higher): GPU servers routinely draw above it, since
  the BMC's capping cannot throttle the GPUs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from core.telemetry import SourceKind, TelemetrySample

DEFAULT_FUTURE_TOLERANCE_S = 300
DEFAULT_MAX_NODE_WATTS = 15_000.0  # 8-GPU servers: DGX H100 is rated 10.2 kW at most, DGX B200 about 14.3 kW
POWER_LIMIT_MARGIN = 1.5
BMC_SENTINEL_WATTS = 65_535.0  # 0xFFFF in DCMI's 16-bit watts field
ENFORCED_LIMIT_SOURCES = frozenset({SourceKind.NVML})  # whose power_limit_watts the device itself holds power to


class RejectReason(StrEnum):
    FUTURE_TIMESTAMP = "future_timestamp"
    BMC_SENTINEL = "bmc_sentinel"
    IMPLAUSIBLE_POWER = "implausible_power"


@dataclass(frozen=True)
class Screened:
    """What a screen kept (in order), how many samples it refused for each reason, and the first of each."""

    accepted: list[TelemetrySample]
    rejected: Counter[RejectReason] = field(default_factory=Counter)
    examples: dict[RejectReason, TelemetrySample] = field(default_factory=dict)


def power_bound(sample: TelemetrySample, max_node_watts: float) -> float:
    """The highest power reading `sample` may carry (module rule)."""
    limit = sample.power_limit_watts
    if not limit:
        return max_node_watts
    if sample.source in ENFORCED_LIMIT_SOURCES:
        return limit * POWER_LIMIT_MARGIN
    return max(limit * POWER_LIMIT_MARGIN, max_node_watts)


def reject_reason(sample: TelemetrySample, latest_allowed: datetime, max_node_watts: float) -> RejectReason | None:
    """Why `sample` is refused, or None when it is kept."""
    if sample.timestamp > latest_allowed:
        return RejectReason.FUTURE_TIMESTAMP
    watts = sample.power_watts
    if watts is None:
        return None
    if watts == BMC_SENTINEL_WATTS:
        return RejectReason.BMC_SENTINEL
    if watts > power_bound(sample, max_node_watts):
        return RejectReason.IMPLAUSIBLE_POWER
    return None


def screen_samples(samples: Iterable[TelemetrySample], now: datetime, *,
                   future_tolerance_s: float = DEFAULT_FUTURE_TOLERANCE_S,
                   max_node_watts: float = DEFAULT_MAX_NODE_WATTS) -> Screened:
    """Split `samples` into the ones kept and counts of the ones refused, by the module rule."""
    latest_allowed = now + timedelta(seconds=future_tolerance_s)
    accepted: list[TelemetrySample] = []
    rejected: Counter[RejectReason] = Counter()
    examples: dict[RejectReason, TelemetrySample] = {}
    for sample in samples:
        reason = reject_reason(sample, latest_allowed, max_node_watts)
        if reason is None:
            accepted.append(sample)
        else:
            rejected[reason] += 1
            examples.setdefault(reason, sample)
    return Screened(accepted, rejected, examples)
