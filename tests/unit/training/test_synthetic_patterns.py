"""SYNTHETIC failure-mode traces (training.synthetic_patterns): canonical, repeatable, and shaped as named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.telemetry_csv import validate_telemetry
from training.synthetic_patterns import BASE_W, generate_pattern


@pytest.mark.parametrize("pattern", ["recurring_spikes", "level_shifts", "regime_change"])
def test_patterns_are_canonical_and_repeatable(pattern: str) -> None:
    frame = generate_pattern(pattern, days=3, step_s=600, seed=4)
    validated = validate_telemetry(frame)
    assert len(validated) == 3 * 144 and validated["node_id"].nunique() == 1
    assert validated["node_id"].iloc[0].startswith("syn-")
    assert validated["timestamp"].iloc[0] == pd.Timestamp("2026-01-05T00:00:00Z")  # a Monday
    pd.testing.assert_frame_equal(frame, generate_pattern(pattern, days=3, step_s=600, seed=4))
    assert not frame.equals(generate_pattern(pattern, days=3, step_s=600, seed=5))


def hourly_mean(frame: pd.DataFrame) -> pd.Series:
    return frame.groupby(frame["timestamp"].dt.hour)["power_watts"].mean()


def test_spikes_recur_at_the_same_time_of_day_and_on_sundays() -> None:
    frame = generate_pattern("recurring_spikes", days=14, step_s=600)
    by_hour = hourly_mean(frame)
    assert by_hour[2] > BASE_W + 8 and by_hour[13] > BASE_W + 3  # the nightly and the lunchtime spike
    quiet = by_hour.drop([1, 2, 3, 4, 5, 12, 13, 14])
    assert (quiet < BASE_W + 1).all()
    early = frame[frame["timestamp"].dt.hour.isin([4, 5])]
    sunday = early[early["timestamp"].dt.dayofweek == 6]["power_watts"].mean()
    weekday = early[early["timestamp"].dt.dayofweek == 2]["power_watts"].mean()
    assert sunday > weekday + 10


def test_level_shifts_move_the_base_at_week_boundaries() -> None:
    frame = generate_pattern("level_shifts", days=28, step_s=3600, seed=2)
    week = (frame["timestamp"] - frame["timestamp"].iloc[0]).dt.days // 7
    medians = frame.groupby(week)["power_watts"].median()
    assert medians.iloc[0] == pytest.approx(BASE_W, abs=1.0)
    assert np.ptp(medians.to_numpy()) > 5.0


def test_regime_change_at_seventy_percent() -> None:
    frame = generate_pattern("regime_change", days=10, step_s=3600)
    change = int(0.7 * len(frame))
    assert set(frame["workload_type"].iloc[:change]) == {"inference"}
    assert set(frame["workload_type"].iloc[change:]) == {"training"}
    assert frame["power_watts"].iloc[change:].mean() > frame["power_watts"].iloc[:change].mean() + 20


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="days"):
        generate_pattern("recurring_spikes", days=0)
