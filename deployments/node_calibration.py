"""The online calibration of the nodes a PowerPredictor replica forecasts from the store.

Per model version a replica keeps a `ModelCalibration` (training/power/online_calibration.py: a correction pooled
over the version's nodes plus each node's own), and per (version, node) the forecasts it answered that still wait
for actuals, one per origin (the window's last bin: a node asked again before a new bin begins is answered from the
same window, so it teaches once; the forecast with the most leads is kept). A node's next stored window carries the
actuals: every bin of it before the newest (which may still be filling) where power was measured, not held over a
gap, scores the waiting leads that fall on it, each lead once. The window holds `sequence_length` steps, so a
forecast of a node asked again within that span has all its leads scored. Only windows read from the store feed it
(by the replica, or by the scaling controller, which hands its nodes' windows over through a Serve handle: no HTTP
route takes a window); a client's lists never do, so no request can steer another's intervals. Each replica learns
from the forecasts it answered itself (Serve spreads a node's requests over the replicas). Before a replica answers
a node's first stored forecast from a model version, it replays the model on the node's stored windows since that
version was registered (at most `WARM_ORIGINS`, oldest first: `warm`), as if it had been asked at every step: a
replica that starts (a restart, one more replica, a reload) goes on from the store's evidence rather than from
nothing, every replica from the same, and nothing the model trained on is scored (its training data ended before it
was registered). A node not warmed yet (a request warms a few nodes at a time; a replay the store failed is tried
again at the node's next request) is answered with its model's correction, and followed only once warmed.

The scaling controller's windows of its nodes (PowerPredictor.forecast_windows) are followed alike, after the
controller has been answered: they teach, and are kept waiting with the intervals this correction gives them, though
the controller gets the static ones (it corrects its peak bounds itself).

The same scored leads teach the version's online blend (training/power/online_blend.py, pooled over its nodes) for a
model with both the LSTM and the LightGBM: `lstm_weight` is the mix the version's next node-window forecasts serve,
the node's own and the controller's (a client's lists keep the calibration split's mix, as they keep the static
intervals).

Bounded: at most `MAX_VERSIONS` versions and `MAX_SERIES` (version, node) pairs (the least recently forecast go
first), and horizon + 2 waiting origins per pair (the oldest go first).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.forecasts import PowerForecast
from training.power.inference import rounded
from training.power.online_blend import OnlineBlend
from training.power.online_calibration import ModelCalibration, consistent_peak
from training.power.stored_history import StoredHistory

logger = logging.getLogger("ray.serve")
MAX_VERSIONS = 8
MAX_SERIES = 1024  # the default of PowerPredictorUserConfig.max_followed_nodes
WARM_ORIGINS = 128  # past windows a replica replays for a node it has not answered yet


@dataclass
class _Waiting:
    """A forecast as it was answered (float32 [h] per field), and which of its leads are still unscored."""

    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    confidence: np.ndarray
    unscored: np.ndarray  # [h] bool
    experts: np.ndarray | None  # [h, 2] the LSTM's and the LightGBM's points it blended; None: not a blend of both


class NodeCalibrations:
    """Corrects a node's stored-window forecasts by the outcomes of the ones before it (its own and its model's)."""

    def __init__(self, max_series: int = MAX_SERIES):
        self._max_series = max_series
        self.dropped = 0  # (version, node) pairs dropped beyond `max_series`, calibration and all
        self._models: OrderedDict[str, ModelCalibration] = OrderedDict()
        self._blends: dict[str, OnlineBlend] = {}  # per version in `_models`, for one that blends online
        self._waiting: OrderedDict[tuple[str, str], OrderedDict[float, _Waiting]] = OrderedDict()

    @property
    def max_series(self) -> int:
        """(version, node) pairs followed at most, and each version's nodes with a correction of their own."""
        return self._max_series

    @max_series.setter
    def max_series(self, value: int) -> None:  # a live change reaches the versions already followed too
        self._max_series = value
        for model in self._models.values():
            model.max_series = value

    def lstm_weight(self, version: str) -> np.ndarray | None:
        """The per-lead LSTM weight the online blend of `version` serves now; None before it learned anything (the
        calibration split's then serves)."""
        blend = self._blends.get(version)
        return blend.weights() if blend is not None and blend.points else None

    def correct(self, node_id: str, stored: StoredHistory, forecast: PowerForecast, horizon_steps: int, *,
                follow: bool = True, blend_start: tuple[float, ...] | None = None) -> PowerForecast:
        """Score the node's waiting forecasts on `stored` (its window), then answer `forecast` (made from that
        window by a model forecasting `horizon_steps` leads) corrected, and keep it waiting for its actuals.
        Without `follow` (a node not warmed yet), the answer is only corrected: nothing is scored or waits.
        `blend_start`: the per-lead LSTM weight chosen on the calibration split, for a model that blends online."""
        history = stored.history
        if history.end_time is None or history.step_s is None or history.step_s != forecast.step_s:
            return forecast  # not a stored window at the model's step: nothing to score it on
        model = self._model(forecast, horizon_steps)
        if blend_start is not None and forecast.model_version not in self._blends:
            self._blends[forecast.model_version] = OnlineBlend.starting_at(blend_start)
        if follow:
            waiting = self._queue(forecast.model_version, node_id)
            _score(model, self._blends.get(forecast.model_version), node_id, waiting, stored)
        point = np.asarray(forecast.point, dtype=float)
        lower, upper, confidence = model.adapt(node_id, point, np.asarray(forecast.lower, dtype=float),
                                               np.asarray(forecast.upper, dtype=float),
                                               np.asarray(forecast.confidence, dtype=float))
        if follow:
            origin = history.end_time.timestamp()
            kept = waiting.get(origin)
            if kept is None or kept.point.size <= point.size:  # one per origin: the one with the most leads
                experts = (None if forecast.blend_experts is None else
                           np.asarray(forecast.blend_experts, dtype=np.float32).T)
                unscored = np.ones(point.size, dtype=bool)
                if kept is not None:  # leads the kept one was scored at are never learned from twice
                    unscored[:kept.unscored.size] &= kept.unscored
                waiting[origin] = _Waiting(*(np.asarray(a, dtype=np.float32) for a in (point, lower, upper,
                                                                                        confidence)),
                                           unscored, experts)
            while len(waiting) > max(horizon_steps, point.size) + 2:
                waiting.popitem(last=False)
        peak = consistent_peak(None if forecast.peak_upper is None else np.asarray(forecast.peak_upper), upper)
        return forecast.model_copy(update={  # rounded as the static answer is (training.power.inference)
            "lower": rounded(lower), "upper": rounded(upper), "confidence": rounded(confidence, 4),
            "peak_upper": None if peak is None else rounded(peak),
            "online_calibration_points": model.pooled.points})

    def _forget(self, version: str) -> None:
        """Drop what `version` learned, its nodes' waiting forecasts too: each is cold again, so a replica that
        forecasts it once more warms the node on its past windows instead of starting from no points."""
        self._blends.pop(version, None)
        for key in [key for key in self._waiting if key[0] == version]:
            del self._waiting[key]

    def cold(self, version: str, node_id: str) -> bool:
        """Whether this replica follows none of the node's stored-window forecasts from `version` (it has not
        warmed or answered the node yet, or forgot it)."""
        return (version, node_id) not in self._waiting

    def warm(self, node_id: str, windows: Sequence[StoredHistory], forecasts: Sequence[PowerForecast],
             horizon_steps: int, blend_start: tuple[float, ...] | None = None) -> None:
        """Learn from the node's past windows (oldest first) and the forecasts made from them, as if it had been
        asked at each."""
        for stored, forecast in zip(windows, forecasts, strict=True):
            self.correct(node_id, stored, forecast, horizon_steps, blend_start=blend_start)

    def _model(self, forecast: PowerForecast, horizon_steps: int) -> ModelCalibration:
        model = self._models.get(forecast.model_version)
        if model is None:
            model = ModelCalibration(max(horizon_steps, len(forecast.point)), forecast.step_s,
                                     forecast.interval_coverage, forecast.confidence_tolerance,
                                     max_series=self.max_series)
            self._models[forecast.model_version] = model
            while len(self._models) > MAX_VERSIONS:
                self._forget(self._models.popitem(last=False)[0])
        self._models.move_to_end(forecast.model_version)
        return model

    def _queue(self, version: str, node_id: str) -> OrderedDict[float, _Waiting]:
        key = (version, node_id)
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = OrderedDict()
            while len(self._waiting) > self.max_series:
                self._waiting.popitem(last=False)
                if not self.dropped:
                    logger.warning("online calibration: more than %d (version, node) pairs followed; the least "
                                   "recently forecast are dropped and warmed again when next asked (raise the "
                                   "PowerPredictor's max_followed_nodes above the nodes forecast from the store "
                                   "times their resolutions)", self.max_series)
                self.dropped += 1
        self._waiting.move_to_end(key)
        return waiting


