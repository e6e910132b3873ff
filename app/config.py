"""AppArgs: the typed arguments of the app builder (the `args:` block of serve_config.yaml)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from autoscaler.actor import ControllerSettings
from collectors.supervisor import ReplaySettings
from deployments.options import DeploymentOptions
from training.config import ServiceConfig, load_config


class RetrainDefaults(BaseModel):
    """How `POST /api/v1/models/retrain` runs its Ray Train job when the request does not say."""

    model_config = ConfigDict(extra="forbid")

    data: str | None = Field(None, description="canonical telemetry CSV readable by the cluster")
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)


class TelemetryArgs(BaseModel):
    """Collector actors started with the app (see collectors/supervisor.py)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="start the store actor and a collector on every node")
    sources: list[str] | None = Field(None, description="host, nvml, npu, ipmi; default: all that apply")
    replay: ReplaySettings | None = Field(None, description="also replay a canonical CSV as live telemetry")
    store_settings: dict[str, str] | None = Field(
        None, description="store settings (INFLUX_HOST, TELEMETRY_DATA_DIR, ...); default: the environment")


class AutoscalerArgs(BaseModel):
    """The scaling controller actor started with the app (see autoscaler/actor.py)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="start the controller actor and serve /api/v1/scaling/*")
    ray_dashboard_url: str = Field(default_factory=lambda: os.environ.get("RAY_DASHBOARD_URL",
                                                                          "http://127.0.0.1:8265"),
                                   description="Ray dashboard, for scaling Serve deployments ($RAY_DASHBOARD_URL)")
    kubeconfig: str | None = Field(None, description="kubeconfig for Kubernetes targets (default: in-cluster "
                                                     "service account, else $KUBECONFIG)")
    interval_s: float | None = Field(None, gt=0, description="tick interval; default auto_scaling.evaluation_interval")


class AppArgs(BaseModel):
    """Everything the app needs to start; validated once, at `serve run`."""

    model_config = ConfigDict(extra="forbid")

    config_path: str | None = Field(None, description="service config YAML (default: $KCLOUD_CONFIG, "
                                                      "else configs/config.yaml)")
    model_path: str | None = Field(None, description="model registry root (default: config model_path / $MODEL_PATH)")
    state_path: str = Field("state", description="where batch results and retrain jobs are persisted")
    power_app_name: str = Field("kcloud-power", description="Serve application of the PowerPredictor")
    power_model_id: str = "power_lstm"
    cost_model_id: str = "cost_gbm"
    api_token_file: str | None = Field(None, description="file holding the API token "
                                                         "(else $API_TOKEN_FILE / $API_TOKEN)")
    retrain: RetrainDefaults = RetrainDefaults()
    telemetry: TelemetryArgs = TelemetryArgs()
    autoscaler: AutoscalerArgs = AutoscalerArgs()
    ingress: DeploymentOptions = DeploymentOptions(ray_actor_options={"num_cpus": 0.25})
    power_predictor: DeploymentOptions = DeploymentOptions(user_config={"batching": True, "max_batch_size": 16})
    cost_predictor: DeploymentOptions = DeploymentOptions(ray_actor_options={"num_cpus": 0.25})

    def service_config(self) -> ServiceConfig:
        return load_config(self.config_path)

    def controller_settings(self) -> ControllerSettings:
        """The controller actor's settings (call on absolute-path args)."""
        scaler = self.autoscaler
        return ControllerSettings(state_file=str(Path(self.state_path) / "autoscaler.sqlite"),
                                  config_path=self.config_path, power_app_name=self.power_app_name,
                                  ray_dashboard_url=scaler.ray_dashboard_url, kubeconfig=scaler.kubeconfig,
                                  interval_s=scaler.interval_s)

    def with_absolute_paths(self) -> AppArgs:
        """The same args with every path resolved against the current directory (and config defaults)."""
        config_path = str(Path(self.config_path).resolve()) if self.config_path else None
        model_path = self.model_path or load_config(config_path).model_path
        data = self.retrain.data
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
            "config_path": config_path,
            "model_path": str(Path(model_path).resolve()),
            "state_path": str(Path(self.state_path).resolve()),
            "api_token_file": str(Path(self.api_token_file).resolve()) if self.api_token_file else None,
            "retrain": self.retrain.model_copy(update={"data": str(Path(data).resolve()) if data else None}),
        })


def read_api_token(token_file: str | None) -> str | None:
    """The configured API token: the named file, else $API_TOKEN_FILE, else $API_TOKEN; None when unset."""
    path = token_file or os.environ.get("API_TOKEN_FILE")
    if path:
        token = Path(path).read_text().strip()
        if not token:
            raise ValueError(f"api token file {path} is empty")
        return token
    return os.environ.get("API_TOKEN") or None
