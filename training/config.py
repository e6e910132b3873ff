"""The service config file (YAML), validated with pydantic, plus environment overrides.

Every key has a default, so an empty or absent file is a valid config. Durations accept "15s", "10min",
"1h", "7d" or bare seconds and are stored as whole seconds. Unknown keys are refused. Any failure is a
`ConfigError` naming the file (or environment variable), the dotted key path and the reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core.durations import format_duration, parse_duration

DEFAULT_CONFIG_PATH = Path("configs/config.yaml")
CONFIG_ENV = "KCLOUD_CONFIG"

# Canonical optional input columns; must match core.telemetry_csv.OPTIONAL_FEATURES (checked by the tests).
FeatureName = Literal[
    "cpu_utilization", "memory_usage", "gpu_utilization", "npu_utilization", "temperature", "workload_type"
]
ALL_FEATURES: tuple[str, ...] = get_args(FeatureName)


def _seconds(value: object) -> int:
    if not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a duration like '15s', '10min', '1h' or '7d'")
    return parse_duration(value)


Duration = Annotated[int, BeforeValidator(_seconds)]
"""Whole seconds; YAML may spell it "10min", "1h", "7d" or give bare seconds."""


class ConfigError(ValueError):
    """The config file or an environment override is invalid; the message says where and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PredictorConfig(_Section):
    """Series and forecasting cadence."""

    model_update_interval: Duration = 3600
    prediction_horizon: Duration = 3600
    step: Duration = 60
    max_gap: Duration = 300

    @model_validator(mode="after")
    def _check_steps(self) -> PredictorConfig:
        step, problems = format_duration(self.step), []
        if self.max_gap < self.step:
            problems.append(f"max_gap ({format_duration(self.max_gap)}) must be at least step ({step})")
        if self.prediction_horizon % self.step:
            problems.append(f"prediction_horizon ({format_duration(self.prediction_horizon)}) "
                            f"must be a whole multiple of step ({step})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def horizon_steps(self) -> int:
        """The forecast horizon in steps."""
        return self.prediction_horizon // self.step


class PowerPredictorConfig(_Section):
    """The LSTM power forecaster: sizes, optimizer and interval settings."""

    type: Literal["lstm"] = "lstm"
    sequence_length: int = Field(60, ge=2)
    hidden_size: int = Field(64, ge=1)
    num_layers: int = Field(2, ge=1, le=4)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(60, ge=1)
    patience: int = Field(8, ge=1)
    learning_rate: float = Field(0.002, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    seed: int = Field(42, ge=0)
    interval_coverage: float = Field(0.8, gt=0, lt=1)
    confidence_tolerance: float = Field(0.1, gt=0, lt=1)


class CostPredictorConfig(_Section):
    """The LightGBM cost model."""

    type: Literal["lightgbm"] = "lightgbm"
    n_estimators: int = Field(300, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(31, ge=2)


class ModelsConfig(_Section):
    power_predictor: PowerPredictorConfig = PowerPredictorConfig()
    cost_predictor: CostPredictorConfig = CostPredictorConfig()


class PowerBasedScalingConfig(_Section):
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


class PredictiveScalingConfig(_Section):
    """Scaling ahead of forecast power."""

    enabled: bool = True
    lookahead_minutes: int = Field(30, ge=1)
    confidence_threshold: float = Field(0.8, gt=0, lt=1)


class AutoScalingConfig(_Section):
    """Defaults for every policy, the controller's tick interval, and the policies declared in the file.

    Each entry of `policies` is an `autoscaler.schema.ScalingPolicy`; its `power_based` and
    `predictive_scaling` keys override the defaults above. The autoscaler validates them (this module sits
    below it), and `serve run` refuses a file with an invalid policy.
    """

    power_based: PowerBasedScalingConfig = PowerBasedScalingConfig()
    predictive_scaling: PredictiveScalingConfig = PredictiveScalingConfig()
    evaluation_interval: Annotated[Duration, Field(ge=1)] = 30
    policies: tuple[dict[str, Any], ...] = ()


def check_host(entry: object) -> str:
    """Validate one "host[:port]" entry; return it stripped."""
    if not isinstance(entry, str):
        raise ValueError(f"{entry!r} is not 'host[:port]' text")
    entry = entry.strip()
    host, sep, port = entry.partition(":")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{entry!r} is not 'host[:port]' (empty or blank host)")
    if sep and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{entry!r} has an invalid port {port!r}; use 1..65535")
    return entry


class TelemetryConfig(_Section):
    """Collector actors: how often they sample and push, and where they buffer during a store outage."""

    sampling_interval: Duration = 5
    flush_interval: Duration = 10
    spill_dir: str = Field("data/spill", min_length=1)
    max_buffered_samples: int = Field(10_000, ge=100)
    stale_after: Duration = 120


class ServiceConfig(_Section):
    """The whole config file."""

    predictor: PredictorConfig = PredictorConfig()
    models: ModelsConfig = ModelsConfig()
    features: tuple[FeatureName, ...] = ALL_FEATURES  # type: ignore[assignment]
    auto_scaling: AutoScalingConfig = AutoScalingConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    workloads: dict[Annotated[str, Field(min_length=1)], tuple[Annotated[str, Field(min_length=1)], ...]] = {}
    model_path: str = Field("trained_models", min_length=1)
    influx_host: str | None = None
    gpu_monitoring_enabled: bool = True
    ipmi_hosts: tuple[Annotated[str, BeforeValidator(check_host)], ...] = ()

    @field_validator("features")
    @classmethod
    def _no_duplicates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"duplicate feature(s) {repeated}")
        return value


_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Top-level keys set by environment variables; an empty variable counts as unset."""
    values = {name: environ.get(name, "").strip() for name in
              ("MODEL_PATH", "INFLUX_HOST", "GPU_MONITORING_ENABLED", "IPMI_HOSTS")}
    out: dict[str, Any] = {}
    if values["MODEL_PATH"]:
        out["model_path"] = values["MODEL_PATH"]
    if values["INFLUX_HOST"]:
        out["influx_host"] = values["INFLUX_HOST"]
    if flag := values["GPU_MONITORING_ENABLED"].lower():
        if flag not in _TRUE | _FALSE:
            shown = values["GPU_MONITORING_ENABLED"]
            raise ConfigError(f"GPU_MONITORING_ENABLED: {shown!r} is not a boolean; "
                              "use true/false, 1/0 or yes/no")
        out["gpu_monitoring_enabled"] = flag in _TRUE
    if values["IPMI_HOSTS"]:
        try:
            out["ipmi_hosts"] = [check_host(entry) for entry in values["IPMI_HOSTS"].split(",")]
        except ValueError as exc:
            raise ConfigError(f"IPMI_HOSTS: {exc}") from exc
    return out


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def format_errors(source: str, error: ValidationError) -> str:
    """One line per pydantic error: `source: dotted.key: reason (got value)`."""
    lines = []
    for item in error.errors():
        if item["type"] == "extra_forbidden":
            reason = "unknown key"
        else:
            reason = item["msg"].removeprefix("Value error, ")
            if item["type"] != "value_error" and not isinstance(item["input"], dict | list | tuple):
                reason += f" (got {item['input']!r})"
        lines.append(f"{source}: {_key_path(item['loc'])}: {reason}")
    return "\n".join(lines)


def read_yaml_mapping(path: Path, *, label: str | None = None, what: str = "config file") -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: {}); ConfigError prefixed with `label` (the path)."""
    label = label or str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{label}: {what} not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read {what}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: top level must be a mapping of keys, not {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """Load and validate the service config, then apply environment overrides.

    Without `path`: $KCLOUD_CONFIG if set, else configs/config.yaml if it exists, else defaults only.
    Environment: MODEL_PATH, INFLUX_HOST, GPU_MONITORING_ENABLED, IPMI_HOSTS override their keys.

    Raises:
        ConfigError: naming the file or variable, the dotted key and the reason (all errors listed).
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(CONFIG_ENV):
        path = environ[CONFIG_ENV]
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    data = read_yaml_mapping(Path(path)) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    try:
        config = ServiceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(source, exc)) from None
    overrides = _env_overrides(environ)
    if not overrides:
        return config
    try:
        return ServiceConfig.model_validate({**config.model_dump(), **overrides})
    except ValidationError as exc:
        raise ConfigError(format_errors("environment", exc)) from None
