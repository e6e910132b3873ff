"""Online calibration: a series' intervals and confidence kept true by the outcomes of its own recent forecasts.

The static calibration (training.power.calibration) is fitted once, on the calibration split. Where the period
forecast later is calmer or wilder than that split, the intervals cover more or less than they promise, and the
confidence drifts from the hit rate the same way. This follows each lead's outcomes as the actuals arrive, a
quantile tracker in the manner of adaptive conformal inference (Gibbs & Candès 2021; Angelopoulos, Candès &
Tibshirani 2023):

- **Intervals:** each lead's interval is stretched or shrunk around the point forecast by a factor exp(θ); after
  each scored lead θ += `WIDTH_RATE` × (missed − (1 − coverage)). A miss widens it by 4 × what a cover narrows it
  by at 80 %, so over any long run the share of missed actuals comes to the nominal miss rate, whatever the shift.
- **Confidence:** each lead's stated confidence is moved by a shift b; after each scored lead
  b += `CONFIDENCE_RATE` × (hit − stated), so the mean stated confidence comes to the hit rate.
- **Pooled and own:** a model's correction is the sum of one tracker fed by every series it forecasts (a new node
  starts from what the others taught) and one per series fed by that series alone (so each series' own long-run
  miss rate still comes to the nominal one). The pooled tracker's rate is divided by the series that learned within
  the last two steps, so it moves about as fast for a cluster of nodes as for one.

Both stay within bounds (widths × 1/4..4, confidence ± 0.5), so a burst of outliers cannot blow a forecast up. The
rates are fixed a priori (not fitted to any trace): a width step of 5 % per scored point and a confidence step of
1 %, slow against the thousands of points a day of forecasts at one step scores, fast against a regime that lasts
hours. A lead is learned from only once its actual is known (k steps after the origin, at lead k), so nothing is
learned from the future. `adapt_in_time` replays this over a backtest's windows in time order, as the model's nodes
forecast at every step would see it; the PowerPredictor does the same for the nodes it forecasts from the store
(deployments/node_calibration.py).
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from training.power.calibration import CalibratedForecast

WIDTH_RATE = 0.05
CONFIDENCE_RATE = 0.01
MAX_WIDTH_FACTOR = 4.0
MAX_CONFIDENCE_SHIFT = 0.5


@dataclass
class OnlineCalibration:
    """One tracker's running corrections, per lead (index 0: a step ahead); the arrays grow with the leads seen."""

    log_width: np.ndarray  # [H] θ per lead
    confidence_shift: np.ndarray  # [H] b per lead
    points: int = 0  # scored leads learned from
    last_s: float = -math.inf  # when it last learned (the newest scored bin, unix seconds)

    @classmethod
    def start(cls, horizon: int) -> OnlineCalibration:
        return cls(np.zeros(horizon), np.zeros(horizon))

    def reach(self, leads: int) -> None:
        """Hold at least `leads` leads (a model answering longer horizons than first seen)."""
        if leads > self.log_width.size:
            extra = np.zeros(leads - self.log_width.size)
            self.log_width = np.concatenate([self.log_width, extra])
            self.confidence_shift = np.concatenate([self.confidence_shift, extra])

    def step(self, leads: np.ndarray, width_error: np.ndarray, confidence_error: np.ndarray | None,
             rate: float = 1.0) -> None:
        """Learn from scored leads `leads` [n] (0-based): missed − nominal miss rate, and hit − stated confidence;
        `rate` scales both steps."""
        self.reach(int(leads.max()) + 1)
        np.add.at(self.log_width, leads, rate * WIDTH_RATE * width_error)
        bound = math.log(MAX_WIDTH_FACTOR)
        np.clip(self.log_width, -bound, bound, out=self.log_width)
        if confidence_error is not None:
            np.add.at(self.confidence_shift, leads, rate * CONFIDENCE_RATE * confidence_error)
            np.clip(self.confidence_shift, -MAX_CONFIDENCE_SHIFT, MAX_CONFIDENCE_SHIFT, out=self.confidence_shift)
        self.points += int(leads.size)


