"""The app's settings: its builders' arguments (`AppArgs`; `ServeConfigArgs`, the `args:` block of
serve_config.yaml), the whole config file (`ServiceConfig`, every package's keys at once), and the API token
(API_TOKEN / API_TOKEN_FILE).

Only the app may import every package, so the whole file is composed here; the packages below read only
their own keys (each through its own settings module).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from autoscaler.settings import AutoscalerConfig, ControllerEnvironment, ControllerSettings
from collectors.collector_actor import ReplaySettings
from collectors.settings import CollectorConfig, CollectorOverrides
from collectors.sources import SOURCE_NAMES
from core.durations import parse_duration
from core.names import COST_DEPLOYMENT, INGRESS_DEPLOYMENT, MAIN_APP, POWER_APP, POWER_DEPLOYMENT
from core.settings import ADDRESS_KEY, ConfigError, Duration, EnvSettings, config_path, load_keys, read_secret
from core.stores.settings import StoreConfig, StoreOverrides
from deployments.options import DeploymentOptions
from training.power.scaling import TrainScaling
from training.power.scheduler import ModelSchedule, SchedulerSettings
from training.retrain_attempt import KEEP_VERSIONS, RETRAIN_RETENTION_S
from training.retrain_data import DEFAULT_STORE_SPAN
from training.settings import TrainingConfig, TrainingOverrides, load_training_config

SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|CREDENTIAL|API_KEY", re.IGNORECASE)
"""Names of settings that hold secrets (refused in app args, masked by app.check_config)."""


class ServiceConfig(TrainingConfig, CollectorConfig, AutoscalerConfig, StoreConfig):
    """The whole config file: every package's keys (one model, so one pass reports every error)."""


def load_service_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """The whole config file (`path`, else $KCLOUD_CONFIG, else ./config.yaml or configs/config.yaml, else defaults)
    with MODEL_PATH, KCLOUD_STORAGE_PATH, GPU_MONITORING_ENABLED, IPMI_HOSTS and INFLUX_HOST applied. Raises
    ConfigError naming file, key, reason."""
    return load_keys(ServiceConfig, path, environ, overrides=[TrainingOverrides, CollectorOverrides, StoreOverrides])


