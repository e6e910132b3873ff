"""Calendar inputs: time of day and day of week as cyclic (sin, cos) encodings of a step's UTC timestamp.

A cycle is used only when the training data covers it at least `MIN_CYCLES` times (two days for the time
of day, two weeks for the day of week): on shorter series a clock reading cannot be told apart from the
series' own progress, and a model would learn "late in the run" instead of "afternoon".
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

CalendarFeature = Literal["time_of_day", "day_of_week"]
PERIOD_S: dict[str, int] = {"time_of_day": 86400, "day_of_week": 7 * 86400}
MIN_CYCLES = 2
_MONDAY_OFFSET_S = 3 * 86400  # 1970-01-01 was a Thursday: shift so that a week starts on Monday 00:00 UTC


def column_names(calendar: tuple[str, ...]) -> list[str]:
    return [f"{name}_{part}" for name in calendar for part in ("sin", "cos")]


def phase(seconds: np.ndarray, name: str) -> np.ndarray:
    """Position in the cycle, in radians, of Unix times `seconds`."""
    offset = _MONDAY_OFFSET_S if name == "day_of_week" else 0
    period = PERIOD_S[name]
    return 2.0 * np.pi * (np.mod(seconds + offset, period) / period)


def encode(times: pd.DatetimeIndex, calendar: tuple[str, ...]) -> list[np.ndarray]:
    """[sin, cos] columns per calendar feature, for timestamps `times` (naive ones are read as UTC)."""
    if times.tz is None:
        times = times.tz_localize("UTC")
    seconds = times.as_unit("ns").asi8 / 1e9  # Unix seconds (asi8 counts from the epoch in UTC)
    columns = []
    for name in calendar:
        angle = phase(seconds, name)
        columns += [np.sin(angle), np.cos(angle)]
    return columns


def covered_cycles(spans_s: list[float]) -> tuple[CalendarFeature, ...]:
    """The calendar features the data supports: those whose cycle the longest series covers `MIN_CYCLES` times."""
    longest = max(spans_s, default=0.0)
    return tuple(name for name, period in PERIOD_S.items() if longest >= MIN_CYCLES * period)  # type: ignore[misc]


def shift(sin: np.ndarray, cos: np.ndarray, seconds: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The encoding `seconds` later than the one given (a rotation): the target time of a lead from its origin's."""
    angle = 2.0 * np.pi * np.asarray(seconds, dtype=float) / PERIOD_S[name]
    return sin * np.cos(angle) + cos * np.sin(angle), cos * np.cos(angle) - sin * np.sin(angle)
