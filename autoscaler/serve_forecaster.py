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

WINDOWS_PER_CALL = 32  # a tick's windows per call to a replica (each call warms at most a few cold nodes)


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
        """The tick's windows in concurrent calls of at most WINDOWS_PER_CALL (PowerPredictor.forecast_windows):
        Serve spreads them over the replicas, whose `@serve.batch` turns each into a few forward passes, and one call
        that fails or times out fails only its own windows."""
        parts = [range(first, min(first + WINDOWS_PER_CALL, len(windows)))
                 for first in range(0, len(windows), WINDOWS_PER_CALL)]

        async def forecast_all() -> list[Any]:
            handle = await self._handle()
            calls = [asyncio.wait_for(handle.forecast_windows.remote([nodes[i] for i in part],
                                                                     [windows[i] for i in part]), self.timeout_s)
                     for part in parts]
            return await asyncio.gather(*calls, return_exceptions=True)

        return [result for part, reply in zip(parts, self._run(forecast_all()), strict=True)
                for result in _checked(reply, len(part))]


def _checked(reply: Any, count: int) -> list[PowerForecast | Exception]:
    """One call's reply to `count` windows as one forecast or error each: a call that failed, or a reply that is not
    one entry per window, is an error for every window of it; an entry that is neither is an error of its own."""
    if isinstance(reply, BaseException):
        return [reply if isinstance(reply, Exception) else RuntimeError(repr(reply))] * count
    if not isinstance(reply, list) or len(reply) != count:
        answered = len(reply) if isinstance(reply, list) else type(reply).__name__
        return [RuntimeError(f"the forecaster answered {count} windows with {answered}")] * count
    return [a if isinstance(a, PowerForecast | Exception) else RuntimeError(f"not a forecast: {type(a).__name__}")
            for a in reply]
