"""The controller's view of the served forecaster: the PowerPredictor deployment, through a handle.

The handle calls run on the process's handle loop (core/handle_loop.py), so the controller's tick
thread stays synchronous whatever Serve's router settings are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from ray.serve.handle import DeploymentHandle

from autoscaler.controller import ModelShape
from core.forecasts import PowerForecast, ServedModel
from core.handle_loop import LOOKUP_TIMEOUT_S, deployment_handle, run_with_handles
from core.names import POWER_APP, POWER_DEPLOYMENT
from training.power.stored_history import StoredHistory


class ServeForecaster:
    """Calls `describe` and `forecast_windows` of the PowerPredictor replicas."""

    def __init__(self, app_name: str = POWER_APP, deployment: str = POWER_DEPLOYMENT, timeout_s: float = 30.0):
        self.app_name, self.deployment, self.timeout_s = app_name, deployment, timeout_s

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return run_with_handles(coroutine, LOOKUP_TIMEOUT_S + self.timeout_s + 5)

    async def _handle(self) -> DeploymentHandle:
        return await deployment_handle(self.deployment, self.app_name)

    def shape(self) -> ModelShape:
        async def describe() -> ServedModel:
            return await asyncio.wait_for((await self._handle()).describe.remote(), self.timeout_s)

        served = self._run(describe())
        return ModelShape(model_version=served.model_version, step_s=served.step_seconds,
                          sequence_length=served.sequence_length, horizon_steps=served.horizon_steps,
                          max_gap_s=served.max_gap_seconds)

    def forecast(self, nodes: Sequence[str], windows: Sequence[StoredHistory]) -> list[PowerForecast | Exception]:
        """The tick's windows in one call: the replica forecasts them concurrently (its `@serve.batch` turns them
        into a few forward passes) and follows them as its nodes' own (PowerPredictor.forecast_windows)."""
        async def forecast_all() -> list[Any]:
            handle = await self._handle()
            return await asyncio.wait_for(handle.forecast_windows.remote(list(nodes), list(windows)), self.timeout_s)

        answers = self._run(forecast_all())
        if not isinstance(answers, list) or len(answers) != len(windows):
            raise RuntimeError(f"the forecaster answered {len(windows)} windows with "
                               f"{len(answers) if isinstance(answers, list) else type(answers).__name__}")
        return [a if isinstance(a, PowerForecast | Exception) else RuntimeError(f"not a forecast: {type(a).__name__}")
                for a in answers]
