"""PrometheusStore: read-only node windows from metrics Kepler, dcgm-exporter and node-exporter collect.

Metric and node-label names are configurable (`metric_names`, `node_labels`, keyed as in DEFAULT_METRICS);
the exporters must agree on node label values (relabel them if one says "gpu-node-1" and another
"10.0.0.5:9100"). A power metric whose name ends in `_total` is a joules counter read as
`rate(...)` = watts (Kepler); any other name is a gauge in watts. Per bin the rule matches the other
stores (core.stores.window): node power when present, else the sum of GPU powers; GPU utilization is
the mean over GPUs; temperature the hottest GPU; CPU utilization 100 * (1 - idle share of
node_cpu_seconds_total); memory usage 100 * (1 - MemAvailable / MemTotal).

Each bin [t, t + step) is evaluated at t + step with `avg_over_time(...[step])` (gauges) or
`rate(...[max(step, min_rate_window_s)])` (counters; a rate needs two scrapes in its range).
`latest()` sees series that reported within Prometheus' look-back delta (5 minutes by default); an instant
query selects samples at or before its evaluation time (now), so a future-stamped sample never counts.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from core.stores.base import NodeLatest, ReadOnlyStore, StoreUnavailable, TelemetryStore
from core.stores.window import bin_starts, check_window
from core.telemetry import TelemetrySample
from core.telemetry_csv import CANONICAL_COLUMNS

logger = logging.getLogger(__name__)

DEFAULT_METRICS = {
    "node_power": "kepler_node_platform_joules_total",  # or a gauge in watts, e.g. node_power_watts
    "gpu_power": "DCGM_FI_DEV_POWER_USAGE",
    "gpu_utilization": "DCGM_FI_DEV_GPU_UTIL",
    "gpu_temperature": "DCGM_FI_DEV_GPU_TEMP",
    "npu_utilization": "npu_chip_info_utilization",
    "cpu_seconds": "node_cpu_seconds_total",
    "memory_available": "node_memory_MemAvailable_bytes",
    "memory_total": "node_memory_MemTotal_bytes",
}
DEFAULT_NODE_LABELS = {
    "node_power": "instance", "gpu_power": "Hostname", "gpu_utilization": "Hostname", "gpu_temperature": "Hostname",
    "npu_utilization": "instance", "cpu_seconds": "instance", "memory_available": "instance",
    "memory_total": "instance",
}
MAX_POINTS = 10_000  # Prometheus refuses query_range with more than 11,000 points per series


class PrometheusStore(TelemetryStore):
    """Windows and latest power read from a Prometheus HTTP API (or anything that speaks it)."""

    read_only = True

    def __init__(self, url: str, metric_names: Mapping[str, str] | None = None,
                 node_labels: Mapping[str, str] | None = None, *, min_rate_window_s: int = 120,
                 timeout_s: float = 10.0) -> None:
        for given in (metric_names or {}, node_labels or {}):
            unknown = sorted(set(given) - set(DEFAULT_METRICS))
            if unknown:
                raise ValueError(f"unknown Prometheus metric key(s) {unknown}; known: {sorted(DEFAULT_METRICS)}")
        self.url = url.rstrip("/")
        self.metrics = {**DEFAULT_METRICS, **(metric_names or {})}
        self.labels = {**DEFAULT_NODE_LABELS, **(node_labels or {})}
        self.min_rate_window_s = min_rate_window_s
        self.timeout_s = timeout_s
        logger.info("telemetry store: Prometheus at %s (read-only)", self.url)

    def write(self, samples: Sequence[TelemetrySample]) -> int:
        raise ReadOnlyStore("PrometheusStore is read-only: Prometheus gets its data by scraping exporters "
                            "(Kepler, dcgm-exporter, node-exporter); write collector samples to SQLite or InfluxDB")

    # --- PromQL -------------------------------------------------------------------------------------
    def _sel(self, key: str, node_id: str | None, extra: str = "") -> str:
        matchers = [f'{self.labels[key]}="{_quote(node_id)}"'] if node_id is not None else []
        matchers += [extra] if extra else []
        return f"{self.metrics[key]}{{{','.join(matchers)}}}"

    def _power_expr(self, node_id: str | None, step_s: int | None) -> str:
        label = self.labels["node_power"]
        if self.metrics["node_power"].endswith("_total"):
            return f"sum by ({label}) (rate({self._sel('node_power', node_id)}[{self._rate_s(step_s)}s]))"
        return f"sum by ({label}) ({self._gauge('node_power', node_id, step_s)})"

    def _gauge(self, key: str, node_id: str | None, step_s: int | None, extra: str = "") -> str:
        sel = self._sel(key, node_id, extra)
        return f"avg_over_time({sel}[{step_s}s])" if step_s else sel

    def _rate_s(self, step_s: int | None) -> int:
        return max(step_s or 0, self.min_rate_window_s)

    def _window_exprs(self, node_id: str, step_s: int) -> dict[str, str]:
        lab = self.labels
        idle = self._sel("cpu_seconds", node_id, 'mode="idle"')
        cpu_idle = f"rate({idle}[{self._rate_s(step_s)}s])"
        available = f"sum by ({lab['memory_available']}) ({self._gauge('memory_available', node_id, step_s)})"
        total = f"sum by ({lab['memory_total']}) ({self._gauge('memory_total', node_id, step_s)})"
        return {
            "node_power": self._power_expr(node_id, step_s),
            "gpu_power": f"sum by ({lab['gpu_power']}) ({self._gauge('gpu_power', node_id, step_s)})",
            "gpu_utilization": f"avg by ({lab['gpu_utilization']}) ({self._gauge('gpu_utilization', node_id, step_s)})",
            "temperature": f"max by ({lab['gpu_temperature']}) ({self._gauge('gpu_temperature', node_id, step_s)})",
            "npu_utilization": f"avg by ({lab['npu_utilization']}) ({self._gauge('npu_utilization', node_id, step_s)})",
            "cpu_utilization": f"100 * (1 - avg by ({lab['cpu_seconds']}) ({cpu_idle}))",
            "memory_usage": f"100 * (1 - {available} / on() {total})",
        }

    # --- reads --------------------------------------------------------------------------------------
    def window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        start_ms, end_ms = check_window(start, end, step_s)
        bins = bin_starts(start_ms, end_ms, step_s)
        series = {name: self._range(expr, bins, step_s) for name, expr in self._window_exprs(node_id, step_s).items()}
        power = series.pop("node_power").fillna(series.pop("gpu_power"))
        frame = pd.DataFrame({"timestamp": pd.to_datetime(bins, unit="s", utc=True).astype("datetime64[ns, UTC]"),
                              "node_id": node_id, "power_watts": power.to_numpy(), "workload_type": np.nan})
        for name, values in series.items():
            frame[name] = values.to_numpy()
        return frame[list(CANONICAL_COLUMNS)]

    def _range(self, expr: str, bins: np.ndarray, step_s: int) -> pd.Series:
        """Values of a one-series expression per bin (evaluated at each bin's end), NaN where absent."""
        stamps: list[float] = []
        values: list[float] = []
        for begin in range(0, len(bins), MAX_POINTS):
            part = bins[begin:begin + MAX_POINTS]
            data = self._get("/api/v1/query_range", {"query": expr, "start": int(part[0]) + step_s,
                                                     "end": int(part[-1]) + step_s, "step": f"{step_s}s"})
            for result in data["result"]:
                stamps += [float(stamp) for stamp, _ in result["values"]]
                values += [float(value) for _, value in result["values"]]
        found = pd.Series(values, index=np.round(stamps).astype(np.int64) - step_s, dtype=float)
        return found[~found.index.duplicated(keep="last")].reindex(bins)

    def latest(self, node_id: str | None = None) -> list[NodeLatest]:
        now = datetime.now(UTC)
        found: dict[str, tuple[float, float]] = {}
        for key, expr in (("node_power", self._power_expr(node_id, None)),
                          ("gpu_power", f"sum by ({self.labels['gpu_power']}) ({self._sel('gpu_power', node_id)})")):
            label = self.labels[key]
            stamps = self._instant(f"min by ({label}) (timestamp({self._sel(key, node_id)}))", label)
            for node, watts in self._instant(expr, label).items():
                if node not in found and node in stamps:
                    found[node] = (watts, stamps[node])
        result = []
        for node in sorted(found):
            watts, stamp = found[node]
            moment = datetime.fromtimestamp(stamp, tz=UTC)
            result.append(NodeLatest(node_id=node, timestamp=moment, power_watts=watts,
                                     age_s=max(0.0, (now - moment).total_seconds())))
        return result

    def _instant(self, expr: str, label: str) -> dict[str, float]:
        data = self._get("/api/v1/query", {"query": expr})
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in data["result"]
                if np.isfinite(float(r["value"][1]))}

    def nodes(self) -> list[str]:
        found: set[str] = set()
        for key in ("node_power", "gpu_power"):
            found.update(self._get(f"/api/v1/label/{self.labels[key]}/values", {"match[]": self.metrics[key]}))
        return sorted(found)

    def _get(self, path: str, params: dict) -> dict | list:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise StoreUnavailable(f"Prometheus {path} answered HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise StoreUnavailable(f"Prometheus at {self.url} unreachable: {exc}") from exc
        if body.get("status") != "success":
            raise StoreUnavailable(f"Prometheus {path} failed: {body.get('error', body)}")
        return body["data"]

    def __repr__(self) -> str:
        return f"PrometheusStore({self.url!r})"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
