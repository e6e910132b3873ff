"""The forecasts the LSTM must beat: last value, seasonal naive and a direct multi-horizon LightGBM.

All of them forecast from the same origins as the LSTM and see no more than the LSTM does. LightGBM is
built to be strong: it reads the same input window (lags, recent level and spread, load features,
workload), the lead time is a feature (one direct model for every lead), it predicts the change from the
last value with an L1 objective, and it early-stops on the same calibration tail.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from training.power.features import Segment
from training.power.windows import Windows

_MIN_PERIOD_ACF = 0.3
_MIN_PERIOD_RISE = 0.1
_LGBM_LAGS = 12


def last_value(windows: Windows) -> np.ndarray:
    """[N, H]: the power at the origin, for every lead."""
    return np.repeat(windows.last_power[:, None], windows.targets.shape[1], axis=1)


def seasonal_naive(windows: Windows, segments: list[Segment], period: int) -> np.ndarray:
    """[N, H]: the value one season before the target, stepping back whole seasons until it is known
    at the origin. NaN where the segment does not reach back that far."""
    horizon = windows.targets.shape[1]
    leads = np.arange(1, horizon + 1)
    seasons_back = np.ceil(leads / period).astype(int)
    forecast = np.full(windows.targets.shape, np.nan)
    for row, (segment_index, origin) in enumerate(zip(windows.segment_index, windows.origin_index, strict=True)):
        source = origin + leads - seasons_back * period
        ok = source >= 0
        forecast[row, ok] = segments[segment_index].power[source[ok]]
    return forecast


def seasonal_period(series: list[np.ndarray], step_s: int, *, max_lag: int | None = None) -> int | None:
    """Season length in steps: a day when the data spans two days or more, else the dominant
    autocorrelation peak of the (training) series; None when there is no clear one."""
    longest = max(len(s) for s in series)
    day = 86400 // step_s
    if longest >= 2 * day:
        return day
    max_lag = min(max_lag or longest // 2, longest // 2)
    if max_lag < 3:
        return None
    acf = np.zeros(max_lag + 1)
    weight = 0.0
    for values in series:
        if len(values) < 2 * max_lag:
            continue
        centered = values - values.mean()
        denominator = float((centered**2).sum())
        if denominator <= 0:
            continue
        acf += len(values) * np.array([(centered[: len(values) - k] * centered[k:]).sum() / denominator
                                       for k in range(max_lag + 1)])
        weight += len(values)
    if weight == 0:
        return None
    acf /= weight
    trough = next((k for k in range(1, max_lag) if acf[k] <= acf[k + 1]), None)
    if trough is None:
        return None
    peak = trough + int(np.argmax(acf[trough:]))
    if acf[peak] >= _MIN_PERIOD_ACF and acf[peak] - acf[trough] >= _MIN_PERIOD_RISE and peak >= 2:
        return peak
    return None


def lgbm_features(windows: Windows) -> np.ndarray:
    """One row per window: recent lags relative to the origin, level, spread, and the last step's features."""
    power = windows.inputs[:, :, 0]  # scaled power [N, T]
    lags = min(_LGBM_LAGS, power.shape[1])
    recent = power[:, -lags:] - power[:, -1:]
    spans = [s for s in (6, 15, 30, 60) if s <= power.shape[1]]
    rolling = [power[:, -s:].mean(axis=1) - power[:, -1] for s in spans]
    spread = [power[:, -s:].std(axis=1) for s in spans]
    trend = [power[:, -1] - power[:, -s] for s in spans]
    last_step = windows.inputs[:, -1, :]
    return np.column_stack([recent, *rolling, *spread, *trend, last_step]).astype(np.float32)


class DirectLightGBM:
    """One LightGBM model for all leads (lead is a feature), predicting the change from the last value."""

    def __init__(self, n_estimators: int = 600, learning_rate: float = 0.03, num_leaves: int = 31, seed: int = 0):
        self.params = {
            "objective": "regression_l1",
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_data_in_leaf": 40,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "seed": seed,
            "deterministic": True,
            "num_threads": 2,
            "verbose": -1,
        }
        self.n_estimators = n_estimators
        self.booster: lgb.Booster | None = None
        self.power_std = 1.0

    def _rows(self, windows: Windows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        base = lgbm_features(windows)
        n, horizon = windows.targets.shape
        leads = np.tile(np.arange(1, horizon + 1), n).astype(np.float32)
        rows = np.column_stack([np.repeat(base, horizon, axis=0), leads])
        change = ((windows.targets - windows.last_power[:, None]) / self.power_std).reshape(-1)
        return rows, change, windows.mask.reshape(-1)

    def fit(self, train: Windows, valid: Windows, power_std: float) -> DirectLightGBM:
        self.power_std = power_std
        x_train, y_train, m_train = self._rows(train)
        x_valid, y_valid, m_valid = self._rows(valid)
        train_set = lgb.Dataset(x_train[m_train], y_train[m_train])
        valid_set = lgb.Dataset(x_valid[m_valid], y_valid[m_valid], reference=train_set)
        self.booster = lgb.train(self.params, train_set, num_boost_round=self.n_estimators, valid_sets=[valid_set],
                                 callbacks=[lgb.early_stopping(50, verbose=False)])
        return self

    def predict(self, windows: Windows) -> np.ndarray:
        """[N, H] watts."""
        if self.booster is None:
            raise RuntimeError("fit the model first")
        rows, _, _ = self._rows(windows)
        change = self.booster.predict(rows, num_iteration=self.booster.best_iteration)
        return windows.last_power[:, None] + change.reshape(windows.targets.shape) * self.power_std
