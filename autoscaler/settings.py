"""The autoscaler's settings: the config file's `auto_scaling` and `workloads` keys, how the controller actor is
built (`ControllerSettings`, from the app's args), and the controller's environment.

Every float of these sections refuses NaN and ±Infinity (`FiniteSection`); `auto_scaling.max_replicas_cap` and
`auto_scaling.max_policies` bound what a policy (and the API) may ask for.

Environment (`ControllerEnvironment`): RAY_DASHBOARD_URL (default of the app's `autoscaler.ray_dashboard_url`),
KUBECONFIG (kubeconfig when none is given) and KUBERNETES_SERVICE_HOST (set in a pod: use its service account).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.names import POWER_APP
from core.settings import Duration, EnvSettings, Section, Workloads, load_keys

DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8265"
REPLICAS_LIMIT = 10_000
"""The most replicas any policy may name, whatever `max_replicas_cap` says (the schema's own bound)."""
DEFAULT_MAX_REPLICAS_CAP = 100
DEFAULT_MAX_POLICIES = 200
DEFAULT_MAX_EVENTS = 100_000  # scaling events kept (one per policy a tick: 200 policies at 30 s, about 4 hours)


class FiniteSection(Section):
    """A config section whose floats refuse NaN and ±Infinity (JSON `Infinity` would be stored as null)."""

    model_config = ConfigDict(allow_inf_nan=False)


class PowerBasedScalingConfig(FiniteSection):
    """Reactive scaling on measured power, in percent of the per-node budget."""

    enabled: bool = Field(True, strict=True)
    # W per node; under 1 W a node's share of it overflows the counts (an infinite share at 5e-324 W)
    max_power_budget: float = Field(10000.0, ge=1, le=1e6, strict=True)
    scale_out_threshold: float = Field(80.0, gt=0, le=100, strict=True)  # a new policy's: at least 1 (ScalingPolicy)
    scale_in_threshold: float = Field(50.0, ge=0, lt=100, strict=True)
    cooldown_period: Duration = 300
    idle_power_watts: float | None = Field(
        None, ge=0, le=1e6, strict=True,
        description="what one of the target's nodes draws with none of its load (idle accelerators, host, fans): "
                    "the part of a node's power that does not move when replicas are added or removed; a scale-out "
                    "is sized on the rest only (a scale-in counts every watt either way, for headroom). Left out: "
                    "every watt is counted as load that re-spreads, the HPA's proportional rule, which undersizes a "
                    "scale-out where nodes idle high")
    measure_idle_power: bool = Field(
        False, strict=True,
        description="the controller measures the idle draw of the target's nodes from their telemetry (the median "
                    "power of their readings with nothing running: autoscaler/idle_draw.py) and uses the lowest in "
                    "place of idle_power_watts; idle_power_watts (or every watt, when left out) stands in until a "
                    "node has been measured")

    @model_validator(mode="after")
    def _check_thresholds(self) -> PowerBasedScalingConfig:
        if self.scale_in_threshold >= self.scale_out_threshold:
            raise ValueError(f"scale_in_threshold ({self.scale_in_threshold:g}) must be below "
                             f"scale_out_threshold ({self.scale_out_threshold:g})")
        if self.idle_power_watts is not None and self.idle_share >= self.scale_out_threshold:  # as `fewest` tests it
            out_watts = self.max_power_budget * self.scale_out_threshold / 100.0
            raise ValueError(f"idle_power_watts ({self.idle_power_watts:g} W) must be below the scale-out threshold "
                             f"({out_watts:g} W): no replica count brings an idle node under it")
        return self

    @property
    def idle_share(self) -> float:
        """`idle_power_watts` in percent of the budget (0 when left out)."""
        return (self.idle_power_watts or 0.0) / self.max_power_budget * 100.0

    def spread(self, share: float, replicas: int, count: int, *, idle: bool = True) -> float:
        """Each node's share of the budget when the load read as `share` per node at `replicas` replicas is spread
        over `count`: the idle share stays on every node, the rest re-spreads (without `idle`: every watt does)."""
        still = self.idle_share if idle else 0.0
        return still + max(share - still, 0.0) * replicas / count

    def fewest(self, share: float, replicas: int, limit: float, *, below: bool = False, guard: bool = True,
               idle: bool = True) -> int:
        """The fewest replicas (at least 1; 0 from 0 replicas: no load to spread) whose `spread` of `share` is at
        most `limit` (`below`: under it), REPLICAS_LIMIT + 1 when it is past REPLICAS_LIMIT; `limit` above the idle
        share. Without `guard`, the count the division gives, even where float rounding leaves its spread a hair over
        `limit` (the proportional scale-out's count)."""
        if replicas == 0:
            return 0
        still = self.idle_share if idle else 0.0
        if limit <= still:
            raise ValueError(f"no replica count brings a node idling at {still:.1f}% under {limit:g}%")
        exact = max(share - still, 0.0) * replicas / (limit - still)
        if not exact < REPLICAS_LIMIT:  # more than any target may have (every caller keeps to max_replicas): the
            return REPLICAS_LIMIT + 1  # guard below would step a float too large to move (or ceil an infinity)
        count = max(math.floor(exact) + 1 if below else math.ceil(exact), 1)
        while guard and (self.spread(share, replicas, count, idle=idle) >= limit if below
                         else self.spread(share, replicas, count, idle=idle) > limit):
            count += 1
        return count


MIN_CONFIDENCE = 0.5  # a bound at a level at most this is no bound above the forecast's median

class PredictiveScalingConfig(FiniteSection):
    """Scaling ahead of forecast power."""

    enabled: bool = Field(True, strict=True)
    lookahead_minutes: int = Field(30, ge=1, le=7 * 24 * 60, strict=True)
    confidence_threshold: float = Field(0.8, gt=0, lt=1, strict=True)
    online_bound: bool = Field(True, strict=True, description="correct the forecast's peak bound online by how "
                                                              "often this policy's earlier bounds were exceeded "
                                                              "(autoscaler/peak_tracking.py)")


class LiveAccuracyConfig(FiniteSection):
    """How the controller scores its forecasts against the power measured later (autoscaler/live_accuracy.py),
    and when it stops trusting a node's forecasts: live interval coverage over at least `min_points` scored points
    and `min_bins` distinct measured bins below the forecast's nominal coverage minus `coverage_margin` (then that
    node's policies use measured power, until coverage is back above the nominal minus half the margin)."""

    window: Annotated[Duration, Field(ge=60, le=7 * 86400)] = 3600
    hit_tolerance: float = Field(0.1, gt=0, lt=1, description="a hit: the actual within this fraction of the point, "
                                                              "for forecasts that do not carry their model's band")
    min_points: int = Field(100, ge=1)
    min_bins: int = Field(20, ge=1, description="distinct measured bins among the points (a window of an hour at "
                                                 "a 60 s step holds 60)")
    coverage_margin: float = Field(0.2, gt=0, lt=1)
    fallback: bool = True
    max_pending_forecasts: int = Field(10_000, ge=1, le=1_000_000)


class AutoScalingConfig(FiniteSection):
    """Defaults for every policy, the controller's tick interval, limits, and the policies declared in the file.

    Each entry of `policies` is an `autoscaler.schema.ScalingPolicy` whose `power_based` and
    `predictive_scaling` keys override the defaults above; `autoscaler.policy_config.policies_from_config`
    validates them (and `serve run` refuses a file with an invalid policy). `max_replicas_cap` bounds every
    policy's `max_replicas` (a stored policy above a lowered cap is reported and skipped); `max_policies` bounds
    how many policies the controller holds (the API refuses one more); `max_events` how many events it keeps (the
    oldest are deleted, about every 1,000 events).
    """

    power_based: PowerBasedScalingConfig = PowerBasedScalingConfig()
    predictive_scaling: PredictiveScalingConfig = PredictiveScalingConfig()
    evaluation_interval: Annotated[Duration, Field(ge=1)] = 30
    max_replicas_cap: int = Field(DEFAULT_MAX_REPLICAS_CAP, ge=1, le=REPLICAS_LIMIT)
    max_policies: int = Field(DEFAULT_MAX_POLICIES, ge=1, le=10_000)
    max_events: int = Field(DEFAULT_MAX_EVENTS, ge=1000, le=100_000_000)
    live_accuracy: LiveAccuracyConfig = LiveAccuracyConfig()
    policies: tuple[dict[str, Any], ...] = ()

    @field_validator("power_based")
    @classmethod
    def _defaults_a_new_policy_may_take(cls, power: PowerBasedScalingConfig) -> PowerBasedScalingConfig:
        """A default every policy written from now on inherits is checked as such a policy's would be
        (ScalingPolicy): refused when the file loads, not in a 422 about a field the client never sent."""
        if power.scale_out_threshold < 1:
            raise ValueError(f"scale_out_threshold ({power.scale_out_threshold:g}%) must be at least 1%")
        if power.idle_power_watts is not None and 0 < power.scale_in_threshold <= power.idle_share:
            in_watts = power.max_power_budget * power.scale_in_threshold / 100.0
            raise ValueError(f"idle_power_watts ({power.idle_power_watts:g} W) must be below the scale-in threshold "
                             f"({in_watts:g} W): a node never draws less than its idle power")
        return power

    @field_validator("predictive_scaling")
    @classmethod
    def _a_level_a_new_policy_may_take(cls, predictive: PredictiveScalingConfig) -> PredictiveScalingConfig:
        """As `_defaults_a_new_policy_may_take`, for the look-ahead's probability level."""
        if predictive.confidence_threshold <= MIN_CONFIDENCE:
            raise ValueError(f"confidence_threshold ({predictive.confidence_threshold:g}) must be above "
                             f"{MIN_CONFIDENCE:g}: at or under it, the bound lies at or below the expected power")
        return predictive


class AutoscalerConfig(Section):
    """The config file's keys the autoscaler reads."""

    auto_scaling: AutoScalingConfig = AutoScalingConfig()
    workloads: Workloads = {}


def load_autoscaler_config(path: str | Path | None = None,
                           environ: Mapping[str, str] | None = None) -> AutoscalerConfig:
    """The autoscaler's keys of the config file (found as `core.settings.config_path` says). Raises ConfigError."""
    return load_keys(AutoscalerConfig, path, environ)


class ControllerSettings(BaseModel):
    """How the controller actor is built (from the app's `autoscaler` args)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    state_file: str
    config_path: str | None = None
    power_app_name: str = POWER_APP
    ray_dashboard_url: str = DEFAULT_DASHBOARD_URL
    kubeconfig: str | None = None
    interval_s: float | None = Field(None, gt=0, description="override of auto_scaling.evaluation_interval")

    def fingerprint(self, config: AutoscalerConfig) -> str:
        """A digest of these settings and the config file's autoscaler keys: the app's bootstrap replaces a
        controller that was started with another one (a redeploy with new settings)."""
        return hashlib.sha256((self.model_dump_json() + config.model_dump_json()).encode()).hexdigest()[:16]


class ControllerEnvironment(EnvSettings):
    """The scaling controller's environment."""

    ray_dashboard_url: str = Field(DEFAULT_DASHBOARD_URL, alias="RAY_DASHBOARD_URL")
    kubeconfig: str | None = Field(None, alias="KUBECONFIG")
    kubernetes_service_host: str | None = Field(None, alias="KUBERNETES_SERVICE_HOST")

    @property
    def in_cluster(self) -> bool:
        """True inside a Kubernetes pod (its service account can be used)."""
        return bool(self.kubernetes_service_host)
