"""HostSource: CPU utilization and memory usage from /proc, CPU package power from RAPL energy counters.

Utilization and power are deltas between two readings, so the first reading only primes the counters (the
constructor takes it). RAPL energy files are root-only on Linux >= 5.10; an unreadable zone is skipped and the
node sample then carries no power instead of failing (its status says "partial"). A counter that falls back is
taken as wrapped at its `max_energy_range_uj` unless that would mean more than MAX_ZONE_WATTS: then it was reset, and
that interval has no power.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from collectors.base import TelemetrySource
from collectors.failures import FailureTracker
from core.telemetry import Quality, SourceKind, TelemetrySample

logger = logging.getLogger(__name__)

_TOP_ZONE = re.compile(r"^intel-rapl:(\d+)$")  # packages (and psys); sub-zones are intel-rapl:N:M
MAX_ZONE_WATTS = 1000.0  # twice the largest package TDP (500 W): a counter that fell further back was reset


@dataclass
class _Zone:
    """One RAPL package zone and its last energy reading."""

    device_id: str
    energy_path: Path
    max_range_uj: int | None
    last_uj: int | None = None
    last_t: float | None = None
    total_j: float = 0.0  # wrap-corrected energy since this source started


def _read_int(path: Path) -> int:
    return int(path.read_text(encoding="ascii").strip())


def _clamp_pct(value: float) -> float:
    return min(100.0, max(0.0, value))


class HostSource(TelemetrySource):
    """This node's CPU and memory, plus CPU package power where RAPL is readable.

    Args:
        node_id: node the samples belong to.
        proc_root: where `stat` and `meminfo` live (tests pass a fake tree).
        powercap_root: the powercap class directory holding `intel-rapl:N` zones.
        per_package: also return one sample per RAPL package (device_id = the zone name, e.g. "package-0").
        clock: monotonic seconds, for the energy deltas.
        max_failures: consecutive failed reads before the source reports itself unavailable.
    """

    kind = SourceKind.HOST
    min_interval_s = 1.0
    warmup_s = 0.5  # a one-shot reader waits this long after construction so the first deltas mean something

    def __init__(self, node_id: str, *, proc_root: str | Path = "/proc",
                 powercap_root: str | Path = "/sys/class/powercap", per_package: bool = False,
                 clock: Callable[[], float] = time.monotonic, max_failures: int = 5) -> None:
        self.node_id = node_id
        self.label = "host"
        self._stat = Path(proc_root) / "stat"
        self._meminfo = Path(proc_root) / "meminfo"
        self._per_package = per_package
        self._clock = clock
        self._failures = FailureTracker(f"host source on {node_id}", max_failures, retry_s=None)  # reads every round
        self._powercap = Path(powercap_root)
        self._zones = self._find_zones(self._powercap)
        self._last_cpu: tuple[int, int] | None = None
        try:
            self._last_cpu = self._cpu_times()
        except (OSError, ValueError) as exc:
            logger.debug("no initial CPU reading from %s: %s", self._stat, exc)
        self._zone_powers(self._clock())  # prime the energy counters

    # -- TelemetrySource -------------------------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        if self._failures.tripped:
            return False, self._failures.reason()
        if not self._stat.is_file():
            return False, f"{self._stat} is not readable"
        if not self._zones:  # a node without a BMC then sums its accelerators' power only
            return True, (f"partial: no readable RAPL package zone under {self._powercap}, no CPU power (its energy "
                          "files are root-only on Linux 5.10 and later)")
        return True, ""

    def sample(self) -> list[TelemetrySample]:
        try:
            utilization = self._cpu_utilization()
            memory = self._memory_usage()
        except (OSError, ValueError) as exc:
            self._failures.failed(f"reading {self._stat.parent}: {exc}")
            return []
        self._failures.ok()
        powers = self._zone_powers(self._clock())
        stamp = datetime.now(UTC)
        readings = [watts for watts in powers.values() if watts is not None]
        node_power = sum(readings) if powers and len(readings) == len(powers) else None
        samples = [TelemetrySample.reading(timestamp=stamp, node_id=self.node_id, source=self.kind,
                                           device_id="node", power_watts=node_power, utilization=utilization,
                                           memory_usage=memory, quality=Quality.DERIVED)]
        if self._per_package:
            samples += [TelemetrySample.reading(timestamp=stamp, node_id=self.node_id, source=self.kind,
                                                device_id=zone.device_id, power_watts=powers.get(zone.device_id),
                                                energy_joules=zone.total_j, quality=Quality.DERIVED)
                        for zone in self._zones]
        return samples

    # -- /proc -----------------------------------------------------------------------------------------------
    def _cpu_times(self) -> tuple[int, int]:
        """(idle, total) jiffies from the aggregate `cpu` line of /proc/stat."""
        first = self._stat.read_text(encoding="ascii").splitlines()[0].split()
        if not first or first[0] != "cpu" or len(first) < 5:
            raise ValueError(f"unexpected first line in {self._stat}: {' '.join(first)!r}")
        ticks = [int(value) for value in first[1:9]]  # user nice system idle iowait irq softirq steal
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        return idle, sum(ticks)

    def _cpu_utilization(self) -> float | None:
        current = self._cpu_times()
        previous, self._last_cpu = self._last_cpu, current
        if previous is None:
            return None
        d_idle, d_total = current[0] - previous[0], current[1] - previous[1]
        if d_total <= 0:
            return None  # no tick elapsed since the last reading
        return _clamp_pct(100.0 * (1.0 - d_idle / d_total))

    def _memory_usage(self) -> float:
        fields: dict[str, int] = {}
        for line in self._meminfo.read_text(encoding="ascii").splitlines():
            key, _, rest = line.partition(":")
            if rest.split():
                fields[key.strip()] = int(rest.split()[0])
        total = fields.get("MemTotal", 0)
        if total <= 0:
            raise ValueError(f"no MemTotal in {self._meminfo}")
        available = fields.get("MemAvailable")
        if available is None:  # kernels before 3.14
            available = fields.get("MemFree", 0) + fields.get("Buffers", 0) + fields.get("Cached", 0)
        return _clamp_pct(100.0 * (total - available) / total)

    # -- RAPL ------------------------------------------------------------------------------------------------
    @staticmethod
    def _find_zones(root: Path) -> list[_Zone]:
        zones: list[_Zone] = []
        candidates = sorted((p for p in root.glob("intel-rapl:*") if _TOP_ZONE.match(p.name)),
                            key=lambda p: int(p.name.split(":")[1]))
        for path in candidates:
            name_file = path / "name"
            name = name_file.read_text(encoding="ascii").strip() if name_file.is_file() else path.name
            if not name.startswith("package") and name != path.name:
                continue  # psys and friends would double-count the packages
            try:
                _read_int(path / "energy_uj")
            except (OSError, ValueError) as exc:
                logger.info("RAPL zone %s not readable, no CPU power from it: %s", path, exc)
                continue
            try:
                max_range: int | None = _read_int(path / "max_energy_range_uj")
            except (OSError, ValueError):
                max_range = None
            zones.append(_Zone(device_id=name, energy_path=path / "energy_uj", max_range_uj=max_range))
        return zones

    def _zone_powers(self, now: float) -> dict[str, float | None]:
        """Watts per zone since its previous reading (None on the first reading or a failed read)."""
        powers: dict[str, float | None] = {}
        for zone in self._zones:
            try:
                current = _read_int(zone.energy_path)
            except (OSError, ValueError) as exc:
                logger.debug("RAPL read %s failed: %s", zone.energy_path, exc)
                zone.last_uj = zone.last_t = None
                powers[zone.device_id] = None
                continue
            if zone.last_t is not None and now <= zone.last_t:
                powers[zone.device_id] = None  # no time elapsed; keep the older reading as the base
                continue
            watts = None
            if zone.last_uj is not None and zone.last_t is not None:
                delta = current - zone.last_uj
                if delta < 0 and zone.max_range_uj:
                    delta += zone.max_range_uj  # the counter wrapped, or was reset (a driver reload, a CPU hotplug):
                    if delta / 1e6 / (now - zone.last_t) > MAX_ZONE_WATTS:  # a wrap that fast is no wrap
                        delta = -1
                if delta >= 0:
                    zone.total_j += delta / 1e6
                    watts = delta / 1e6 / (now - zone.last_t)
            zone.last_uj, zone.last_t = current, now
            powers[zone.device_id] = watts
        return powers
