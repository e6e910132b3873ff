"""The autoscaler's settings: the config file's `auto_scaling` and `workloads` keys, how the controller actor is
built (`ControllerSettings`, from the app's args), and the controller's environment.

Environment (`ControllerEnvironment`): RAY_DASHBOARD_URL (default of the app's `autoscaler.ray_dashboard_url`),
KUBECONFIG (kubeconfig when none is given) and KUBERNETES_SERVICE_HOST (set in a pod: use its service account).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.names import POWER_APP
from core.settings import Duration, EnvSettings, Section, Workloads, load_keys

DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8265"


class PowerBasedScalingConfig(Section):
    """Reactive scaling on measured power, in percent of the per-node budget."""

    enabled: bool = True
    max_power_budget: float = Field(5000.0, gt=0)
    scale_out_threshold: float = Field(80.0, gt=0, le=100)
    scale_in_threshold: float = Field(50.0, ge=0, lt=100)
    cooldown_period: Duration = 300

    @model_validator(mode="after")
    def _check_thresholds(self) -> PowerBasedScalingConfig:
        if self.scale_in_threshold >= self.scale_out_threshold:
            raise ValueError(f"scale_in_threshold ({self.scale_in_threshold:g}) must be below "
                             f"scale_out_threshold ({self.scale_out_threshold:g})")
        return self


class PredictiveScalingConfig(Section):
    """Scaling ahead of forecast power."""

    enabled: bool = True
    lookahead_minutes: int = Field(30, ge=1)
    confidence_threshold: float = Field(0.8, gt=0, lt=1)


class AutoScalingConfig(Section):
    """Defaults for every policy, the controller's tick interval, and the policies declared in the file.

    Each entry of `policies` is an `autoscaler.schema.ScalingPolicy` whose `power_based` and
    `predictive_scaling` keys override the defaults above; `autoscaler.policy_config.policies_from_config`
    validates them (and `serve run` refuses a file with an invalid policy).
    """

    power_based: PowerBasedScalingConfig = PowerBasedScalingConfig()
    predictive_scaling: PredictiveScalingConfig = PredictiveScalingConfig()
    evaluation_interval: Annotated[Duration, Field(ge=1)] = 30
    policies: tuple[dict[str, Any], ...] = ()


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

    model_config = ConfigDict(extra="forbid", frozen=True)

    state_file: str
    config_path: str | None = None
    power_app_name: str = POWER_APP
    ray_dashboard_url: str = DEFAULT_DASHBOARD_URL
    kubeconfig: str | None = None
    interval_s: float | None = Field(None, gt=0, description="override of auto_scaling.evaluation_interval")


class ControllerEnvironment(EnvSettings):
    """The scaling controller's environment."""

    ray_dashboard_url: str = Field(DEFAULT_DASHBOARD_URL, alias="RAY_DASHBOARD_URL")
    kubeconfig: str | None = Field(None, alias="KUBECONFIG")
    kubernetes_service_host: str | None = Field(None, alias="KUBERNETES_SERVICE_HOST")

    @property
    def in_cluster(self) -> bool:
        """True inside a Kubernetes pod (its service account can be used)."""
        return bool(self.kubernetes_service_host)
