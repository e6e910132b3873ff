"""The controller's view of the served forecaster: the PowerPredictor deployment, through a handle."""

from __future__ import annotations

from collections.abc import Sequence

from ray import serve

from autoscaler.controller import ModelShape
from training.inference import PowerForecast, PowerHistory


class ServeForecaster:
    """Calls `describe` and `forecast` of the PowerPredictor replicas; many histories go out concurrently,
    so the replicas' `@serve.batch` turns one tick into a few forward passes."""

    def __init__(self, app_name: str = "kcloud-power", deployment: str = "PowerPredictor", timeout_s: float = 30.0):
        self.app_name, self.deployment, self.timeout_s = app_name, deployment, timeout_s

    def _handle(self):
        return serve.get_deployment_handle(self.deployment, app_name=self.app_name)

    def shape(self) -> ModelShape:
        described = self._handle().describe.remote().result(timeout_s=self.timeout_s)
        return ModelShape(model_version=described["model_version"], step_s=described["step_seconds"],
                          sequence_length=described["sequence_length"], horizon_steps=described["horizon_steps"])

    def forecast(self, histories: Sequence[PowerHistory]) -> list[PowerForecast | Exception]:
        handle = self._handle()
        responses = [handle.forecast.remote(history) for history in histories]
        results: list[PowerForecast | Exception] = []
        for response in responses:
            try:
                results.append(response.result(timeout_s=self.timeout_s))
            except Exception as exc:  # noqa: BLE001 - one failed node must not sink the others
                results.append(exc)
        return results
