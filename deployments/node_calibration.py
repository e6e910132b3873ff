"""The online calibration of the nodes a PowerPredictor replica forecasts from the store.

Per model version a replica keeps a `ModelCalibration` (training/power/online_calibration.py: a correction pooled
over the version's nodes plus each node's own), and per (version, node) the forecasts it answered that still wait
for actuals. A node's next stored window carries those actuals: every bin of it before the newest (which may still
be filling) that has a power value scores the waiting leads that fall on it, each lead once (a bin the store held
over a short gap counts with its held value, as the model reads it). The window holds `sequence_length` steps,
so a forecast of a node asked again within that span has all its leads scored. Only windows read from the store
feed it; a client's lists never do, so no request can steer another's intervals. Each replica learns from the
forecasts it answered itself (Serve spreads a node's requests over the replicas), and a new model version starts
uncorrected.

Bounded: at most `MAX_VERSIONS` versions and `MAX_SERIES` (version, node) pairs (the least recently forecast go
first), and `MAX_WAITING` forecasts per pair (the oldest go first).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from core.forecasts import PowerForecast, PowerHistory
from training.power.online_calibration import ModelCalibration, consistent_peak

MAX_VERSIONS = 8
MAX_SERIES = 4096
MAX_WAITING = 64


@dataclass
class _Waiting:
    """A forecast as it was answered, and which of its leads are still unscored."""

    times: list[datetime]
    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    confidence: np.ndarray
    unscored: np.ndarray  # [h] bool


class NodeCalibrations:
    """Corrects a node's stored-window forecasts by the outcomes of the ones before it (its own and its model's)."""

    def __init__(self, max_series: int = MAX_SERIES, max_waiting: int = MAX_WAITING):
        self.max_series, self.max_waiting = max_series, max_waiting
        self._models: OrderedDict[str, ModelCalibration] = OrderedDict()
        self._waiting: OrderedDict[tuple[str, str], deque[_Waiting]] = OrderedDict()

    def correct(self, node_id: str, history: PowerHistory, forecast: PowerForecast,
                horizon_steps: int) -> PowerForecast:
        """Score the node's waiting forecasts on `history` (its stored window), then answer `forecast` (made from
        that window by a model forecasting `horizon_steps` leads) corrected, and keep it waiting for its actuals."""
        model = self._model(forecast, horizon_steps)
        waiting = self._queue(forecast.model_version, node_id)
        _score(model, node_id, waiting, history)
        point = np.asarray(forecast.point, dtype=float)
        lower, upper, confidence = model.adapt(node_id, point, np.asarray(forecast.lower, dtype=float),
                                               np.asarray(forecast.upper, dtype=float),
                                               np.asarray(forecast.confidence, dtype=float))
        waiting.append(_Waiting(list(forecast.timestamps), point, lower, upper, confidence,
                                np.ones(point.size, dtype=bool)))
        peak = consistent_peak(None if forecast.peak_upper is None else np.asarray(forecast.peak_upper), upper)
        return forecast.model_copy(update={
            "lower": tuple(lower.tolist()), "upper": tuple(upper.tolist()), "confidence": tuple(confidence.tolist()),
            "peak_upper": None if peak is None else tuple(peak.tolist()),
            "online_calibration_points": model.pooled.points})

    def _model(self, forecast: PowerForecast, horizon_steps: int) -> ModelCalibration:
        model = self._models.get(forecast.model_version)
        if model is None:
            model = ModelCalibration(max(horizon_steps, len(forecast.point)), forecast.interval_coverage,
                                     forecast.confidence_tolerance, max_series=self.max_series)
            self._models[forecast.model_version] = model
            while len(self._models) > MAX_VERSIONS:
                self._models.popitem(last=False)
        self._models.move_to_end(forecast.model_version)
        return model

    def _queue(self, version: str, node_id: str) -> deque[_Waiting]:
        key = (version, node_id)
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = deque(maxlen=self.max_waiting)
            while len(self._waiting) > self.max_series:
                self._waiting.popitem(last=False)
        self._waiting.move_to_end(key)
        return waiting


def _score(model: ModelCalibration, node_id: str, waiting: deque[_Waiting], history: PowerHistory) -> None:
    """Learn from the waiting leads that land on a bin of `history` with power, before its newest bin."""
    if history.end_time is None or history.step_s is None or len(history.power_watts) < 2:
        return
    step = timedelta(seconds=history.step_s)
    values = history.power_watts[:-1]  # the newest bin may still be filling: scored at the next window
    first = history.end_time - step * (len(history.power_watts) - 1)
    actual = {first + step * i: watts for i, watts in enumerate(values) if np.isfinite(watts)}
    newest = first + step * (len(values) - 1)
    for forecast in waiting:
        leads = np.array([i for i, at in enumerate(forecast.times) if forecast.unscored[i] and at in actual],
                         dtype=int)
        if leads.size:
            model.learn(node_id, leads, forecast.point[leads], forecast.lower[leads], forecast.upper[leads],
                        forecast.confidence[leads], np.array([actual[forecast.times[i]] for i in leads]))
            forecast.unscored[leads] = False
    while waiting and (not waiting[0].unscored.any() or waiting[0].times[-1] <= newest):
        waiting.popleft()  # scored, or its unscored leads fell in bins without power: never scored
