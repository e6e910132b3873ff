"""Online calibration: intervals and confidence corrected by the outcomes of earlier forecasts, never later ones."""

from __future__ import annotations

import bisect

import numpy as np
import pytest

from training.power.calibration import CalibratedForecast
from training.power.online_calibration import MAX_WIDTH_FACTOR, ModelCalibration, adapt_in_time

T0 = np.datetime64("2026-12-01T00:00:00")


def _forecast(n: int, horizon: int, half_width: float, confidence: float = 0.5) -> CalibratedForecast:
    point = np.full((n, horizon), 100.0)
    peak = np.full((n, horizon), 100.0 + half_width)
    return CalibratedForecast(point, point - half_width, point + half_width, np.full((n, horizon), confidence), peak)


def _series(n: int, horizon: int, spread: float, seed: int = 0):
    """One series forecast at every step: actuals normal around the point with `spread`."""
    rng = np.random.default_rng(seed)
    actual = 100.0 + rng.normal(0.0, spread, size=(n, horizon))
    return actual, np.ones((n, horizon), bool), np.zeros(n, int), minutes(np.arange(n))


def minutes(steps: np.ndarray) -> np.ndarray:
    return T0 + steps.astype("timedelta64[m]")


def _coverage(forecast: CalibratedForecast, actual: np.ndarray, skip: int = 0) -> float:
    inside = (actual >= forecast.lower) & (actual <= forecast.upper)
    return float(inside[skip:].mean())


@pytest.mark.parametrize("spread", [0.4, 1.0, 2.5])  # static interval covers ~100 %, ~80 %, ~38 %
def test_coverage_comes_to_the_nominal_whatever_the_static_interval_covers(spread):
    n, horizon = 6000, 4
    static = _forecast(n, horizon, half_width=1.2816)  # the 80 % interval of a unit normal
    actual, observed, series, origin = _series(n, horizon, spread)
    adapted = adapt_in_time(static, actual, observed, series, origin, 60, coverage=0.8, tolerance=0.1)
    assert abs(_coverage(adapted, actual, skip=500) - 0.8) < 0.03, (_coverage(static, actual), spread)
    assert np.array_equal(adapted.point, static.point)  # the point forecast is never moved


def test_confidence_comes_to_the_hit_rate():
    n, horizon = 6000, 3
    static = _forecast(n, horizon, half_width=5.0, confidence=0.5)
    actual, observed, series, origin = _series(n, horizon, spread=4.0)  # |error| <= 10 W about 98 % of the time
    hits = np.abs(actual - 100.0) <= 10.0
    adapted = adapt_in_time(static, actual, observed, series, origin, 60, coverage=0.8, tolerance=0.1)
    assert abs(adapted.confidence[500:].mean() - hits[500:].mean()) < 0.03
    assert static.confidence.mean() == 0.5


def test_a_forecast_never_learns_from_actuals_after_its_origin():
    n, horizon = 400, 5
    static = _forecast(n, horizon, half_width=1.0)
    actual, observed, series, origin = _series(n, horizon, spread=3.0)
    before = adapt_in_time(static, actual, observed, series, origin, 60, coverage=0.8, tolerance=0.1)
    cut = 200  # change every actual landing after origin 200: forecasts up to it must not move
    later = actual.copy()
    landing = np.arange(n)[:, None] + np.arange(1, horizon + 1)[None, :]
    later[landing > cut] = 100.0
    after = adapt_in_time(static, later, observed, series, origin, 60, coverage=0.8, tolerance=0.1)
    assert np.array_equal(before.upper[: cut + 1], after.upper[: cut + 1])
    assert np.array_equal(before.confidence[: cut + 1], after.confidence[: cut + 1])
    assert not np.array_equal(before.upper[cut + 1:], after.upper[cut + 1:])


def test_unobserved_actuals_teach_nothing():
    n, horizon = 300, 2
    static = _forecast(n, horizon, half_width=1.0)
    actual, observed, series, origin = _series(n, horizon, spread=5.0)  # would miss nearly everywhere
    observed[:] = False
    adapted = adapt_in_time(static, actual, observed, series, origin, 60, coverage=0.8, tolerance=0.1)
    assert np.array_equal(adapted.upper, static.upper) and np.array_equal(adapted.confidence, static.confidence)


