"""Scaling policies, the inputs of one decision, the decision itself and the events (pydantic v2).

A policy uses the seed's YAML keys (`power_based`, `predictive_scaling`) plus a target, replica bounds, step
limits (`behavior`) and a few controller knobs. Hostile values are refused with a reason naming the field: every
float refuses NaN and ±Infinity, every string is bounded, `max_replicas` is bounded by `REPLICAS_LIMIT` and, where
the validation context carries it (`policy_context`), by the config's `auto_scaling.max_replicas_cap`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from autoscaler.behavior import ScalingBehavior, WindowSeconds
from autoscaler.settings import (
    MIN_CONFIDENCE,
    REPLICAS_LIMIT,
    PowerBasedScalingConfig,
    PredictiveScalingConfig,
)
from core.settings import Duration
from core.telemetry import ID_PATTERN, MAX_ID_CHARS

Watts = Annotated[float, Field(ge=0, allow_inf_nan=False)]
SLUG_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Name = Annotated[str, Field(min_length=1, max_length=253)]  # a Serve app or deployment
NodeId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]  # as telemetry's
Label = Annotated[str, Field(min_length=1, max_length=63)]  # a KubeRay worker group
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"  # DNS-1123 subdomain
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=K8S_NAME_PATTERN)]  # a Kubernetes object
Namespace = Annotated[str, Field(min_length=1, max_length=63, pattern=SLUG_PATTERN)]  # DNS-1123 label
MAX_CLUSTER_WATTS = 1e9
MAX_REPLICAS_CAP = "max_replicas_cap"
NEW_POLICY = "new_policy"


def policy_context(max_replicas_cap: int | None = None, *, new: bool = False) -> dict[str, int | bool]:
    """The validation context (`model_validate(..., context=)`) that bounds `max_replicas` by the config's cap (None:
    no cap) and, for a policy written now (`new`: the API, a config or policy file), checks what a policy stored by
    an earlier version may fail and still be read (it was accepted then, and skipping it would stop its scale-outs
    too)."""
    context: dict[str, int | bool] = {NEW_POLICY: new}
    if max_replicas_cap is not None:
        context[MAX_REPLICAS_CAP] = max_replicas_cap
    return context


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- targets ---------------------------------------------------------------------------------------------


class RayServeTarget(_Model):
    """A deployment of a running Ray Serve application (its `num_replicas`)."""

    kind: Literal["ray_serve"] = "ray_serve"
    app: Name
    deployment: Name


class DeploymentTarget(_Model):
    """A Kubernetes Deployment, scaled through its scale subresource."""

    kind: Literal["deployment"] = "deployment"
    name: ObjectName
    namespace: Namespace = "default"


class StatefulSetTarget(_Model):
    """A Kubernetes StatefulSet, scaled through its scale subresource."""

    kind: Literal["statefulset"] = "statefulset"
    name: ObjectName
    namespace: Namespace = "default"


class RayClusterTarget(_Model):
    """One worker group of a KubeRay RayCluster (its `replicas`)."""

    kind: Literal["raycluster"] = "raycluster"
    name: ObjectName
    namespace: Namespace = "default"
    worker_group: Label


ScalingTarget = Annotated[
    RayServeTarget | DeploymentTarget | StatefulSetTarget | RayClusterTarget, Field(discriminator="kind")
]


# --- policy ----------------------------------------------------------------------------------------------


class ScalingPolicy(_Model):
    """One workload's power-aware scaling policy (docs/architecture.md).

    `power_based.max_power_budget` is watts per node of the target; thresholds are percent of it.
    `cluster_power_budget` (W, optional) caps scale-out for the target as a whole. `stale_after_s` accepts
    seconds or "2min"; telemetry older than that is treated as missing. The target's nodes are the telemetry
    node ids in `nodes`, else those the config's `workloads` map lists for `workload_id` (default: the name),
    else, for a Ray Serve target, the nodes its running replicas are on. `behavior` limits how far one change
    may move the target (autoscaler/behavior.py). `min_replicas` 0 needs `allow_scale_to_zero: true` (power alone
    never takes a target to zero; a target someone else scaled to zero may then stay there).
    `actuation_delay` (0 or a duration) is how long a replica change takes to take effect (replicas started and
    ready); no change follows another before it has taken effect (`hold_s`), and with the cooldown it sets the
    forecast's risk window (`risk_window_s`).
    """

    name: str = Field(min_length=1, max_length=63, pattern=SLUG_PATTERN)
    target: ScalingTarget
    min_replicas: int = Field(1, ge=0, le=REPLICAS_LIMIT, strict=True)
    max_replicas: int = Field(10, ge=1, le=REPLICAS_LIMIT, strict=True, validate_default=True)  # the cap checks 10 too
    allow_scale_to_zero: bool = Field(False, strict=True)
    power_based: PowerBasedScalingConfig = PowerBasedScalingConfig()
    predictive_scaling: PredictiveScalingConfig = PredictiveScalingConfig()
    behavior: ScalingBehavior = ScalingBehavior()
    actuation_delay: WindowSeconds = Field(0, ge=0, le=86400)
    cluster_power_budget: float | None = Field(None, le=MAX_CLUSTER_WATTS, strict=True)
    aggregation: Literal["mean", "max"] = "max"
    mode: Literal["dry_run", "enforce"] = "dry_run"
    stale_after_s: Duration = 120
    nodes: list[NodeId] = Field([], max_length=1000, description="telemetry node ids the target runs on")
    workload_id: NodeId | None = Field(None, description="key of the config's workloads map")

    @property
    def hold_s(self) -> int:
        """How long after a change the target holds: the cooldown, and at least until the change has taken effect
        (a change still in flight is not yet in the measured power, so acting again would count it twice)."""
        return max(self.power_based.cooldown_period, self.actuation_delay)

    @property
    def risk_window_s(self) -> int:
        """How far ahead a decision must look: until a change decided now takes effect and holds until the next
        change could take effect (hold + actuation delay), and at least the look-ahead."""
        return max(self.predictive_scaling.lookahead_minutes * 60, self.hold_s + self.actuation_delay)

    @field_validator("max_replicas")
    @classmethod
    def _within_cap(cls, value: int, info: ValidationInfo) -> int:
        cap = (info.context or {}).get(MAX_REPLICAS_CAP)
        if cap is not None and value > cap:
            raise ValueError(f"max_replicas ({value}) exceeds auto_scaling.max_replicas_cap ({cap}); give one within "
                             "it (left out, it is 10)")
        return value

    @field_validator("workload_id")
    @classmethod
    def _named_workload(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must name a workload of the config's workloads map, or be left out")
        return value

    @field_validator("nodes")
    @classmethod
    def _distinct_nodes(cls, value: list[str]) -> list[str]:
        if any(not node.strip() for node in value):
            raise ValueError("node ids must not be empty")
        if len(set(value)) != len(value):
            raise ValueError("node ids must be distinct")
        return value

    @field_validator("cluster_power_budget")
    @classmethod
    def _positive_budget(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError(f"cluster_power_budget must be greater than 0 W (got {value:g})")
        return value

    @model_validator(mode="after")
    def _can_consolidate(self, info: ValidationInfo) -> ScalingPolicy:
        power = self.power_based
        if (info.context or {}).get(NEW_POLICY) and power.scale_out_threshold < 1:
            raise ValueError(f"power_based.scale_out_threshold ({power.scale_out_threshold:g}%) must be at least 1%: "
                             "under it, a node's ordinary draw asks for more replicas than any target may have")
        if ((info.context or {}).get(NEW_POLICY) and power.idle_power_watts is not None
                and 0 < power.scale_in_threshold <= power.idle_share):
            in_watts = power.max_power_budget * power.scale_in_threshold / 100.0
            raise ValueError(f"power_based.idle_power_watts ({power.idle_power_watts:g} W) must be below the scale-in "
                             f"threshold ({in_watts:g} W): a node never draws less than its idle power, so the policy "
                             "could never consolidate; raise power_based.scale_in_threshold above it")
        level = self.predictive_scaling.confidence_threshold
        if (info.context or {}).get(NEW_POLICY) and level <= MIN_CONFIDENCE:
            raise ValueError(f"predictive_scaling.confidence_threshold ({level:g}) must be above {MIN_CONFIDENCE:g}: "
                             "at or under it, the bound the budget is held to lies at or below the expected power")
        return self

    @model_validator(mode="after")
    def _check_bounds(self) -> ScalingPolicy:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})")
        if self.min_replicas == 0 and not self.allow_scale_to_zero:
            raise ValueError("min_replicas 0 needs allow_scale_to_zero: true (an explicit opt-in)")
        return self


# --- decision inputs -------------------------------------------------------------------------------------


class ScaleAction(StrEnum):
    SCALE_OUT = "scale_out"
    SCALE_IN = "scale_in"
    HOLD = "hold"


class PowerObservation(_Model):
    """Measured power of the target now: one value per node it runs on (empty when nothing was seen).

    `age_s` is the age of the oldest of the nodes' latest samples; None means unknown and counts as stale.
    `missing_nodes` are target nodes with no telemetry at all (any of them means missing data).
    """

    measured_per_node_watts: list[Watts] = []
    age_s: float | None = Field(None, ge=0)
    replicas: int = Field(ge=0)
    missing_nodes: list[str] = []


# --- decision --------------------------------------------------------------------------------------------


class ScalingDecision(_Model):
    """One decision, including holds. Shares are percent of the per-node budget (None when not computed).

    `recommended_replicas` is what the signal asked for within the bounds and the cluster budget, before the
    stabilization window, the step limit and the cooldown (None when nothing was recommended: stale data, off).
    `signal` is the power that set that count: "measured" where the present draw asked for more than the forecast
    alone would have (`used_forecast` still says whether a forecast was weighed).
    """

    action: ScaleAction
    from_replicas: int
    to_replicas: int
    recommended_replicas: int | None = None
    reason: str = Field(min_length=1)
    signal: Literal["forecast", "measured", "none"]
    measured_share: float | None = None
    forecast_share: float | None = None
    used_forecast: bool = False
    at: datetime
    outside_change: bool = False  # the cooldown was skipped: someone else lowered the count (PolicyState)


# --- events ----------------------------------------------------------------------------------------------


class ActuationStatus(StrEnum):
    NONE = "none"  # nothing to change (hold)
    DRY_RUN = "dry_run"  # a change was decided and only recorded
    PENDING = "pending"  # the intent is recorded and the actuation not completed (yet, or interrupted)
    APPLIED = "applied"
    FAILED = "failed"


class ActuationResult(_Model):
    status: ActuationStatus
    detail: str = ""
    replicas: int | None = Field(None, ge=0, description="the count the target holds after the write where it is "
                                                         "not the decision's: the target's own bounds (a worker "
                                                         "group's min/maxReplicas) or its API's admission (a "
                                                         "mutating webhook) changed it; None: the decision's")


class ScalingEvent(_Model):
    """What the controller did for one policy at one tick (every decision, holds included)."""

    id: int | None = Field(None, description="sequence number, assigned when the event is stored")
    at: datetime
    policy: str
    target: ScalingTarget
    action: ScaleAction
    from_replicas: int | None = Field(description="None when the target's replica count could not be read")
    to_replicas: int | None
    measured_power_watts: float | None = Field(None, description="per-node power (the policy's aggregation)")
    forecast_power_watts: float | None = Field(
        None, description="per-node forecast upper quantile at confidence_threshold over the look-ahead")
    confidence: float | None = Field(None, description="forecast's mean calibrated confidence over the look-ahead")
    signal: Literal["forecast", "measured", "none"] = "none"
    reason: str
    mode: Literal["dry_run", "enforce"]
    actuation: ActuationResult


# --- stored policies -------------------------------------------------------------------------------------


class InvalidStoredPolicy(_Model):
    """A stored policy that no longer validates (written by an older version, stored before a check existed, or
    above a lowered `max_replicas_cap`): every tick skips it and the API lists it; replace or delete it by name."""

    name: str
    reason: str = Field(description="why it does not validate, one `field: reason` per line")
    updated_at: datetime | None = Field(None, description="when it was last written")


class StoredPolicies(_Model):
    """Every stored policy: those that validate and those that no longer do, each by name."""

    policies: list[ScalingPolicy] = []
    invalid: list[InvalidStoredPolicy] = []
