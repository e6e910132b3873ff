"""Every metric the service exports, with the series names Prometheus stores (docs/operations.md lists them).

The metrics are Ray application metrics (`ray.util.metrics`): every Ray node serves those of its processes on
its metrics export port (8080 under KubeRay, scraped by deploy/base/podmonitor.yaml). Ray prefixes each name
with `ray_`; a counter is stored as `<name>_total` (Ray adds `_total` unless the name already ends so), a
histogram as `<name>_bucket`, `<name>_sum` and `<name>_count`. Ray adds labels of its own (SessionName,
NodeAddress, Component, ...) to the tags listed here.

Code creates its metrics from these entries (`create`), so a name, its kind and its tags are written once;
tests/unit/core/test_metrics_catalog.py checks that no metric is created outside this list.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

logger = logging.getLogger(__name__)

PREFIX = "ray_"


class MetricKind(StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


class MetricSpec(BaseModel):
    """One exported metric: its name as created, kind, help text, tag keys (and histogram bucket bounds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: MetricKind
    description: str
    tags: tuple[str, ...]
    boundaries: tuple[float, ...] = ()

    @property
    def exported(self) -> tuple[str, ...]:
        """The series names Prometheus stores for this metric."""
        base = PREFIX + self.name
        if self.kind is MetricKind.COUNTER:
            return (base.removesuffix("_total") + "_total",)
        if self.kind is MetricKind.HISTOGRAM:
            return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
        return (base,)


# --- telemetry (collectors/metrics.py, one set per node's collector) -----------------------------------------
POWER_WATTS = MetricSpec(name="kcloud_power_watts", kind=MetricKind.GAUGE,
                         description="power draw by node, source and device (device_id node: the BMC wall reading)",
                         tags=("node_id", "source", "device_id"))
UTILIZATION_PERCENT = MetricSpec(name="kcloud_utilization_percent", kind=MetricKind.GAUGE,
                                 description="utilization by node, source and device",
                                 tags=("node_id", "source", "device_id"))
MEMORY_USAGE_PERCENT = MetricSpec(name="kcloud_memory_usage_percent", kind=MetricKind.GAUGE,
                                  description="memory in use by node, source and device (source nvml: GPU memory)",
                                  tags=("node_id", "source", "device_id"))
TELEMETRY_SAMPLES = MetricSpec(name="kcloud_telemetry_samples_total", kind=MetricKind.COUNTER,
                               description="telemetry samples accepted by a collector, by node and source",
                               tags=("node_id", "source"))
TELEMETRY_STORED = MetricSpec(name="kcloud_telemetry_stored_samples_total", kind=MetricKind.COUNTER,
                              description="telemetry samples a collector wrote to the store, by node",
                              tags=("node_id",))
TELEMETRY_BUFFERED = MetricSpec(name="kcloud_telemetry_buffered_samples", kind=MetricKind.GAUGE,
                                description="samples waiting in a collector's buffer (memory and spill), by node",
                                tags=("node_id",))
TELEMETRY_LAST_SAMPLE = MetricSpec(name="kcloud_telemetry_last_sample_timestamp_seconds", kind=MetricKind.GAUGE,
                                   description="Unix time of a node's newest accepted sample",
                                   tags=("node_id",))
TELEMETRY_REJECTED = MetricSpec(name="kcloud_telemetry_rejected_samples_total", kind=MetricKind.COUNTER,
                                description="telemetry samples rejected, by node and reason",
                                tags=("node_id", "reason"))
TELEMETRY_DROPPED = MetricSpec(name="kcloud_telemetry_dropped_samples_total", kind=MetricKind.COUNTER,
                               description="telemetry samples dropped, by node and reason",
                               tags=("node_id", "reason"))

# --- serving (deployments/) ----------------------------------------------------------------------------------
MODEL_INFERENCE_SECONDS = MetricSpec(
    name="kcloud_model_inference_seconds", kind=MetricKind.HISTOGRAM,
    description="duration of one model call (a batch of requests for the power model), by model",
    tags=("model_id",),  # not the version: Ray keeps every label set, 16 series per activation and replica
    boundaries=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
FORECAST_POWER_WATTS = MetricSpec(
    name="kcloud_forecast_power_watts", kind=MetricKind.GAUGE,
    description="a node's latest forecast from stored telemetry, for the next model step: point, lower, upper",
    tags=("node_id", "model_id", "bound"))  # not the version: Ray keeps every label set, one per activation

# --- live forecast accuracy (autoscaler/live_export.py: the controller's forecasts scored as telemetry arrives) -
_LIVE_TAGS = ("node_id",)  # the served version's (no version label: Ray keeps every label set it saw)
FORECAST_LIVE_MAE = MetricSpec(name="kcloud_forecast_live_mae_watts", kind=MetricKind.GAUGE,
                               description="mean absolute error of the controller's forecasts over the rolling "
                                           "window, per node (the served version)", tags=_LIVE_TAGS)
FORECAST_LIVE_COVERAGE = MetricSpec(name="kcloud_forecast_live_coverage", kind=MetricKind.GAUGE,
                                    description="share of actuals inside the calibrated interval over the rolling "
                                                "window, per node (the served version)", tags=_LIVE_TAGS)
FORECAST_LIVE_HIT_RATE = MetricSpec(name="kcloud_forecast_live_hit_rate", kind=MetricKind.GAUGE,
                                    description="share of actuals within the confidence tolerance of the point "
                                                "forecast over the rolling window, per node (the served version)",
                                    tags=_LIVE_TAGS)
FORECAST_LIVE_POINTS = MetricSpec(name="kcloud_forecast_live_points", kind=MetricKind.GAUGE,
                                  description="forecast points scored over the rolling window, per node (the "
                                              "served version)", tags=_LIVE_TAGS)

# --- scaling (autoscaler/actor.py DecisionMetrics) ----------------------------------------------------------
SCALING_DESIRED_REPLICAS = MetricSpec(name="kcloud_scaling_desired_replicas", kind=MetricKind.GAUGE,
                                      description="replicas each policy decided on", tags=("policy", "mode"))
SCALING_SIGNAL_WATTS = MetricSpec(name="kcloud_scaling_signal_watts", kind=MetricKind.GAUGE,
                                  description="per-node power behind each decision", tags=("policy", "signal"))
SCALING_DECISIONS = MetricSpec(name="kcloud_scaling_decisions_total", kind=MetricKind.COUNTER,
                               description="decisions by policy, action and outcome",
                               tags=("policy", "action", "actuation"))

METRICS: tuple[MetricSpec, ...] = (
    POWER_WATTS, UTILIZATION_PERCENT, MEMORY_USAGE_PERCENT, TELEMETRY_SAMPLES, TELEMETRY_STORED, TELEMETRY_BUFFERED,
    TELEMETRY_LAST_SAMPLE, TELEMETRY_REJECTED, TELEMETRY_DROPPED, MODEL_INFERENCE_SECONDS, FORECAST_POWER_WATTS,
    FORECAST_LIVE_MAE, FORECAST_LIVE_COVERAGE, FORECAST_LIVE_HIT_RATE, FORECAST_LIVE_POINTS, SCALING_DESIRED_REPLICAS,
    SCALING_SIGNAL_WATTS, SCALING_DECISIONS,
)


def exported_names() -> dict[str, MetricSpec]:
    """Every series name Prometheus stores -> its metric."""
    return {series: spec for spec in METRICS for series in spec.exported}


def create(spec: MetricSpec) -> Any | None:
    """The `ray.util.metrics` object for `spec`, or None where Ray metrics cannot be created (metrics are
    optional: a caller holding None records nothing)."""
    try:
        from ray.util import metrics

        if spec.kind is MetricKind.HISTOGRAM:
            return metrics.Histogram(spec.name, spec.description, boundaries=list(spec.boundaries),
                                     tag_keys=spec.tags)
        kind = metrics.Gauge if spec.kind is MetricKind.GAUGE else metrics.Counter
        return kind(spec.name, spec.description, tag_keys=spec.tags)
    except Exception as exc:  # noqa: BLE001 - metrics are optional
        import ray

        # outside Ray (a test, a command line) that is expected; inside it a metric missing from the dashboards is not
        log = logger.warning if ray.is_initialized() else logger.debug
        log("metric %s not created: %s", spec.name, exc)
        return None
