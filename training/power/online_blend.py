"""The online blend: the served forecast's per-lead mix of the LSTM and the LightGBM kept to the one that has
recently been the more accurate, as the actuals of its forecasts arrive.

The blend's weights are chosen once, on the calibration split (training.power.blend). On telemetry of runs the
models never saw, that choice can be wrong: with one cut in time for all series, the LSTM beat the LightGBM by
13-20 % on the newest training runs of UPM workloads and then erred 52-61 % more on the next run (docs/results.md).
This follows the outcome of every candidate mix as the actuals arrive, for each lead: the exponentially weighted
mean absolute error of each LSTM weight on the blend's grid (0, 0.05, .., 1), over the model's scored forecasts
pooled across its series (a new node starts from what the others taught). A lead serves the weight with the lowest
such error once it has learned from at least `MIN_POINTS` scored forecasts of that lead, and only where it beats the
weight chosen on the calibration split by more than `MIN_GAIN` (the champion/challenger rule's margin); until then,
and otherwise, the calibration split's weight serves.

The half-life, `HALF_LIFE_POINTS` scored forecasts per lead, was set before measuring: long enough that a mix's error
is a mean over hundreds of outcomes, short against the thousands a day of forecasts at one step scores. A screen of
256, 512 and 1,024 (and margins of 0, 1 and 3 %) on the seed-0 backtests of the suite's cases (one cut in time) moved
no served MAE by 3 % or more, so the value is not a fit to one trace's rhythm. A model without both forecasts (no
served blend, or one that served the LSTM alone, saved before the LightGBM partner was always kept) keeps its static
weights. A lead is learned from only once its actual is known, so nothing is learned from the future.

Where it applies: a node's own stored-window forecasts and the scaling controller's windows of its nodes, which a
replica follows online (deployments/node_calibration.py learns it with the online calibration); `blend_in_time`
replays that over a backtest's, a simulation's or a holdout's windows in time order (so a version's held-out figures
and the promotion gate, training/power/holdout.py, score each version as a replica would serve it). A client's lists
keep the calibration split's mix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.power.blend import MIN_GAIN, WEIGHT_GRID
from training.power.online_calibration import in_time_order

HALF_LIFE_POINTS = 512
MIN_POINTS = 32
_DECAY = 0.5 ** (1.0 / HALF_LIFE_POINTS)


@dataclass
class OnlineBlend:
    """One model's running errors of every LSTM weight on the grid, per lead (index 0: a step ahead)."""

    start: np.ndarray  # [H] the weights chosen on the calibration split
    errors: np.ndarray  # [H, G] decayed sum of absolute errors of each grid weight (all of a lead decay alike)
    seen: np.ndarray  # [H] scored forecasts learned from, per lead
    points: int = 0  # scored leads learned from

    @classmethod
    def starting_at(cls, start: np.ndarray | tuple[float, ...]) -> OnlineBlend:
        weights = np.asarray(start, dtype=float)
        return cls(weights, np.zeros((weights.size, WEIGHT_GRID.size)), np.zeros(weights.size, dtype=np.int64))

    def weights(self) -> np.ndarray:
        """The LSTM weight each lead serves now [H]."""
        leads = np.arange(self.start.size)
        best = np.argmin(self.errors, axis=1)
        start = np.argmin(np.abs(WEIGHT_GRID[None, :] - self.start[:, None]), axis=1)
        better = (self.seen >= MIN_POINTS) & (self.errors[leads, best] < self.errors[leads, start] * (1.0 - MIN_GAIN))
        return np.where(better, WEIGHT_GRID[best], self.start)

    def learn(self, leads: np.ndarray, lstm_point: np.ndarray, gbm_point: np.ndarray, actual: np.ndarray) -> None:
        """Learn from scored leads `leads` [n] (0-based; beyond the horizon: ignored), each with the LSTM's and the
        LightGBM's point forecasts and the actual. The outcomes learned together weigh alike."""
        inside = leads < self.start.size
        leads, lstm_point, gbm_point, actual = leads[inside], lstm_point[inside], gbm_point[inside], actual[inside]
        if leads.size == 0:
            return
        mixed = WEIGHT_GRID[None, :] * lstm_point[:, None] + (1.0 - WEIGHT_GRID[None, :]) * gbm_point[:, None]
        counts = np.bincount(leads, minlength=self.start.size)
        self.errors *= (_DECAY ** counts)[:, None]
        np.add.at(self.errors, leads, np.abs(mixed - actual[:, None]))
        self.seen += counts
        self.points += int(leads.size)


def blend_in_time(lstm_point: np.ndarray, gbm_point: np.ndarray, actual: np.ndarray, observed: np.ndarray,
                  origin_time: np.ndarray, step_s: int, start: np.ndarray) -> np.ndarray:
    """The LSTM weight [N, H] each window's served forecast takes when the blend is followed in time order: the
    window from origin t uses every lead k of an earlier window that landed by t (origin + k steps ≤ t) on an
    observed actual (`observed` [N, H]), its series' and every other's alike."""
    blend = OnlineBlend.starting_at(start)
    weights = np.empty(lstm_point.shape)
    current = blend.weights()
    for row, rows, leads in in_time_order(observed, origin_time, step_s):
        if leads.size:
            blend.learn(leads, lstm_point[rows, leads], gbm_point[rows, leads], actual[rows, leads])
            current = blend.weights()
        weights[row] = current
    return weights