def test_a_new_series_starts_from_what_the_others_taught_and_keeps_its_own_correction():
    """Series 0 (wild) runs first; series 1 (calm) starts wide from the pooled tracker, then its own narrows it:
    each series' coverage comes to the nominal one."""
    n, horizon = 4000, 2
    static = _forecast(2 * n, horizon, half_width=1.2816)
    rng = np.random.default_rng(2)
    actual = 100.0 + np.concatenate([rng.normal(0, 2.0, (n, horizon)), rng.normal(0, 0.5, (n, horizon))])
    series = np.repeat([0, 1], n)
    origin = minutes(np.arange(2 * n))  # series 1 after series 0
    adapted = adapt_in_time(static, actual, np.ones_like(actual, bool), series, origin, 60, coverage=0.8,
                            tolerance=0.1)
    assert adapted.upper[n, 0] > static.upper[n, 0] + 0.5  # its first forecast: wide, as series 0 taught
    for part in (slice(500, n), slice(n + 1500, 2 * n)):
        inside = (actual[part] >= adapted.lower[part]) & (actual[part] <= adapted.upper[part])
        assert abs(inside.mean() - 0.8) < 0.04


def test_corrections_stay_bounded_and_the_peak_bound_above_the_uppers():
    model = ModelCalibration(2, 60, coverage=0.8, tolerance=0.1)
    for minute in range(1000):  # every actual far outside: widen, but never past the bound
        model.learn("n1", np.array([0, 1]), np.full(2, 100.0), np.full(2, 99.0), np.full(2, 101.0), np.full(2, 0.9),
                    np.full(2, 500.0), at_s=60.0 * minute)
    assert model.pooled.points == 2000
    lower, upper, confidence = model.adapt("n1", np.full(2, 100.0), np.full(2, 99.0), np.full(2, 101.0),
                                           np.full(2, 0.9))
    assert np.allclose(upper, 100.0 + MAX_WIDTH_FACTOR) and np.allclose(lower, 100.0 - MAX_WIDTH_FACTOR)
    assert np.allclose(confidence, 0.4)  # shifted down by at most 0.5

    static = _forecast(50, 3, half_width=1.0)
    actual, observed, series, origin = _series(50, 3, spread=10.0)
    adapted = adapt_in_time(static, actual, observed, series, origin, 60, coverage=0.8, tolerance=0.1)
    assert (adapted.peak_upper >= np.maximum.accumulate(adapted.upper, axis=1)).all()
    assert (adapted.lower >= 0).all()


def test_the_series_kept_are_bounded():
    model = ModelCalibration(1, 60, coverage=0.8, tolerance=None, max_series=2)
    for name in ("a", "b", "c"):
        model.learn(name, np.array([0]), np.ones(1), np.ones(1), np.ones(1), np.ones(1), np.full(1, 9.0), at_s=0.0)
    assert list(model.own) == ["b", "c"]


def test_the_pooled_tracker_moves_as_fast_for_many_series_learning_at_once_as_for_one():
    """Regression: every node's outcome stepped the pooled tracker in full, so 200 nodes missing together moved it
    200 times as far in one step and swung it between its bounds."""
    one, many = ModelCalibration(1, 60, 0.8, None), ModelCalibration(1, 60, 0.8, None)
    miss = (np.array([0]), np.ones(1), np.ones(1), np.ones(1), np.ones(1), np.full(1, 9.0))
    for minute in range(10):
        one.learn("a", *miss, at_s=60.0 * minute)
        for node in range(200):
            many.learn(f"n{node}", *miss, at_s=60.0 * minute)
    assert many.pooled.log_width[0] < 2 * one.pooled.log_width[0]  # 200 times as far before (to its bound)
    assert many.own["n0"].log_width[0] == one.own["a"].log_width[0]  # each node's own tracker as before


def test_the_pooled_rate_counts_the_series_that_learned_lately_among_those_kept():
    """The count of series learning within two steps, kept sorted for a tick over thousands of nodes (it walked
    every node at every node's outcome), is the one a walk over the kept series gives, through evictions and
    series that fall silent."""
    rng = np.random.default_rng(3)
    model = ModelCalibration(2, 60, 0.8, 0.1, max_series=20)
    for tick in range(300):
        series, at_s = f"n{rng.integers(0, 40)}", 60.0 * (tick // 7)
        leads, point = np.array([0, 1]), np.full(2, 100.0)
        outcome = (leads, point, point - 10, point + 10, np.full(2, 0.8), point + rng.normal(0, 12, 2))
        model.learn(series, *outcome, at_s=at_s)
        assert model._learned_at == sorted(o.last_s for o in model.own.values())
        learning = sum(1 for o in model.own.values() if o.last_s > at_s - 2 * 60)
        assert len(model._learned_at) - bisect.bisect_right(model._learned_at, at_s - 120) == learning