@dataclass
class ModelCalibration:
    """A model's online correction: a tracker pooled over its series, plus each series' own (the `max_series`
    most recently learned or forecast are kept)."""

    horizon: int
    step_s: int
    coverage: float  # the nominal coverage of the interval
    tolerance: float | None  # the confidence band (a fraction of the point); None: confidence is left as stated
    max_series: int = 1024
    pooled: OnlineCalibration = field(init=False)
    own: OrderedDict[str, OnlineCalibration] = field(init=False, default_factory=OrderedDict)
    _learned_at: list[float] = field(init=False, default_factory=list)  # every own tracker's last_s, sorted

    def __post_init__(self) -> None:
        self.pooled = OnlineCalibration.start(self.horizon)

    def adapt(self, series: str, point: np.ndarray, lower: np.ndarray, upper: np.ndarray,
              confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The corrected lower, upper and confidence of `series`' forecasts [..., h] (from lead 1)."""
        leads = point.shape[-1]
        own = self._own(series)
        own.reach(leads)
        self.pooled.reach(leads)
        bound = math.log(MAX_WIDTH_FACTOR)
        factor = np.exp(np.clip(self.pooled.log_width[:leads] + own.log_width[:leads], -bound, bound))
        new_lower = np.maximum(point - (point - lower) * factor, 0.0)
        new_upper = point + (upper - point) * factor
        if self.tolerance is None:
            return new_lower, new_upper, confidence
        shift = np.clip(self.pooled.confidence_shift[:leads] + own.confidence_shift[:leads], -MAX_CONFIDENCE_SHIFT,
                        MAX_CONFIDENCE_SHIFT)
        return new_lower, new_upper, np.clip(confidence + shift, 0.0, 1.0)

    def learn(self, series: str, leads: np.ndarray, point: np.ndarray, lower: np.ndarray, upper: np.ndarray,
              confidence: np.ndarray, actual: np.ndarray, at_s: float) -> None:
        """Learn from `series`' scored leads: `leads` [n] (0-based) and, at each, the forecast as it was served
        (already corrected) and the actual; `at_s`: the newest scored bin's time (unix seconds)."""
        if leads.size == 0:
            return
        width_error = ((actual < lower) | (actual > upper)).astype(float) - (1.0 - self.coverage)
        confidence_error = None
        if self.tolerance is not None:
            confidence_error = (np.abs(actual - point) <= self.tolerance * np.abs(point)).astype(float) - confidence
        own = self._own(series)
        own.step(leads, width_error, confidence_error)
        if at_s > own.last_s:
            self._forget_time(own.last_s)
            bisect.insort(self._learned_at, at_s)
            own.last_s = at_s
        # the series that learned within the last two steps, found in log time (a tick over thousands of nodes)
        learning = len(self._learned_at) - bisect.bisect_right(self._learned_at, at_s - 2 * self.step_s)
        self.pooled.step(leads, width_error, confidence_error, rate=1.0 / max(learning, 1))

    def _own(self, series: str) -> OnlineCalibration:
        own = self.own.get(series)
        if own is None:
            own = self.own[series] = OnlineCalibration.start(self.horizon)
            bisect.insort(self._learned_at, own.last_s)
            while len(self.own) > self.max_series:
                self._forget_time(self.own.popitem(last=False)[1].last_s)
        self.own.move_to_end(series)
        return own

    def _forget_time(self, last_s: float) -> None:
        del self._learned_at[bisect.bisect_left(self._learned_at, last_s)]


def consistent_peak(peak_upper: np.ndarray | None, upper: np.ndarray) -> np.ndarray | None:
    """The peak bound over leads 1..k never below the corrected per-step uppers up to k (the bound itself is the
    static calibration's: training.power.peak_bound)."""
    if peak_upper is None:
        return None
    return np.maximum(peak_upper, np.maximum.accumulate(upper, axis=-1))


def in_time_order(observed: np.ndarray, origin_time: np.ndarray,
                  step_s: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Windows [N, H] from origins at `origin_time` [N] (datetime64) in time order: for each, its row and the
    (rows [n], leads [n]) of every earlier window's lead that landed since the window before it (origin + k steps ≤
    this origin) on an observed actual (`observed` [N, H]; imputed bins are never learned from)."""
    origins = origin_time.astype("datetime64[s]").astype(np.int64)
    rows, leads = np.nonzero(observed)
    landed = origins[rows] + (leads + 1) * step_s
    order = np.argsort(landed, kind="stable")
    rows, leads, landed = rows[order], leads[order], landed[order]
    done = 0
    for row in np.argsort(origins, kind="stable"):
        ready = int(np.searchsorted(landed, origins[row], side="right"))
        yield int(row), rows[done:ready], leads[done:ready]
        done = ready


def adapt_in_time(forecast: CalibratedForecast, actual: np.ndarray, observed: np.ndarray, series: np.ndarray,
                  origin_time: np.ndarray, step_s: int, *, coverage: float,
                  tolerance: float | None) -> CalibratedForecast:
    """Forecasts [N, H] of series `series` [N] from origins at `origin_time` [N] (datetime64), corrected online in
    time order: the forecast at time t uses the outcome of every lead k of an earlier forecast that landed by t
    (origin + k steps ≤ t) on an observed actual (`observed` [N, H]; imputed bins are never learned from)."""
    lower, upper, confidence = forecast.lower.copy(), forecast.upper.copy(), forecast.confidence.copy()
    horizon = forecast.point.shape[1]
    names, codes = np.unique(np.asarray(series).astype(str), return_inverse=True)
    model = ModelCalibration(horizon, step_s, coverage, tolerance, max_series=max(1, names.size))
    origins = origin_time.astype("datetime64[s]").astype(np.int64)
    for row, rows, leads in in_time_order(observed, origin_time, step_s):
        for code in np.unique(codes[rows]):  # series by series
            mine = codes[rows] == code
            r, k = rows[mine], leads[mine]
            model.learn(str(names[code]), k, forecast.point[r, k], lower[r, k], upper[r, k], confidence[r, k],
                        actual[r, k], float((origins[r] + (k + 1) * step_s).max()))
        lower[row], upper[row], confidence[row] = model.adapt(str(names[codes[row]]), forecast.point[row],
                                                              forecast.lower[row], forecast.upper[row],
                                                              forecast.confidence[row])
    return replace(forecast, lower=lower, upper=upper, confidence=confidence,
                   peak_upper=consistent_peak(forecast.peak_upper, upper))
