"""The simple forecasts the LSTM must beat: last value and seasonal naive (the third, a direct
multi-horizon LightGBM, is in training.power.gbm). They forecast from the same origins as the LSTM and
see no more than the LSTM does.
"""

from __future__ import annotations

import numpy as np

from training.power.features import Segment
from training.power.windows import Windows

_MIN_PERIOD_ACF = 0.3
_MIN_PERIOD_RISE = 0.1


def last_value(windows: Windows) -> np.ndarray:
    """[N, H]: the power at the origin, for every lead."""
    return np.repeat(windows.last_power[:, None], windows.targets.shape[1], axis=1)


def seasonal_naive(windows: Windows, segments: list[Segment], period: int) -> np.ndarray:
    """[N, H]: the value one season before the target, stepping back whole seasons until it is known
    at the origin. NaN where the segment does not reach back that far."""
    if period < 1:
        raise ValueError(f"a season is at least one step, got {period}")
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
    """Season length in steps: a day when the step divides it (into two steps or more) and the data spans two days
    or more, else the dominant autocorrelation peak of the (training) series; None when there is no clear one."""
    longest = max(len(s) for s in series)
    day, remainder = divmod(86400, step_s)
    if remainder == 0 and day >= 2 and longest >= 2 * day:
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
