"""SYNTHETIC single-server traces with the failure modes real traces are too short to show, for tests and
the evaluation suite only (never quote accuracy measured on them as a real-world figure).

- `recurring_spikes`: flat power with short spikes at the same times every day (a nightly backup, a
  lunchtime batch) and a longer one every Sunday, like a server's wall power at a 10-minute step.
- `level_shifts`: the same spikes on a base level that moves at every week boundary.
- `regime_change`: a daily inference cycle that, 70 % into the trace, becomes a busier training regime
  with spikes at other times (the model must not carry the old rhythm into the new one).

Every generator returns a canonical telemetry frame (timestamp, node_id, power_watts, workload_type);
the same arguments always give the same frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd

from training.synthetic import DEFAULT_START

Pattern = Literal["recurring_spikes", "level_shifts", "regime_change"]
BASE_W = 40.0  # a small server at rest, W (the 116-day trace sits near this; assumption)
NOISE_W = 0.6  # sensor noise and background activity, W
DAILY_SPIKES = ((2.0, 30, 22.0), (13.0, 20, 12.0))  # (hour of day UTC, minutes, extra W)
SUNDAY_SPIKE = (4.0, 90, 30.0)
JITTER_MIN = 10.0  # a spike starts within +- this many minutes of its time


def generate_pattern(pattern: Pattern, *, days: int = 42, step_s: int = 600, seed: int = 0,
                     node_id: str | None = None, server: int = 0) -> pd.DataFrame:
    """A SYNTHETIC trace of `days` days at `step_s`, starting on a Monday at 00:00 UTC. Servers other than the
    first (`server` 0) of the same seed draw their own spike jitter, noise and levels."""
    if days < 1 or step_s <= 0 or step_s > 86400:
        raise ValueError(f"need days >= 1 and 0 < step_s <= 1 day, got days={days}, step_s={step_s}")
    rng = np.random.default_rng(seed if server == 0 else [seed, server])
    times = pd.date_range(DEFAULT_START, periods=days * 86400 // step_s, freq=pd.Timedelta(seconds=step_s))
    power, kinds = _GENERATORS[pattern](rng, times)
    power = power + rng.normal(0.0, NOISE_W, len(times))
    return pd.DataFrame({
        "timestamp": times,
        "node_id": (node_id or f"syn-{pattern.replace('_', '-')}") + (f"-{server + 1:02d}" if server else ""),
        "power_watts": np.round(np.maximum(power, 1.0), 2),
        "workload_type": kinds,
    })


def _hours(times: pd.DatetimeIndex) -> np.ndarray:
    return times.hour.to_numpy() + times.minute.to_numpy() / 60.0 + times.second.to_numpy() / 3600.0


def _spikes(rng: np.random.Generator, times: pd.DatetimeIndex, spikes, *, weekday: int | None = None) -> np.ndarray:
    """Extra power of spikes at fixed times of day (only on `weekday`, 0 = Monday, when given), jittered daily."""
    hours, days = _hours(times), (times - times[0].normalize()).days.to_numpy()
    extra = np.zeros(len(times))
    for day in np.unique(days):
        if weekday is not None and times[days == day][0].dayofweek != weekday:
            continue
        today = days == day
        for hour, minutes, watts in spikes:
            begin = hour + rng.uniform(-JITTER_MIN, JITTER_MIN) / 60.0
            extra[today & (hours >= begin) & (hours < begin + minutes / 60.0)] += watts * rng.uniform(0.85, 1.15)
    return extra


def _recurring_spikes(rng: np.random.Generator, times: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    power = BASE_W + _spikes(rng, times, DAILY_SPIKES) + _spikes(rng, times, (SUNDAY_SPIKE,), weekday=6)
    return power, np.full(len(times), "batch", dtype=object)


def _level_shifts(rng: np.random.Generator, times: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    power, kinds = _recurring_spikes(rng, times)
    weeks = (times - times[0].normalize()).days.to_numpy() // 7
    levels = rng.uniform(-12.0, 25.0, weeks.max() + 1)
    levels[0] = 0.0
    return power + levels[weeks], kinds


def _regime_change(rng: np.random.Generator, times: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    hours = _hours(times)
    change = int(0.7 * len(times))
    cycle = BASE_W + 15.0 * (1.0 + np.cos(2.0 * np.pi * (hours - 15.0) / 24.0))  # inference, peak 15:00 UTC
    busy = BASE_W + 45.0 + _spikes(rng, times, ((9.0, 40, 25.0), (21.0, 40, 25.0)))  # training, other spikes
    power = np.where(np.arange(len(times)) < change, cycle, busy)
    kinds = np.where(np.arange(len(times)) < change, "inference", "training").astype(object)
    return power, kinds


_GENERATORS: dict[str, Callable[[np.random.Generator, pd.DatetimeIndex], tuple[np.ndarray, np.ndarray]]] = {
    "recurring_spikes": _recurring_spikes,
    "level_shifts": _level_shifts,
    "regime_change": _regime_change,
}
