"""How device samples become the canonical node rows every backend returns (one rule, shared).

Per `step_s` bin (bins start at multiples of `step_s` since the Unix epoch, like training.power.features):
each device's readings are first averaged within the bin, then combined across devices:

- power_watts: the BMC wall reading (source ipmi, device "node"; else the sum of the node's other IPMI
  power devices, e.g. per-PSU sensors) when the bin has one; else a replayed node power (replay, "node");
  else the sum of the device powers (nvml + npu + xpu accelerators plus the host RAPL total, not its
  per-package parts). The device sum leaves out fans, disks and PSU losses, so it reads lower than the wall.
  A partial sum is no node power: the device sum is NaN in a bin missing a power device that reported in one
  of the bins covering the EXPECT_DEVICE_S before it (at least one bin), so a hung or failing source reads
  as a gap, not a drop. A device silent for longer (gone for good, or a driver hung for good) is no longer
  expected: a node without a BMC reading then reads its remaining devices' sum, and the collector's source
  status says why the other is silent. The look-back stays inside the requested window, so a window's
  first bins may still hold a partial sum; `judged_window` reads the look-back before a window too. The same
  holds for the BMC: a bin without an IPMI power reading while the BMC reported in the look-back is a gap, not
  the lower device sum (a flaky BMC backs off for minutes); and a sum of per-supply IPMI readings missing a
  supply that reported in the look-back is a gap too.
  `combine_latest` applies the same rules to the devices' last readings: a BMC that reported within the look-back
  gives the node's latest power, however old its last reading (its age says so), never the device sum.
- gpu_utilization: mean over NVML devices; npu_utilization: mean over NPU and XPU devices;
  cpu_utilization and memory_usage: mean over HOST devices; temperature: the hottest device.
- replay samples carry canonical fields back: device "node" holds power_watts, memory_usage and
  temperature; devices "cpu", "gpu" and "npu" hold the matching `*_utilization` in `utilization`
  (`replay_samples` builds them from a canonical row).
- workload_type stays NaN: a TelemetrySample has no field for it.

Bins without data stay NaN; the feature pipeline decides how to fill gaps.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from core.stores.base import NodeLatest, TelemetryStore
from core.telemetry import Quality, SourceKind, TelemetrySample
from core.telemetry_csv import CANONICAL_COLUMNS

FIELDS = ("power_watts", "utilization", "memory_usage", "temperature")
DEVICE_BIN_COLUMNS = ("bin_s", "source", "device_id", *FIELDS)
LATEST_COLUMNS = ("node_id", "source", "device_id", "ts_ms", "power_watts")
NODE_DEVICE = "node"
REPLAY_UTILIZATION = {"cpu": "cpu_utilization", "gpu": "gpu_utilization", "npu": "npu_utilization"}
LATEST_SPREAD_S = 60.0  # device readings this much older than a node's newest one are not summed into it
EXPECT_DEVICE_S = 600  # a power device that reported this recently must be in a device sum (module rule)
MAX_BINS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ACCELERATORS = (SourceKind.NVML.value, SourceKind.NPU.value, SourceKind.XPU.value)


def to_ms(moment: datetime) -> int:
    """Exact Unix milliseconds of an aware datetime (the stores' timestamp key)."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} must carry a time zone (UTC)")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def ceil_ms(moment: datetime) -> int:
    """Unix milliseconds of an aware datetime, rounded up: the first millisecond key at or after it."""
    return -((_EPOCH - moment) // timedelta(milliseconds=1))


def check_window(start: datetime, end: datetime, step_s: int) -> tuple[int, int]:
    """Validate window arguments; return (start_ms, end_ms)."""
    if isinstance(step_s, bool) or not isinstance(step_s, int | np.integer) or step_s <= 0:
        raise ValueError(f"step_s must be a positive whole number of seconds, not {step_s!r}")
    start_ms, end_ms = to_ms(start), to_ms(end)
    if end_ms <= start_ms:
        raise ValueError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    if (end_ms - start_ms) // (step_s * 1000) > MAX_BINS:
        raise ValueError(f"window of {(end_ms - start_ms) / 1000:.0f} s at step {step_s} s exceeds {MAX_BINS} bins")
    return start_ms, end_ms


def bin_starts(start_ms: int, end_ms: int, step_s: int) -> np.ndarray:
    """Unix seconds of every bin from the one holding `start_ms` to the last one starting before `end_ms`."""
    step_ms = step_s * 1000
    first = start_ms // step_ms
    last = (end_ms - 1) // step_ms
    return np.arange(first, last + 1, dtype=np.int64) * step_s


def node_frame(device_bins: pd.DataFrame, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
    """Combine per-device bin means (DEVICE_BIN_COLUMNS) into the node's canonical rows (module rule)."""
    start_ms, end_ms = check_window(start, end, step_s)
    bins = bin_starts(start_ms, end_ms, step_s)
    n = len(bins)
    pos = (pd.to_numeric(device_bins["bin_s"]).to_numpy(dtype=np.int64) - bins[0]) // step_s
    inside = (pos >= 0) & (pos < n)
    pos = pos[inside]
    source = device_bins["source"].astype(str).to_numpy()[inside]
    device = device_bins["device_id"].astype(str).to_numpy()[inside]
    value = {name: pd.to_numeric(device_bins[name], errors="coerce").to_numpy(dtype=float)[inside] for name in FIELDS}
    replay, ipmi = source == SourceKind.REPLAY.value, source == SourceKind.IPMI.value
    host = source == SourceKind.HOST.value
    node_device = device == NODE_DEVICE

    def per_bin(mask: np.ndarray, name: str, how: str) -> np.ndarray:
        return _reduce(pos, mask, value[name], n, how)

    device_power = (np.isin(source, _ACCELERATORS) | (host & node_device)) & ~np.isnan(value["power_watts"])
    device_sum = per_bin(device_power, "power_watts", "sum")
    device_sum[_missing_device(pos[device_power], source[device_power], device[device_power], n, step_s)] = np.nan
    power = per_bin(ipmi & node_device, "power_watts", "mean")
    supplies = ipmi & ~node_device & ~np.isnan(value["power_watts"])  # a BMC's per-supply readings, summed
    supply_sum = per_bin(supplies, "power_watts", "sum")
    supply_missing = _missing_device(pos[supplies], source[supplies], device[supplies], n, step_s)
    supply_sum[supply_missing] = np.nan  # a partial sum is no node power (a gap, not a drop)
    gap_in_sum = np.isnan(power) & supply_missing
    power = np.where(np.isnan(power), supply_sum, power)
    bmc = ipmi & ~np.isnan(value["power_watts"])
    bmc_gap = _missing_device(pos[bmc], source[bmc], np.full(int(bmc.sum()), NODE_DEVICE), n, step_s) | gap_in_sum
    for fallback in (per_bin(replay & node_device, "power_watts", "mean"), device_sum):
        power = np.where(np.isnan(power) & ~bmc_gap, fallback, power)
    frame = pd.DataFrame({
        "timestamp": pd.to_datetime(bins, unit="s", utc=True).astype("datetime64[ns, UTC]"),
        "node_id": node_id,
        "power_watts": power,
        "cpu_utilization": per_bin(host | (replay & (device == "cpu")), "utilization", "mean"),
        "memory_usage": per_bin(host | (replay & node_device), "memory_usage", "mean"),
        "gpu_utilization": per_bin((source == SourceKind.NVML.value) | (replay & (device == "gpu")), "utilization",
                                   "mean"),
        "npu_utilization": per_bin(np.isin(source, (SourceKind.NPU.value, SourceKind.XPU.value)) |
                                   (replay & (device == "npu")), "utilization", "mean"),
        "temperature": per_bin(np.ones(len(pos), dtype=bool), "temperature", "max"),
        "workload_type": np.nan,
    })
    return frame[list(CANONICAL_COLUMNS)]


def _missing_device(pos: np.ndarray, source: np.ndarray, device: np.ndarray, n: int, step_s: int) -> np.ndarray:
    """Per bin, whether a device (source, device id) of these readings is absent from it but present in one of the
    bins covering the EXPECT_DEVICE_S before it (at least one)."""
    missing = np.zeros(n, dtype=bool)
    for _, where in pd.Series(pos).groupby([source, device]):
        present = np.zeros(n, dtype=bool)
        present[where.to_numpy()] = True
        missing |= absent_but_expected(present, step_s)
    return missing


def lookback_bins(step_s: int) -> int:
    """The bins covering the EXPECT_DEVICE_S before a bin (at least one): where the module rule looks for a device."""
    return max(1, -(-EXPECT_DEVICE_S // step_s))


def judged_window(store: TelemetryStore, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
    """`store.window` over [start, end), read from the look-back before `start` so that its first bins are judged
    as the others (a bin the BMC or a device missed is a gap there too, not a lower partial sum): for reads of a
    few bins, scored or learnt from, that a look-back inside the window would leave unjudged."""
    before = start - timedelta(seconds=step_s * lookback_bins(step_s))
    frame = store.window(node_id, before, end, step_s)
    return frame[pd.to_datetime(frame["timestamp"], utc=True) >= start].reset_index(drop=True)


def absent_but_expected(present: np.ndarray, step_s: int) -> np.ndarray:
    """Per bin, whether a series `present` in some bins is absent from it but present in one of the bins covering
    the EXPECT_DEVICE_S before it (at least one): a gap, not a drop (the module rule)."""
    n = len(present)
    lookback = lookback_bins(step_s)
    before = np.concatenate(([0], np.cumsum(present)))  # before[b]: bins before b the series is in
    recent = before[:n] > before[np.maximum(np.arange(n) - lookback, 0)]
    return recent & ~present


def _reduce(pos: np.ndarray, mask: np.ndarray, values: np.ndarray, n: int, how: str) -> np.ndarray:
    """Per bin mean, sum or max of `values` where `mask` holds; NaN for bins with none."""
    keep = mask & ~np.isnan(values)
    where, what = pos[keep], values[keep]
    count = np.bincount(where, minlength=n)
    if how == "max":
        out = np.full(n, -np.inf)
        np.maximum.at(out, where, what)
    else:
        out = np.bincount(where, weights=what, minlength=n).astype(float)
        if how == "mean":
            out = out / np.maximum(count, 1)
    out[count == 0] = np.nan
    return out


def combine_latest(readings: pd.DataFrame, now: datetime | None = None) -> list[NodeLatest]:
    """Each node's newest power from its devices' last readings (LATEST_COLUMNS), by the window rule.

    Only readings within LATEST_SPREAD_S of the node's newest one count; of those, the first present of
    IPMI "node", other IPMI devices (summed), replay "node", and device powers (summed) gives the power.
    Device powers count only when every power device whose last reading is within EXPECT_DEVICE_S of the
    node's newest one is also within LATEST_SPREAD_S: a partial sum is no node power, so such a node has
    none from them; likewise a BMC's per-supply readings. The timestamp is the oldest reading used, so `age_s`
    never flatters a partly stale sum.
    """
    now = now or datetime.now(UTC)
    by_node: dict[str, list[tuple]] = {}
    for node, source, device, ts_ms, watts in readings.loc[:, list(LATEST_COLUMNS)].itertuples(index=False):
        if watts is not None and not pd.isna(watts):
            by_node.setdefault(str(node), []).append((int(ts_ms), str(source), str(device), float(watts)))
    result = []
    for node_id in sorted(by_node):
        rows = sorted(by_node[node_id])
        newest = rows[-1][0]
        last: dict[tuple[str, str], tuple[int, float]] = {}
        for ts_ms, source, device, watts in rows:
            last[(source, device)] = (ts_ms, watts)  # rows are time-ordered: the newest wins
        spread_from, expect_from = newest - LATEST_SPREAD_S * 1000, newest - EXPECT_DEVICE_S * 1000
        bmc = {key: reading for key, reading in last.items()
               if key[0] == SourceKind.IPMI.value and reading[0] >= expect_from}
        if bmc:  # the BMC's readings alone, however much older than the devices' (module rule)
            last = bmc
            spread_from = max(ts_ms for ts_ms, _ in bmc.values()) - LATEST_SPREAD_S * 1000
        devices_complete = all(ts_ms >= spread_from for key, (ts_ms, _) in last.items()
                               if _device_power(*key) and ts_ms >= expect_from)
        supplies_complete = all(ts_ms >= spread_from for key, (ts_ms, _) in last.items()
                                if _bmc_supply(*key) and ts_ms >= expect_from)  # likewise a BMC's supplies
        usable = {key: (ts_ms, watts) for key, (ts_ms, watts) in last.items()
                  if ts_ms >= spread_from and (devices_complete or not _device_power(*key))
                  and (supplies_complete or not _bmc_supply(*key))}
        for tier in _LATEST_TIERS:
            used = [reading for key, reading in usable.items() if tier(*key)]
            if used:
                moment = datetime.fromtimestamp(min(ts for ts, _ in used) / 1000, tz=UTC)
                result.append(NodeLatest(node_id=node_id, timestamp=moment, power_watts=sum(w for _, w in used),
                                         age_s=max(0.0, (now - moment).total_seconds())))
                break
    return result


_LATEST_TIERS = (
    lambda source, device: source == SourceKind.IPMI.value and device == NODE_DEVICE,
    lambda source, device: _bmc_supply(source, device),
    lambda source, device: source == SourceKind.REPLAY.value and device == NODE_DEVICE,
    lambda source, device: _device_power(source, device),
)


def _bmc_supply(source: str, device: str) -> bool:
    """Whether a reading is one of a BMC's per-supply powers (summed where it gives no node total)."""
    return source == SourceKind.IPMI.value and device != NODE_DEVICE


def _device_power(source: str, device: str) -> bool:
    """Whether a reading is a device power of the device sum: an accelerator's, or the host's RAPL total (its
    per-package rows, `HostSource(per_package=True)`, are parts of that total)."""
    return source in _ACCELERATORS or (source == SourceKind.HOST.value and device == NODE_DEVICE)


def replay_samples(timestamp: datetime, node_id: str, row: Mapping[str, object],
                   quality: Quality = Quality.OK) -> list[TelemetrySample]:
    """The replay samples that carry one canonical row (NaN/None values are left out)."""

    def value(name: str) -> float | None:
        raw = row.get(name)
        return None if raw is None or pd.isna(raw) else float(raw)  # type: ignore[arg-type]

    common = {"timestamp": timestamp, "node_id": node_id, "source": SourceKind.REPLAY, "quality": quality}
    node_fields = {"power_watts": value("power_watts"), "memory_usage": value("memory_usage"),
                   "temperature": value("temperature")}
    samples = []
    if any(v is not None for v in node_fields.values()):
        samples.append(TelemetrySample(**common, device_id=NODE_DEVICE, **node_fields))
    for device, column in REPLAY_UTILIZATION.items():
        utilization = value(column)
        if utilization is not None:
            samples.append(TelemetrySample(**common, device_id=device, utilization=utilization))
    return samples