def _score(model: ModelCalibration, blend: OnlineBlend | None, node_id: str, waiting: OrderedDict[float, _Waiting],
           stored: StoredHistory) -> None:
    """Learn, in one step as the backtest does (training.power.online_calibration.adapt_in_time), from the waiting
    leads that land on a measured bin of the window, before its newest bin: the calibration, and the blend from the
    forecasts that blended both models."""
    history = stored.history
    step, bins = history.step_s, len(history.power_watts)
    first = history.end_time.timestamp() - step * (bins - 1)
    power = np.asarray(history.power_watts, dtype=float)
    measured = np.asarray(stored.measured, dtype=bool) if stored.measured else np.isfinite(power)
    scoreable = bins - 1  # the newest bin may still be filling: scored at the next window
    scored = []  # per origin: its leads scored now, as served, and the bins they landed on
    blended = []  # per origin that blended both models: its leads scored now, both models' points, the bins
    for origin in list(waiting):
        forecast = waiting[origin]
        index = np.rint((origin - first) / step).astype(int) + 1 + np.arange(forecast.point.size)
        inside = (index >= 0) & (index < scoreable)
        leads = np.flatnonzero(inside & forecast.unscored)
        leads = leads[measured[index[leads]]]
        if leads.size:
            scored.append((leads, forecast.point[leads], forecast.lower[leads], forecast.upper[leads],
                           forecast.confidence[leads], index[leads]))
            if forecast.experts is not None:
                blended.append((leads, forecast.experts[leads], index[leads]))
            forecast.unscored[leads] = False
        if index[-1] < scoreable:  # every lead's bin is behind: scored, or never measured
            del waiting[origin]
    if scored:
        leads, point, lower, upper, confidence, at = (np.concatenate(parts) for parts in zip(*scored, strict=True))
        model.learn(node_id, leads, point, lower, upper, confidence, power[at], first + step * float(at.max()))
    if blend is not None and blended:
        leads, experts, at = (np.concatenate(parts) for parts in zip(*blended, strict=True))
        blend.learn(leads, experts[:, 0], experts[:, 1], power[at])