class RetrainSchedule(BaseModel):
    """Scheduled retraining of the power forecaster on the telemetry store (training/power/scheduler.py)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(None, description="run the retrain scheduler actor; default: with the app's "
                                                   "telemetry (args.telemetry.enabled), the store it trains on")
    interval: Duration | None = Field(None, gt=0, description="time between scheduled retrains; default "
                                                              "predictor.model_update_interval")
    since: Duration = Field(parse_duration(DEFAULT_STORE_SPAN), gt=0,
                            description="how much recent telemetry each scheduled retrain trains on")
    retrain_on_degradation_factor: float | None = Field(
        1.5, gt=1, description="retrain early when the active version's live MAE exceeds this times its "
                               "held-out MAE (acts once live accuracy is reported); null: never")
    other_resolutions: bool = Field(True, description="retrain the config's other power resolutions too, each at "
                                                      "most once per 24 of its steps, on at least 4 of its windows")


class RetrainDefaults(TrainScaling):
    """How retraining runs: `POST /api/v1/models/retrain` when the request does not say, and the schedule (Ray
    Train's scaling flat beside the rest: `num_workers`, `use_gpu`, `cpus_per_worker`, `resources_per_worker`)."""

    model_config = ConfigDict(extra="forbid")

    data: str | None = Field(None, description="canonical telemetry CSV readable by the cluster")
    data_dir: str | None = Field(None, description="folder whose CSV files a request's `data` may name "
                                                   "(none: requests may not name files)")
    cost_data: str | None = Field(None, description="CSV of past jobs the cost model retrains on (default: jobs "
                                                    "generated from the price catalog)")
    retention: Duration = Field(RETRAIN_RETENTION_S, ge=3600,
                                description="how long a finished retraining record (the API's and the "
                                            "scheduler's) is kept")
    keep_versions: int = Field(KEEP_VERSIONS, ge=1, le=10_000,
                               description="after each retraining, the registry keeps this many of the model's "
                                           "newest versions, besides the served one and as many formerly served "
                                           "(the rollback targets); older ones are deleted")
    schedule: RetrainSchedule = RetrainSchedule()


class TelemetryArgs(BaseModel):
    """Collector actors started with the app (see collectors/supervisor.py)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # an error never shows a value

    enabled: bool = Field(False, description="start the store actor and a collector on every node")
    sources: list[str] | None = Field(None, max_length=len(SOURCE_NAMES),
                                      description="host, nvml, npu, ipmi; default: all that apply")
    replay: ReplaySettings | None = Field(None, description="also replay a canonical CSV as live telemetry")
    store_settings: dict[str, str] | None = Field(
        None, description="store settings (INFLUX_HOST, TELEMETRY_DATA_DIR, ...; never a secret); default: the "
                          "environment")

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - set(SOURCE_NAMES))
        if unknown:  # a collector could never start: refused here rather than restarted on every node forever
            raise ValueError(f"unknown source(s) {', '.join(map(repr, unknown))}; choose from "
                             f"{', '.join(SOURCE_NAMES)}")
        return value

    @field_validator("store_settings")
    @classmethod
    def _no_secrets(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        named = [key for key in value or {} if SECRET_NAME.search(key) and not key.upper().endswith("_FILE")]
        secrets = named + [key for key, text in (value or {}).items()
                           if key not in named and _has_login(text, bare=ADDRESS_KEY.search(key) is not None)]
        if secrets:
            first = secrets[0]
            instead = f", or {first}_FILE to a file holding it" if first in named else ""
            raise ValueError(f"{', '.join(secrets)}: secrets (or a URL with a login) do not belong in app args "
                             f"(the Serve REST API shows them to anyone who can reach the Ray dashboard); set "
                             f"{first} in the environment{instead}")
        return value


def _has_login(text: str, bare: bool = True) -> bool:
    """Whether `text` is a URL carrying a login (scheme://user:password@host, or scheme://apikey@host: the clients
    send a user alone as Basic auth too, and it is as secret); with `bare`, also an address without its scheme
    (user:password@host:8086, which the store clients complete with http://)."""
    text = text.strip()
    try:
        return urllib.parse.urlsplit(text if "://" in text or not bare else f"//{text}").username is not None
    except ValueError:  # not a URL at all (an odd port, say): nothing to find
        return False


class BatchArgs(BaseModel):
    """How prediction batches (`POST /api/v1/predict/batch`) run: in a queue, a bounded number at once."""

    model_config = ConfigDict(extra="forbid")

    max_running: int = Field(2, ge=1, le=64, description="batches answered at once; the others wait in order")
    max_waiting: int = Field(100, ge=1, le=100_000, description="batches waiting at most; one more is a 429")
    max_waiting_bytes: int = Field(256 << 20, ge=16 << 20, le=1 << 40,
                                   description="bytes the waiting batches' records may take (a record is up to the "
                                               "4 MiB body and more): one that would pass it is a 429, unless none "
                                               "waits")
    retention: Duration = Field(86400, ge=60, description="how long a finished batch's results are kept")
    max_finished: int = Field(1000, ge=10, le=1_000_000, description="finished batches kept at most (a batch of "
                              "1,000 items with week-long lists is tens of MB): beyond it the oldest are deleted "
                              "before their retention ends, down to nine tenths of it, checked as batches finish")
    max_finished_bytes: int = Field(1 << 30, ge=64 << 20, le=1 << 40,
                                    description="bytes the batch records may take on the state volume (which the "
                                                "controller's state and the embedded store share): beyond it the "
                                                "oldest finished batches are deleted, down to nine tenths of it")

    @model_validator(mode="after")
    def _room_for_finished_batches(self) -> BatchArgs:
        """The waiting batches' records count against `max_finished_bytes` and are never deleted: were they to fill
        it, every batch finishing would delete the results of all the others, however new."""
        if self.max_finished_bytes < 2 * self.max_waiting_bytes:
            raise ValueError(f"max_finished_bytes ({self.max_finished_bytes >> 20} MiB) must be at least twice "
                             f"max_waiting_bytes ({self.max_waiting_bytes >> 20} MiB): the waiting batches' records "
                             "count against it and are never deleted, so finished results would go as soon as "
                             "they are written")
        return self


class AutoscalerArgs(BaseModel):
    """The scaling controller actor started with the app (see autoscaler/actor.py)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # an error never shows a value

    enabled: bool = Field(False, description="start the controller actor and serve /api/v1/scaling/*")
    ray_dashboard_url: str = Field(default_factory=lambda: ControllerEnvironment.from_env().ray_dashboard_url,
                                   description="Ray dashboard, for scaling Serve deployments ($RAY_DASHBOARD_URL)")
    kubeconfig: str | None = Field(None, description="kubeconfig for Kubernetes targets (default: in-cluster "
                                                     "service account, else $KUBECONFIG)")
    interval_s: float | None = Field(None, gt=0, description="tick interval; default auto_scaling.evaluation_interval")

    @field_validator("ray_dashboard_url")
    @classmethod
    def _no_password(cls, value: str) -> str:
        if _has_login(value):
            raise ValueError("a URL with a login does not belong in app args (the Serve REST API shows them); "
                             "set RAY_DASHBOARD_URL in the environment instead")
        return value


DEPLOYMENT_ARGS = {"ingress": (MAIN_APP, INGRESS_DEPLOYMENT), "power_predictor": (POWER_APP, POWER_DEPLOYMENT),
                   "cost_predictor": (MAIN_APP, COST_DEPLOYMENT)}
"""AppArgs' code-level deployment options -> (application, deployment) whose `deployments[]` entry sets them."""


class AppArgs(BaseModel):
    """Everything the app needs to start; validated once, when a builder runs.

    `ingress`, `power_predictor` and `cost_predictor` are code-level deployment options (`.options()`), for
    Python callers (tests, benchmarks, the soak) that build the apps without a Serve config. A Serve config sets
    them under `applications[].deployments[]` instead, which Serve applies over these (see `ServeConfigArgs`).
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # errors name keys, never values

    config_path: str | None = Field(None, description="service config YAML (default: $KCLOUD_CONFIG, "
                                                      "else ./config.yaml, else configs/config.yaml)")
    model_path: str | None = Field(None, description="model registry root (default: config model_path / $MODEL_PATH)")
    state_path: str = Field("state", description="where batch results and retrain jobs are persisted")
    power_app_name: str = Field(POWER_APP, description="Serve application of the PowerPredictor")
    power_model_id: str = "power_lstm"
    cost_model_id: str = "cost_gbm"
    api_token_file: str | None = Field(None, description="file holding the API token "
                                                         "(else $API_TOKEN_FILE / $API_TOKEN)")
    protect_reads: bool = Field(False, description="require the API token on reads too (all but /healthz and "
                                                   "the OpenAPI docs); writes always need it")
    batches: BatchArgs = BatchArgs()
    retrain: RetrainDefaults = RetrainDefaults()
    telemetry: TelemetryArgs = TelemetryArgs()
    autoscaler: AutoscalerArgs = Field(default_factory=AutoscalerArgs)  # reads $RAY_DASHBOARD_URL when built
    ingress: DeploymentOptions = DeploymentOptions(ray_actor_options={"num_cpus": 0.25})
    power_predictor: DeploymentOptions = DeploymentOptions(user_config={"batching": True, "max_batch_size": 16})
    cost_predictor: DeploymentOptions = DeploymentOptions(ray_actor_options={"num_cpus": 0.25})

    def service_config(self) -> ServiceConfig:
        return load_service_config(self.config_path)

    def controller_settings(self) -> ControllerSettings:
        """The controller actor's settings (call on absolute-path args)."""
        scaler = self.autoscaler
        return ControllerSettings(state_file=str(Path(self.state_path) / "autoscaler.sqlite"),
                                  config_path=self.config_path, power_app_name=self.power_app_name,
                                  ray_dashboard_url=scaler.ray_dashboard_url, kubeconfig=scaler.kubeconfig,
                                  interval_s=scaler.interval_s)

    def scheduler_settings(self) -> SchedulerSettings | None:
        """The retrain scheduler actor's settings; None when scheduled retraining is off (call on absolute-path
        args)."""
        retrain, schedule = self.retrain, self.retrain.schedule
        if not (schedule.enabled if schedule.enabled is not None else self.telemetry.enabled):
            return None
        predictor = self.service_config().predictor
        interval = schedule.interval or predictor.model_update_interval
        others = tuple(ModelSchedule.of(resolution, interval, schedule.since) for resolution in predictor.resolutions
                       if schedule.other_resolutions and resolution.model_id != self.power_model_id)
        return SchedulerSettings(
            state_path=self.state_path, model_path=self.model_path or load_training_config(self.config_path).model_path,
            config_path=self.config_path, model_id=self.power_model_id, interval_s=interval, since_s=schedule.since,
            degradation_factor=schedule.retrain_on_degradation_factor, check_s=min(30.0, max(1.0, interval / 4)),
            retention_s=retrain.retention, keep_versions=retrain.keep_versions, scaling=retrain.train_scaling(),
            others=others)

    def with_absolute_paths(self) -> AppArgs:
        """The same args with every path resolved against the current directory (and config defaults)."""
        found = config_path(self.config_path)  # actors on other nodes and directories read the same file
        config_file = str(found.resolve()) if found is not None else None
        model_path = self.model_path or load_training_config(config_file).model_path
        retrain = {key: str(Path(value).resolve()) if value else None
                   for key, value in (("data", self.retrain.data), ("data_dir", self.retrain.data_dir),
                                       ("cost_data", self.retrain.cost_data))}
        telemetry = self.telemetry
        if telemetry.replay is not None:
            replay = telemetry.replay.model_copy(update={"path": str(Path(telemetry.replay.path).resolve())})
            telemetry = telemetry.model_copy(update={"replay": replay})
        if telemetry.store_settings and telemetry.store_settings.get("TELEMETRY_DATA_DIR"):
            settings = {**telemetry.store_settings,
                        "TELEMETRY_DATA_DIR": str(Path(telemetry.store_settings["TELEMETRY_DATA_DIR"]).resolve())}
            telemetry = telemetry.model_copy(update={"store_settings": settings})
        scaler = self.autoscaler
        if scaler.kubeconfig:
            scaler = scaler.model_copy(update={"kubeconfig": str(Path(scaler.kubeconfig).resolve())})
        return self.model_copy(update={
            "telemetry": telemetry,
            "autoscaler": scaler,
            "config_path": config_file,
            "model_path": str(Path(model_path).resolve()),
            "state_path": str(Path(self.state_path).resolve()),
            "api_token_file": str(Path(self.api_token_file).resolve()) if self.api_token_file else None,
            "retrain": self.retrain.model_copy(update=retrain),
        })


class ServeConfigArgs(AppArgs):
    """The `args:` of a Serve config (serve_config.yaml, a RayService's serveConfigV2): AppArgs without the
    deployment options, which a config sets under `applications[].deployments[]`. There Serve applies them,
    and a changed `num_replicas`, `max_ongoing_requests` or `user_config` is a lightweight update (the
    replicas' `reconfigure`) instead of rebuilding both apps. Serve validates a config's args into this model
    before calling a builder (the builders' parameter type), so a config still carrying them is refused."""

    @model_validator(mode="before")
    @classmethod
    def _no_deployment_options(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            misplaced = [key for key in DEPLOYMENT_ARGS if key in data]
            if misplaced:
                raise ValueError("; ".join(
                    f"args.{key}: deployment options are not app args in a Serve config (Serve applies them per "
                    f"deployment, user_config without a redeploy); move them to application "
                    f"{DEPLOYMENT_ARGS[key][0]!r}, deployments: [{{name: {DEPLOYMENT_ARGS[key][1]}, ...}}]"
                    for key in misplaced))
        return data


class ApiEnvironment(EnvSettings):
    """The API token from the environment: API_TOKEN, or the file API_TOKEN_FILE names (it wins)."""

    api_token: SecretStr | None = Field(None, alias="API_TOKEN")
    api_token_file: str | None = Field(None, alias="API_TOKEN_FILE")


def api_token_file(token_file: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The file the API token is read from (`token_file`, else $API_TOKEN_FILE); None: from $API_TOKEN, or none."""
    return token_file or ApiEnvironment.from_env(environ).api_token_file or None


def read_api_token(token_file: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The configured API token: the named file, else $API_TOKEN_FILE, else $API_TOKEN; None when unset.

    Raises:
        ConfigError: the token file cannot be read or holds only blanks (naming it).
    """
    env = ApiEnvironment.from_env(environ)
    file = token_file or env.api_token_file
    token = read_secret("API_TOKEN", env.api_token, file)
    if token is None:
        return None
    text = token.get_secret_value().strip()
    where = f"API_TOKEN_FILE {file}" if file else "API_TOKEN"
    if not text:
        raise ConfigError(f"{where} is empty" if file else "API_TOKEN holds only blanks")
    if len(text) < MIN_API_TOKEN_CHARS:  # it guards retraining and the policies that scale the cluster
        raise ConfigError(f"{where} holds a token of {len(text)} characters: use at least {MIN_API_TOKEN_CHARS} "
                          "(e.g. `openssl rand -hex 32`)")
    return text


MIN_API_TOKEN_CHARS = 16
