"""The served forecast: the LSTM, the direct LightGBM, or a per-lead weighted average of the two.

Which one is chosen on the calibration split (held out from fitting, never the test points) by a
champion/challenger rule: the LSTM is the champion; a challenger replaces it only with an MAE lower by
more than `MIN_GAIN` there. The combination's per-lead weights are fitted on that same split, so its MAE
there is measured cross-fitted (weights fitted on one half of the split's time, scored on the other,
and back) to be comparable with the two single models. The served interval keeps the LSTM's quantile
spread around the served point and is then conformally calibrated on the calibration split, like the
LSTM's own.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from training.power.calibration import CalibratedForecast, Calibration, fit_calibration

ServedMethod = Literal["lstm", "lightgbm", "combined"]
PREFERENCE: tuple[ServedMethod, ...] = ("lstm", "lightgbm", "combined")  # champion first, then simplest
MIN_GAIN = 0.01  # a candidate serves only if every one before it in PREFERENCE is over 1 % worse than the best
WEIGHT_GRID = np.linspace(0.0, 1.0, 21)


class ServedBlend(BaseModel):
    """What the service answers with; saved beside the weights as served.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: ServedMethod
    lstm_weight: tuple[float, ...]  # per lead: the LSTM's share of the point (1 = LSTM alone, 0 = GBM alone)
    calibration: Calibration  # conformal intervals and confidence of the served forecast
    calibration_mae: dict[str, float]  # every candidate's MAE on the calibration split (combined: cross-fitted)

    @property
    def needs_gbm(self) -> bool:
        return self.method != "lstm"

    def quantiles(self, lstm_quantiles: np.ndarray, gbm_point: np.ndarray | None,
                  lstm_weight: np.ndarray | None = None) -> np.ndarray:
        """Uncalibrated served (lower, median, upper) [N, H, 3] from the LSTM's [N, H, 3] and the GBM's [N, H];
        `lstm_weight` ([H] or [N, H], from the online blend) instead of the calibration split's."""
        horizon = lstm_quantiles.shape[1]
        if lstm_weight is None:
            if self.method == "lstm":
                return lstm_quantiles
            lstm_weight = np.asarray(self.lstm_weight)
        if gbm_point is None:
            raise ValueError(f"the {self.method} forecast needs the LightGBM forecast")
        return blend_quantiles(lstm_quantiles, gbm_point, np.asarray(lstm_weight)[..., :horizon])

    def apply(self, lstm_quantiles: np.ndarray, gbm_point: np.ndarray | None,
              lstm_weight: np.ndarray | None = None) -> CalibratedForecast:
        """The calibrated served forecast (`quantiles`), with both models' points where both forecast."""
        forecast = self.calibration.apply(self.quantiles(lstm_quantiles, gbm_point, lstm_weight))
        if gbm_point is None:
            return forecast
        return replace(forecast, experts=np.stack([lstm_quantiles[..., 1], gbm_point], axis=-1))


def blend_quantiles(lstm_quantiles: np.ndarray, gbm_point: np.ndarray, lstm_weight: np.ndarray) -> np.ndarray:
    """Served point = w * LSTM median + (1 - w) * GBM per lead (`lstm_weight` [H], or [N, H] per window); the LSTM's
    spread moved around it."""
    median = lstm_quantiles[..., 1]
    weight = np.broadcast_to(lstm_weight, median.shape)
    point = weight * median + (1.0 - weight) * gbm_point
    below, above = median - lstm_quantiles[..., 0], lstm_quantiles[..., 2] - median
    return np.stack([point - below, point, point + above], axis=-1)


def fit_weights(lstm_point: np.ndarray, gbm_point: np.ndarray, actual: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per lead, the LSTM weight on `WEIGHT_GRID` with the lowest MAE (1 where a lead has no points)."""
    weights = np.ones(actual.shape[1])
    for lead in range(actual.shape[1]):
        rows = mask[:, lead]
        if not rows.any():
            continue
        mixed = WEIGHT_GRID[:, None] * lstm_point[rows, lead] + (1 - WEIGHT_GRID[:, None]) * gbm_point[rows, lead]
        errors = np.abs(mixed - actual[rows, lead]).mean(axis=1)
        weights[lead] = WEIGHT_GRID[int(np.argmin(errors))]
    return weights


def time_halves(segment_index: np.ndarray, origin_index: np.ndarray) -> np.ndarray:
    """Fold (0 or 1) of every window: the earlier or the later half of its segment's windows."""
    folds = np.zeros(len(origin_index), dtype=int)
    for segment in np.unique(segment_index):
        rows = np.flatnonzero(segment_index == segment)
        order = rows[np.argsort(origin_index[rows], kind="stable")]
        folds[order[len(order) // 2:]] = 1
    return folds


def cross_fitted_mae(lstm_point: np.ndarray, gbm_point: np.ndarray, actual: np.ndarray, mask: np.ndarray,
                     folds: np.ndarray) -> float:
    """MAE of the combination when each half's weights are fitted on the other half."""
    errors = []
    for fold in (0, 1):
        train, score = folds != fold, folds == fold
        if not (mask[train].any() and mask[score].any()):
            return float("inf")
        weights = fit_weights(lstm_point[train], gbm_point[train], actual[train], mask[train])
        mixed = weights[None, :] * lstm_point[score] + (1 - weights[None, :]) * gbm_point[score]
        errors.append(np.abs(mixed - actual[score])[mask[score]])
    return float(np.concatenate(errors).mean())


def choose_served(lstm_quantiles: np.ndarray, gbm_point: np.ndarray, actual: np.ndarray, mask: np.ndarray,
                  folds: np.ndarray, *, coverage: float, tolerance: float) -> ServedBlend:
    """Pick and calibrate the served forecast on the calibration split (all arrays are its windows)."""
    lstm_point = lstm_quantiles[..., 1]
    scores = {
        "lstm": float(np.abs(lstm_point - actual)[mask].mean()),
        "lightgbm": float(np.abs(gbm_point - actual)[mask].mean()),
        "combined": cross_fitted_mae(lstm_point, gbm_point, actual, mask, folds),
    }
    ranked = {name: score if math.isfinite(score) else math.inf for name, score in scores.items()}  # NaN: worst
    best = min(ranked.values())
    method = next(name for name in PREFERENCE if ranked[name] <= best * (1.0 + MIN_GAIN))
    horizon = actual.shape[1]
    weights = {"lstm": np.ones(horizon), "lightgbm": np.zeros(horizon),
               "combined": fit_weights(lstm_point, gbm_point, actual, mask)}[method]
    quantiles = blend_quantiles(lstm_quantiles, gbm_point, weights)
    calibration = fit_calibration(quantiles, actual, mask, coverage=coverage, tolerance=tolerance)
    return ServedBlend(method=method, lstm_weight=tuple(float(w) for w in weights), calibration=calibration,
                       calibration_mae={k: round(v, 4) for k, v in scores.items()})
