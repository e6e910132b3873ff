"""What a BMC's answers mean: DCMI power reading and limit responses, and which SDR sensors are node power."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from core.telemetry import Quality

_NODE_ENTITIES = {"System board", "System chassis", "Power unit / power domain",
                  "Power management /power distribution board", "Power system board"}
_VAGUE = {"Unspecified", "Other", "Unknown"}  # count only with a node-like name
_COMPONENT = re.compile(r"cpu|proc|mem|dimm|gpu|fan|disk|hdd|ssd|nvme|pci|riser|vr\b|vcore|out", re.I)
_NODE_NAME = re.compile(r"total|consum|platform|node|sys|chassis|input|meter", re.I)
# one numbered or lettered supply: "PSU1 Input Power", "PS_2", "PSU-3", "PSU A Input", "Power Supply 1"
_SUPPLY_NAME = re.compile(r"\b(psu?|power\s*supply)[\s_-]*(\d|[a-d]\b)", re.I)


@dataclass(frozen=True)
class PowerSensor:
    """What the SDR says about one sensor (pyghmi names for unit and entity)."""

    key: str
    name: str
    entity: str
    unit: str  # base unit, "W" for watts
    compound: bool = False  # a rate or product unit (W/h, W*s ...), or a percentage


def select_power_sensors(sensors: Iterable[PowerSensor]) -> tuple[list[PowerSensor], Quality]:
    """The node's wall-power sensors: one system/total sensor when there is one, else every PSU input summed. A
    sensor of no clear entity counts by its name: a numbered supply's ("PSU2 Input Power") as a PSU, a node-like one
    as the node's."""
    watts = [s for s in sensors if s.unit == "W" and not s.compound and not _COMPONENT.search(s.name)]
    vague_supply = [s for s in watts if s.entity in _VAGUE and _SUPPLY_NAME.search(s.name)]
    node = [s for s in watts if s.entity in _NODE_ENTITIES
            or (s.entity in _VAGUE and _NODE_NAME.search(s.name) and s not in vague_supply)]
    if node:
        best = min(node, key=lambda s: (not re.search(r"total|consum|platform|node", s.name, re.I), s.key))
        return [best], Quality.OK
    psus = sorted((s for s in watts if s.entity == "Power supply" or s in vague_supply), key=lambda s: s.key)
    return psus, Quality.DERIVED if len(psus) > 1 else Quality.OK


def parse_dcmi_power_reading(data: bytes) -> float | None:
    """Watts from a DCMI Get Power Reading response, or None when the BMC does not measure (inactive or 0 W)."""
    if len(data) < 18 or data[0] != 0xDC:
        return None
    watts, active = struct.unpack_from("<H", data, 1)[0], data[17] & 0x40
    return float(watts) if active and watts > 0 else None


def dcmi_timestamp(data: bytes) -> int | None:
    """The BMC's time stamp of a DCMI Get Power Reading response (seconds, the BMC's clock), or None."""
    return struct.unpack_from("<I", data, 9)[0] if len(data) >= 18 and data[0] == 0xDC else None


class FrozenReading:
    """Tells a DCMI power reading the BMC has stopped updating: its time stamp moved before, then stood still for
    `after_s` (a BMC whose firmware hung keeps answering with its last value, marked active). A BMC that never
    moves its stamp (0, or a fixed value) is not judged by it."""

    def __init__(self, after_s: float = 300.0):
        self.after_s = after_s
        self._stamp: int | None = None
        self._changed_at = 0.0
        self._moves = False

    def check(self, stamp: int | None, now: float) -> str | None:
        """Why the reading is frozen (`now`: a monotonic clock), else None."""
        if not stamp:
            return None
        if stamp != self._stamp:
            self._moves = self._moves or self._stamp is not None
            self._stamp, self._changed_at = stamp, now
            return None
        if self._moves and now - self._changed_at >= self.after_s:
            return (f"the BMC's power reading has not been updated for {now - self._changed_at:.0f} s (its DCMI time "
                    f"stamp stands at {stamp})")
        return None


def parse_dcmi_power_limit(data: bytes) -> float | None:
    """Watts from a DCMI Get Power Limit response (only answered when a limit is active)."""
    return float(struct.unpack_from("<H", data, 4)[0]) if len(data) >= 6 and data[0] == 0xDC else None
