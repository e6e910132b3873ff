"""PrometheusStore: read-only node windows from metrics Kepler, dcgm-exporter and node-exporter collect.

Metric and node-label names are configurable (`metric_names`, `node_labels`, keyed as in DEFAULT_METRICS; a
name may carry label matchers, `name{zone="package"}`). The defaults are current Kepler's (0.10 and later,
node label `node_name`): `kepler_platform_watts` (whole-node power from the BMC over Redfish, one series per
BMC power-control entry) and `kepler_node_cpu_joules_total{zone="package"}` (RAPL); `kepler="0.7"` selects
Kepler 0.7's names (KEPLER_07_METRICS). The exporters must agree on node label values (relabel them if one
says "gpu-node-1" and another "10.0.0.5:9100").

A power metric whose name ends in `_total` is a joules counter read as `rate(...)` = watts; any other name
is a gauge in watts. Per bin the rule matches the other stores (core.stores.window): the node's power
(`node_power`: a counter summed over its series, a gauge the largest series, since Kepler's power-control
entries include sub-systems of the whole) when present, else the sum of the device powers the bin has
(GPUs plus CPU packages); GPU utilization is the mean over GPUs; temperature the hottest GPU; CPU
utilization 100 * (1 - idle share of node_cpu_seconds_total); memory usage 100 * (1 - MemAvailable /
MemTotal).

GPU series are first reduced to one per physical GPU (`max without` the labels dcgm-exporter adds per MIG instance
and per Kubernetes pod: GPU_I_ID, GPU_I_PROFILE, pod, namespace, container and their `exported_` forms, and the
scrape's own: instance, job, endpoint, service; never the node label): with MIG every instance repeats the whole
GPU's power, a GPU moving to another pod has two series in that bin, and so does every GPU in the bin its exporter
restarted in (a new pod address) or always, where two scrape jobs read the same exporter.
Percentages are clamped to 0..100 (a counter's rate can make the idle share pass 1) and non-finite values dropped.

As in the other stores, a partial sum is no node power: a bin without the GPUs' (or the CPUs') power while they
reported within the look-back (core.stores.window EXPECT_DEVICE_S) is a gap, not a drop, and so is a bin without
the node's power while it reported within it (not the lower device sum); `latest()` follows the same rule (a node
has no latest power while one it reported within the look-back is missing now). The device metrics are summed per
node in PromQL, so one GPU of several missing from a bin cannot be told from a lower draw.

Each bin starting at t is evaluated at t + step with `avg_over_time(...[step])` (gauges) or
`rate(...[max(step, min_rate_window_s)])` (counters; a rate needs two scrapes in its range). A range selector
takes (t, t + step] (Prometheus 3, VictoriaMetrics; [t, t + step] in Prometheus 2), so a sample stamped exactly on a
bin edge counts in the bin before it, where the other stores' [t, t + step) count it in the bin after; the first
and last bins are not clipped to the window's start and end. Scrapes are rarely on the edge to the millisecond.
`latest()` sees series that reported within Prometheus' look-back delta (5 minutes by default); an instant
query selects samples at or before its evaluation time (now), so a future-stamped sample never counts.

A window is 8 range queries per 10,000 bins, made one after another; `latest()` is 9 instant queries, `nodes()` 3. A
window (what the API and the scaling controller read), `latest()` and `nodes()` each get `timeout_s` for all their
queries, so a Prometheus that answers each just in time does not hold a reader for 8 timeouts after its caller gave
up; a retraining's `long_window` and `nodes(since)` (weeks of raw series, whose caller waits 120 s) get LONG_READ_S
for all of theirs.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from core.http_client import open_url, split_login
from core.settings import without_url_password
from core.stores.base import NodeLatest, ReadOnlyStore, StoreUnavailable, TelemetryStore
from core.stores.window import EXPECT_DEVICE_S, absent_but_expected, bin_starts, check_window, to_ms
from core.telemetry import TelemetrySample
from core.telemetry_csv import CANONICAL_COLUMNS
from core.telemetry_screen import DEFAULT_MAX_NODE_WATTS

logger = logging.getLogger(__name__)

DEFAULT_METRICS = {
    "node_power": "kepler_platform_watts",  # or a joules counter, or a gauge in watts, e.g. node_power_watts
    "cpu_power": 'kepler_node_cpu_joules_total{zone="package"}',
    "gpu_power": "DCGM_FI_DEV_POWER_USAGE",
    "gpu_utilization": "DCGM_FI_DEV_GPU_UTIL",
    "gpu_temperature": "DCGM_FI_DEV_GPU_TEMP",
    "npu_utilization": "npu_chip_info_utilization",
    "cpu_seconds": "node_cpu_seconds_total",
    "memory_available": "node_memory_MemAvailable_bytes",
    "memory_total": "node_memory_MemTotal_bytes",
}
DEFAULT_NODE_LABELS = {
    "node_power": "node_name", "cpu_power": "node_name", "gpu_power": "Hostname", "gpu_utilization": "Hostname",
    "gpu_temperature": "Hostname", "npu_utilization": "instance", "cpu_seconds": "instance",
    "memory_available": "instance", "memory_total": "instance",
}
KEPLER_07_METRICS = {"node_power": "kepler_node_platform_joules_total", "cpu_power": "kepler_node_package_joules_total"}
KEPLER_07_NODE_LABELS = {"node_power": "instance", "cpu_power": "instance"}
KEPLER_NAMES = {"current": ({}, {}), "0.7": (KEPLER_07_METRICS, KEPLER_07_NODE_LABELS)}
DEVICE_POWER = ("gpu_power", "cpu_power")  # summed when a node has no node_power
MAX_POINTS = 10_000  # Prometheus refuses query_range with more than 11,000 points per series
LONG_READ_S = 110.0  # a long window's queries, all told: within the 120 s its caller waits (RETRAINING_TIMEOUT_S)
GPU_KEYS = ("gpu_power", "gpu_utilization", "gpu_temperature")
PER_GPU_DUPLICATES = ("GPU_I_ID", "GPU_I_PROFILE", "pod", "namespace", "container", "exported_pod",
                      "exported_namespace", "exported_container",  # MIG instances, the pods using a GPU
                      "instance", "job", "endpoint", "service")  # an exporter restarted (a new pod address), or
# scraped by two jobs (a PodMonitor and a ServiceMonitor): labels that split one GPU into several series


class PrometheusStore(TelemetryStore):
    """Windows and latest power read from a Prometheus HTTP API (or anything that speaks it)."""

    read_only = True

    def __init__(self, url: str, metric_names: Mapping[str, str] | None = None,
                 node_labels: Mapping[str, str] | None = None, *, kepler: str = "current",
                 min_rate_window_s: int = 120, timeout_s: float = 10.0,
                 max_node_watts: float = DEFAULT_MAX_NODE_WATTS) -> None:
        for given in (metric_names or {}, node_labels or {}):
            unknown = sorted(set(given) - set(DEFAULT_METRICS))
            if unknown:
                raise ValueError(f"unknown Prometheus metric key(s) {unknown}; known: {sorted(DEFAULT_METRICS)}")
        if kepler not in KEPLER_NAMES:
            raise ValueError(f"unknown Kepler metric names {kepler!r}; choose from {sorted(KEPLER_NAMES)}")
        kepler_metrics, kepler_labels = KEPLER_NAMES[kepler]
        self.url, self._auth = split_login(url.rstrip("/"))
        self.shown_url = self.url  # for logs and errors: no login, a user alone (an API key) included
        self.metrics = {**DEFAULT_METRICS, **kepler_metrics, **(metric_names or {})}
        self.labels = {**DEFAULT_NODE_LABELS, **kepler_labels, **(node_labels or {})}
        self._selectors = {key: _split_selector(key, text) for key, text in self.metrics.items()}
        self.min_rate_window_s = min_rate_window_s
        self.timeout_s = timeout_s
        self.long_read_s = LONG_READ_S
        self.max_node_watts = max_node_watts
        logger.info("telemetry store: Prometheus at %s (read-only)", self.shown_url)

    def write(self, samples: Sequence[TelemetrySample]) -> int:
        raise ReadOnlyStore("PrometheusStore is read-only: Prometheus gets its data by scraping exporters "
                            "(Kepler, dcgm-exporter, node-exporter); write collector samples to SQLite or InfluxDB")

    # --- PromQL -------------------------------------------------------------------------------------
    def _sel(self, key: str, node_id: str | None, extra: str = "") -> str:
        name, own = self._selectors[key]
        matchers = [f'{self.labels[key]}="{_quote(node_id)}"'] if node_id is not None else []
        matchers += [m for m in (own, extra) if m]
        return f"{name}{{{','.join(matchers)}}}"

    def _power_expr(self, key: str, node_id: str | None, step_s: int | None) -> str:
        """Watts per node of a power metric: a joules counter's rate summed over the node's series; a gauge's
        series summed (devices) or, for node_power, the largest (a whole and its parts)."""
        label = self.labels[key]
        if self._selectors[key][0].endswith("_total"):
            rate = f"rate({self._sel(key, node_id)}[{self._rate_s(step_s)}s])"
            return f"sum by ({label}) ({_per_gpu(rate, label) if key in GPU_KEYS else rate})"
        return f"{'max' if key == 'node_power' else 'sum'} by ({label}) ({self._gauge(key, node_id, step_s)})"

    def _gauge(self, key: str, node_id: str | None, step_s: int | None, extra: str = "") -> str:
        sel = self._sel(key, node_id, extra)
        gauge = f"avg_over_time({sel}[{step_s}s])" if step_s else sel
        return _per_gpu(gauge, self.labels[key]) if key in GPU_KEYS else gauge

    def _rate_s(self, step_s: int | None) -> int:
        return max(step_s or 0, self.min_rate_window_s)

    def _window_exprs(self, node_id: str, step_s: int) -> dict[str, str]:
        lab = self.labels
        idle = self._sel("cpu_seconds", node_id, 'mode="idle"')
        cpu_idle = f"rate({idle}[{self._rate_s(step_s)}s])"
        available = f"sum by ({lab['memory_available']}) ({self._gauge('memory_available', node_id, step_s)})"
        total = f"sum by ({lab['memory_total']}) ({self._gauge('memory_total', node_id, step_s)})"
        return {
            **{key: self._power_expr(key, node_id, step_s) for key in ("node_power", *DEVICE_POWER)},
            "gpu_utilization": _percent(f"avg by ({lab['gpu_utilization']}) "
                                        f"({self._gauge('gpu_utilization', node_id, step_s)})"),
            "temperature": f"max by ({lab['gpu_temperature']}) ({self._gauge('gpu_temperature', node_id, step_s)})",
            "npu_utilization": _percent(f"avg by ({lab['npu_utilization']}) "
                                        f"({self._gauge('npu_utilization', node_id, step_s)})"),
            "cpu_utilization": _percent(f"100 * (1 - avg by ({lab['cpu_seconds']}) ({cpu_idle}))"),
            "memory_usage": _percent(f"100 * (1 - {available} / on() {total})"),
        }

    # --- reads --------------------------------------------------------------------------------------
    def window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        return self._window(node_id, start, end, step_s, _Budget(self.timeout_s))

    def long_window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        return self._window(node_id, start, end, step_s, _Budget(self.long_read_s))

    def _window(self, node_id: str, start: datetime, end: datetime, step_s: int, budget: _Budget) -> pd.DataFrame:
        start_ms, end_ms = check_window(start, end, step_s)
        bins = bin_starts(start_ms, end_ms, step_s)
        series = {name: self._range(expr, bins, step_s, budget)
                  for name, expr in self._window_exprs(node_id, step_s).items()}
        parts = [series.pop(key) for key in DEVICE_POWER]
        devices = parts[0].add(parts[1], fill_value=0.0)  # NaN: neither
        partial = np.logical_or.reduce([absent_but_expected(part.notna().to_numpy(), step_s) for part in parts])
        devices[partial] = np.nan  # a device that reported just before is missing: a gap, not a drop (module rule)
        node = series.pop("node_power")
        node_gap = absent_but_expected(node.notna().to_numpy(), step_s)  # the node's meter silent for a while
        power = self._plausible(node.where(node.notna() | node_gap, devices))
        frame = pd.DataFrame({"timestamp": pd.to_datetime(bins, unit="s", utc=True).astype("datetime64[ns, UTC]"),
                              "node_id": node_id, "power_watts": power.to_numpy(), "workload_type": np.nan})
        for name, values in series.items():
            frame[name] = values.to_numpy()
        return frame[list(CANONICAL_COLUMNS)]

    def _plausible(self, watts: pd.Series) -> pd.Series:
        """Power a node can draw, NaN where not: below 0 W or above `max_node_watts` (a series' BMC sentinel of
        65,535 W, a broken exporter), which the collectors' screen refuses on the way in (core/telemetry_screen.py)
        and which would otherwise be the node's power for forecasts and scaling, or fail a retraining's read."""
        return watts.where((watts >= 0) & (watts <= self.max_node_watts))

    def _range(self, expr: str, bins: np.ndarray, step_s: int, budget: _Budget) -> pd.Series:
        """Values of a one-series expression per bin (evaluated at each bin's end), NaN where absent; the queries
        end within the read's `budget`."""
        stamps: list[float] = []
        values: list[float] = []
        for begin in range(0, len(bins), MAX_POINTS):
            part = bins[begin:begin + MAX_POINTS]
            data = self._get("/api/v1/query_range", {"query": expr, "start": int(part[0]) + step_s,
                                                     "end": int(part[-1]) + step_s, "step": f"{step_s}s"},
                             budget)
            for result in data["result"]:
                kept = [(float(stamp), float(value)) for stamp, value in result["values"]
                        if np.isfinite(float(value))]  # e.g. +Inf from a memory total of 0
                stamps += [stamp for stamp, _ in kept]
                values += [value for _, value in kept]
        found = pd.Series(values, index=np.round(stamps).astype(np.int64) - step_s, dtype=float)
        return found[~found.index.duplicated(keep="last")].reindex(bins)

    def latest(self, node_id: str | None = None) -> list[NodeLatest]:
        now, budget = datetime.now(UTC), _Budget(self.timeout_s)
        found: dict[str, dict[str, tuple[float, float]]] = {}  # node -> power key -> (watts, Unix time)
        expected: dict[str, set[str]] = {}  # node -> the power keys it reported within EXPECT_DEVICE_S
        for key in ("node_power", *DEVICE_POWER):
            label, selector = self.labels[key], self._sel(key, node_id)
            stamps = self._instant(f"min by ({label}) (timestamp({selector}))", label, budget)
            for node in self._instant(f"count by ({label}) (last_over_time({selector}[{EXPECT_DEVICE_S}s]))", label,
                                      budget):
                expected.setdefault(node, set()).add(key)
            for node, watts in self._instant(self._power_expr(key, node_id, None), label, budget).items():
                if node and node in stamps:  # a series without the node label belongs to no node
                    found.setdefault(node, {})[key] = (watts, stamps[node])
        result = []
        for node, readings in sorted(found.items()):
            parts = _latest_parts(readings, expected.get(node, set()))
            if not parts:
                continue
            moment, watts = datetime.fromtimestamp(min(stamp for _, stamp in parts), tz=UTC), sum(w for w, _ in parts)
            if not 0 <= watts <= self.max_node_watts:  # no reading now (`_plausible`): the controller holds, as for
                continue  # a node whose readings stopped
            result.append(NodeLatest(node_id=node, timestamp=moment, power_watts=watts,
                                     age_s=max(0.0, (now - moment).total_seconds())))
        return result

    def _instant(self, expr: str, label: str, budget: _Budget) -> dict[str, float]:
        data = self._get("/api/v1/query", {"query": expr}, budget)
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in data["result"]
                if np.isfinite(float(r["value"][1]))}

    def nodes(self, since: datetime | None = None) -> list[str]:
        found: set[str] = set()
        # from `since` to now where given (VictoriaMetrics looks back only a day by default, Prometheus everywhere)
        span = {} if since is None else {"start": f"{to_ms(since) / 1000:.3f}", "end": f"{time.time():.3f}"}
        budget = _Budget(self.timeout_s if since is None else self.long_read_s)  # since: a retraining's weeks
        for key in ("node_power", *DEVICE_POWER):
            found.update(self._get(f"/api/v1/label/{self.labels[key]}/values",
                                   {"match[]": self._sel(key, None), **span}, budget))
        return sorted(found - {""})

    def _get(self, path: str, params: dict, budget: _Budget) -> dict | list:
        """The answer's `data`, within `budget`: the time all the read's queries share."""
        timeout = budget.left()
        if timeout <= 0:
            raise StoreUnavailable(f"Prometheus at {self.shown_url} too slow: a read's queries took over "
                                   f"{budget.seconds:g} s")
        request = urllib.request.Request(f"{self.url}{path}?{urllib.parse.urlencode(params)}", headers=self._auth)
        try:
            with open_url(request, timeout=timeout) as response:  # no redirect: the login stays here
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise StoreUnavailable(f"Prometheus {path} answered HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:  # a cut-off body too
            reason = without_url_password(str(exc))
            raise StoreUnavailable(f"Prometheus at {self.shown_url} unreachable: {reason}") from exc
        if not isinstance(body, dict) or "data" not in body or body.get("status") != "success":
            error = body.get("error", "no data") if isinstance(body, dict) else "not a JSON object"
            raise StoreUnavailable(f"Prometheus {path} failed: {str(error)[:500]}")
        return body["data"]

    def __repr__(self) -> str:
        return f"PrometheusStore({self.shown_url!r})"


def _latest_parts(readings: Mapping[str, tuple[float, float]], expected: set[str]) -> list[tuple[float, float]]:
    """The (watts, time) readings a node's latest power sums, by the window rule: its node power, else its device
    powers; none while a power it reported within EXPECT_DEVICE_S is missing now (a gap, not a drop)."""
    if "node_power" in readings:
        return [readings["node_power"]]
    if any(key in expected and key not in readings for key in ("node_power", *DEVICE_POWER)):
        return []
    return list(readings.values())


def _split_selector(key: str, text: str) -> tuple[str, str]:
    """`name` or `name{matchers}` -> (name, matchers)."""
    name, brace, rest = text.strip().partition("{")
    if brace and not rest.endswith("}"):
        raise ValueError(f"Prometheus metric {key} {text!r}: label matchers must end with '}}'")
    return name.strip(), rest[:-1].strip() if brace else ""


def _per_gpu(expr: str, node_label: str) -> str:
    """One series per GPU: the copies MIG instances, pod labels and scrapes make are merged (module docstring); the
    node's own label is kept, whatever it is."""
    return f"max without ({', '.join(label for label in PER_GPU_DUPLICATES if label != node_label)}) ({expr})"


def _percent(expr: str) -> str:
    return f"clamp({expr}, 0, 100)"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Budget:
    """The time one read's queries share, from its start."""

    def __init__(self, seconds: float):
        self.seconds, self._deadline = seconds, time.monotonic() + seconds

    def left(self) -> float:
        return self._deadline - time.monotonic()
