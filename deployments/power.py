"""PowerPredictor: the Serve deployment that hosts the active PowerLSTM.

It batches concurrent requests into one forward pass (`@serve.batch`), runs on CPU or GPU replicas as
`ray_actor_options` say, and follows the registry: a new active version (or a pinned one in
`user_config`) is loaded without restarting the app. It forecasts from a history it is given or from the
newest stored telemetry of a node or of a configured workload's nodes. Its HTTP route is app/power_route.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from core.registry import ModelRegistry
from core.stores.remote import RemoteStore
from deployments.forecast_gauges import ForecastGauges
from deployments.latency import LatencyRecorder
from deployments.registry_follower import RegistryFollower
from training.power.forecaster import PowerForecaster
from training.power.inference import PowerForecast, PowerHistory, ServedModel, forecast_histories, horizon_steps
from training.power.stored_history import NoStoredTelemetry, StoredHistory, stored_history
from training.power.workload import StoredForecast, WorkloadTelemetryMissing, sum_forecasts

logger = logging.getLogger("ray.serve")


class PowerPredictorUserConfig(BaseModel):
    """Live-tunable settings (`user_config` in serve_config.yaml); applied without a restart."""

    model_config = ConfigDict(extra="forbid")

    model_version: int | None = Field(None, description="pin a registry version; None follows the active one")
    batching: bool = True
    max_batch_size: int = Field(16, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.0, ge=0.0, le=1.0)
    registry_poll_s: float = Field(10.0, gt=0.0, description="how often to look for a new active version")


class PowerPredictor(RegistryFollower):
    """Serve replica holding one PowerForecaster.

    `stale_after_s` is the config's telemetry.stale_after; `workloads` its workload id -> node ids map.
    """

    def __init__(self, model_path: str, model_id: str = "power_lstm", stale_after_s: float = 120.0,
                 workloads: Mapping[str, Sequence[str]] | None = None, device: str | None = None):
        self.registry = ModelRegistry(model_path)
        self.model_id = model_id
        self.stale_after_s = stale_after_s
        self.workloads = {workload: list(nodes) for workload, nodes in (workloads or {}).items()}
        self.store = RemoteStore()
        self.device = device or _default_device()
        self.settings = PowerPredictorUserConfig()
        self.latency = LatencyRecorder(model_id)
        self.forecast_gauges = ForecastGauges()
        self.version: int | None = None
        self.forecaster: PowerForecaster | None = None
        self._load(None)  # fail fast: no model, no replica
        self._start_following(lambda: self.settings.registry_poll_s, lambda: self.settings.model_version is not None)

    def reconfigure(self, user_config: dict) -> None:
        self.settings = PowerPredictorUserConfig.model_validate(user_config or {})
        self._batched.set_max_batch_size(self.settings.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)
        if self.settings.model_version is not None and self.settings.model_version != self.version:
            self._load(self.settings.model_version)

    def _load(self, version: int | None) -> None:
        folder, metadata = self.registry.get(self.model_id, version)
        self.forecaster = PowerForecaster.load(folder, device=self.device)
        self.version = metadata.version
        logger.info("PowerPredictor: serving %s version %d on %s", self.model_id, metadata.version, self.device)

    @property
    def model_version(self) -> str:
        return f"{self.model_id}/{self.version}"

    def describe(self) -> ServedModel:
        """What the replica serves: version, step, window, horizon, features and live latency."""
        forecaster = self._require()
        return ServedModel(model_version=self.model_version, step_seconds=forecaster.pipeline.step_s,
                           sequence_length=forecaster.sequence_length, horizon_steps=forecaster.horizon,
                           features=tuple(forecaster.pipeline.features), latency_ms=self.latency.percentiles())

    async def forecast(self, history: PowerHistory) -> PowerForecast:
        """Forecast one history (batched with concurrent calls).

        Raises:
            ForecastRequestError: the horizon is not a whole number of steps or beyond the model's.
        """
        horizon_steps(self._require(), history.horizon_s)  # refuse before joining a batch
        if self.settings.batching:
            return await self._batched(history)
        return self._infer([history])[0]

    async def forecast_stored(self, nodes: Sequence[str], horizon_s: int, workload_type: str | None = None,
                              workload_id: str | None = None) -> StoredForecast:
        """Forecast from the nodes' newest stored windows, summed over the nodes of a workload.

        `workload_id` says the nodes are that workload's (from `workloads`), not ones the caller named.

        Raises:
            UnknownNode: nothing stored for a node the caller named.
            NoStoredTelemetry: no recent power stored for a node the caller named.
            WorkloadTelemetryMissing: either of the two for a node of `workload_id`.
            StoreUnavailable: the store could not be read.
        """
        stored = [await asyncio.to_thread(self._stored_history, node, horizon_s, workload_type, workload_id)
                  for node in nodes]
        forecasts = await asyncio.gather(*(self.forecast(s.history) for s in stored))
        for node, forecast in zip(nodes, forecasts, strict=True):
            self.forecast_gauges.publish(node, forecast)
        age = max(s.age_s for s in stored)
        return StoredForecast(forecast=sum_forecasts(forecasts), age_s=age, stale=age > self.stale_after_s)

    def _stored_history(self, node_id: str, horizon_s: int, workload_type: str | None,
                        workload_id: str | None) -> StoredHistory:
        """The model's window for the node, ending at its newest stored sample."""
        forecaster = self._require()
        try:
            return stored_history(self.store, node_id, step_s=forecaster.pipeline.step_s,
                                  sequence_length=forecaster.sequence_length, horizon_s=horizon_s,
                                  workload_type=workload_type)
        except NoStoredTelemetry as exc:
            if workload_id is None:
                raise
            raise WorkloadTelemetryMissing(f"{exc} (workload {workload_id!r})") from exc

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _batched(self, histories: list[PowerHistory]) -> list[PowerForecast]:
        return self._infer(histories)

    def _infer(self, histories: list[PowerHistory]) -> list[PowerForecast]:
        forecaster = self._require()
        started = time.perf_counter()
        result = forecast_histories(forecaster, histories, self.model_version)
        self.latency.record((time.perf_counter() - started) * 1000.0, self.model_version, count=len(histories))
        return result

    def _require(self) -> PowerForecaster:
        if self.forecaster is None:
            raise RuntimeError("no model loaded")
        return self.forecaster

    def check_health(self) -> None:
        self._require()


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
