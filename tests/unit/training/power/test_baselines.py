"""Unit tests for the simple baseline forecasts (training.power.baselines)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.unit.training.power.segments import STEP, all_windows, make_segment
from training.power.baselines import last_value, seasonal_naive, seasonal_period


def test_last_value_repeats_the_origin_power() -> None:
    segment = make_segment(np.random.default_rng(0).uniform(100, 200, size=30))
    windows = all_windows([segment], sequence_length=4, horizon=5)
    forecast = last_value(windows)
    assert forecast.shape == windows.targets.shape == (len(windows), 5)
    for row, origin in enumerate(windows.origin_index):
        assert (forecast[row] == segment.power[origin]).all()


@pytest.mark.parametrize("seed", range(6))
def test_seasonal_period_of_a_noisy_sine(seed: int) -> None:
    rng = np.random.default_rng(seed)
    steps = np.arange(400)
    series = 500 + 100 * np.sin(2 * np.pi * steps / 24) + 30 * rng.normal(size=400)
    assert seasonal_period([series], STEP) == 24


def test_seasonal_period_pools_several_series_and_ignores_a_trend() -> None:
    rng = np.random.default_rng(1)
    series = [np.sin(2 * np.pi * np.arange(n) / 12) * 3 + np.cumsum(rng.normal(size=n)) * 0.1 for n in (300, 420)]
    assert seasonal_period(series, STEP) == 12


@pytest.mark.parametrize("seed", range(6))
def test_no_period_in_white_noise_or_a_random_walk(seed: int) -> None:
    rng = np.random.default_rng(seed)
    assert seasonal_period([rng.normal(size=400)], STEP) is None
    assert seasonal_period([np.cumsum(rng.normal(size=400))], STEP) is None


def test_seasonal_period_edge_cases() -> None:
    assert seasonal_period([np.ones(400)], STEP) is None  # constant: no variance
    assert seasonal_period([np.arange(5.0)], STEP) is None  # too short to look for one
    # two days of data or more: the day, whatever the autocorrelation says
    assert seasonal_period([np.random.default_rng(0).normal(size=48)], 3600) == 24
    # regression: a step of a day or more gave a season of 0 steps, whose "forecast" was the target itself
    noise = np.random.default_rng(0).normal(size=60)
    assert seasonal_period([noise], 2 * 86400) is None and seasonal_period([noise], 86400) is None
    assert seasonal_period([noise], 7 * 3600) is None  # 3 steps of 7 h are no day: not taken for one
    with pytest.raises(ValueError, match="at least one step"):
        seasonal_naive(all_windows([make_segment(noise + 100)], sequence_length=4, horizon=2), [], 0)
    # max_lag bounds the search: a period beyond it is not found
    steps = np.arange(400)
    assert seasonal_period([np.sin(2 * np.pi * steps / 40)], STEP, max_lag=30) is None
    assert seasonal_period([np.sin(2 * np.pi * steps / 40)], STEP) == 40


@pytest.mark.parametrize(("period", "horizon"), [(5, 8), (3, 3), (10, 4), (1, 3)])
def test_seasonal_naive_uses_whole_seasons_back(period: int, horizon: int) -> None:
    segment = make_segment(np.arange(40, dtype=float) + 1000)  # the value tells its index
    windows = all_windows([segment], sequence_length=3, horizon=horizon)
    forecast = seasonal_naive(windows, [segment], period)
    assert forecast.shape == (len(windows), horizon)
    for row, origin in enumerate(windows.origin_index):
        for h in range(1, horizon + 1):
            k = math.ceil(h / period)
            source = origin + h - k * period
            assert source <= origin  # only what is known at the origin
            if source < 0:
                assert np.isnan(forecast[row, h - 1])
            else:
                assert forecast[row, h - 1] == 1000 + source, (origin, h)
    first_origin = windows.origin_index[0]
    assert np.isnan(forecast[0, 0]) == (period > first_origin + 1)  # too little history at the first origin
    assert not np.isnan(forecast[windows.origin_index >= period - 1]).any()


def test_seasonal_naive_reads_the_window_segment() -> None:
    segments = [make_segment(np.arange(20.0)), make_segment(np.arange(20.0) + 500, node="m")]
    windows = all_windows(segments, sequence_length=6, horizon=2)
    forecast = seasonal_naive(windows, segments, period=4)
    second = windows.segment_index == 1
    assert second.any()
    assert (forecast[second] >= 500).all() and (forecast[~second] < 500).all()
    perfect = make_segment(np.tile([1.0, 5.0, 9.0, 2.0], 10))  # exactly periodic: seasonal naive is exact
    w = all_windows([perfect], sequence_length=4, horizon=6)
    np.testing.assert_array_equal(seasonal_naive(w, [perfect], 4)[w.mask], w.targets[w.mask])
