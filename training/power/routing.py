"""Which served power model answers a forecast: the finest step whose horizon covers the request.

A 1-minute model cannot honestly forecast a day, and an hourly one says nothing about the next ten minutes,
so the service serves several resolutions (training.settings `predictor.resolutions`) and sends each request
to the model of the smallest step that reaches its horizon in whole steps. A caller whose history is at a
given step (a stored window, the scaling controller) is answered only by a model of that step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.durations import format_duration
from core.forecasts import ForecastRequestError


@dataclass(frozen=True)
class Coverage:
    """What one served model can answer."""

    model_id: str
    step_s: int
    horizon_s: int

    def answers(self, horizon_s: int, step_s: int | None = None) -> bool:
        return (horizon_s <= self.horizon_s and horizon_s % self.step_s == 0
                and (step_s is None or step_s == self.step_s))

    def describe(self) -> str:
        return f"{self.model_id}: {format_duration(self.step_s)} steps up to {format_duration(self.horizon_s)}"


def route(served: Sequence[Coverage], horizon_s: int, step_s: int | None = None) -> str:
    """The id of the model that answers a `horizon_s` forecast (of a history at `step_s`, when given).

    Raises:
        ForecastRequestError: no served model answers it; the message lists what each one covers.
    """
    candidates = [model for model in served if model.answers(horizon_s, step_s)]
    if candidates:
        return min(candidates, key=lambda model: (model.step_s, model.horizon_s)).model_id
    within = [model for model in served if horizon_s <= model.horizon_s and (step_s is None or step_s == model.step_s)]
    offered = "; ".join(model.describe() for model in sorted(served, key=lambda m: m.step_s))
    if within:
        steps = " or ".join(format_duration(model.step_s) for model in within)
        reason = f"must be a whole number of the served model's steps ({steps}; served: {offered})"
    else:
        reason = (f"{format_duration(horizon_s)} is beyond the served models' horizons ({offered}); "
                  "train a model with a longer horizon (train_lstm --horizon)")
    if step_s is not None and not any(model.step_s == step_s for model in served):
        raise ForecastRequestError("step", f"no served model works at a {format_duration(step_s)} step ({offered})")
    raise ForecastRequestError("prediction_horizon", reason)
