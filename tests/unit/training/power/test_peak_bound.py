"""The calibrated bound on the peak over the next k steps (training.power.peak_bound) and its place in the
calibration: it holds at its nominal level on held-out data where the per-step uppers do not."""

from __future__ import annotations

import numpy as np
import pytest

from training.power.calibration import Calibration, fit_calibration
from training.power.peak_bound import MIN_WINDOWS, fit_peak_margins, peak_level, peak_upper

COVERAGE = 0.8
HORIZON = 6
Z90 = 1.2815515655446004  # standard normal 0.9 quantile: the upper end of a central 80 % interval


def windows(n: int, seed: int):
    """Raw quantiles [n, H, 3], actual [n, H] and a full mask: independent normal errors at every lead, with a raw
    interval that is already right per step (so only the peak needs a margin)."""
    rng = np.random.default_rng(seed)
    point = rng.uniform(500.0, 1500.0, size=(n, 1)) * np.ones((1, HORIZON))
    sigma = np.full_like(point, 40.0)
    actual = point + rng.normal(size=point.shape) * sigma
    quantiles = np.stack([point - Z90 * sigma, point, point + Z90 * sigma], axis=-1)
    return quantiles, actual, np.ones(actual.shape, bool)


def peak_coverage(bound: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Per lead k, the share of windows whose max(actual[1..k]) stays at or under the bound at k."""
    return (np.maximum.accumulate(actual, axis=1) <= bound).mean(axis=0)


def test_peak_bound_holds_on_held_out_data_where_the_max_of_per_step_uppers_does_not():
    quantiles, actual, mask = windows(4000, seed=1)
    calibration = fit_calibration(quantiles, actual, mask, coverage=COVERAGE, tolerance=0.1)
    margins = np.asarray(calibration.peak_margins_watts)
    assert margins.shape == (HORIZON,)
    assert abs(margins[0]) < 5.0  # one lead: the per-step upper already is the peak's bound
    assert np.all(np.diff(margins) > 0)  # independent errors: the peak outgrows the per-step uppers

    fresh_q, fresh_actual, _ = windows(6000, seed=2)
    forecast = calibration.apply(fresh_q)
    held_out = peak_coverage(forecast.peak_upper, fresh_actual)
    assert held_out == pytest.approx(np.full(HORIZON, peak_level(COVERAGE)), abs=0.02)
    per_step = peak_coverage(np.maximum.accumulate(forecast.upper, axis=1), fresh_actual)
    assert per_step[-1] < 0.7  # about 0.9 ** 6: the old rule is far from its nominal 90 % here
    assert np.all(np.diff(forecast.peak_upper, axis=1) >= 0)


def test_margins_need_full_windows_and_stop_at_the_first_lead_without_enough():
    upper = np.full((100, 4), 10.0)
    actual = np.full((100, 4), 12.0)
    mask = np.ones((100, 4), bool)
    mask[MIN_WINDOWS - 10:, 3] = False  # leads 1..4 all scored in only MIN_WINDOWS - 10 windows
    assert fit_peak_margins(upper, actual, mask, COVERAGE) == (2.0, 2.0, 2.0)
    mask[MIN_WINDOWS - 1:, 0] = False
    assert fit_peak_margins(upper, actual, mask, COVERAGE) == ()


def test_uncalibrated_leads_take_the_last_positive_margin_else_zero():
    upper = np.array([[10.0, 12.0, 11.0, 9.0]])
    assert peak_upper(upper, ()).tolist() == [[10.0, 12.0, 12.0, 12.0]]  # the max of the per-step uppers
    assert peak_upper(upper, (1.0, 3.0)).tolist() == [[11.0, 15.0, 15.0, 15.0]]
    assert peak_upper(upper, (1.0, -3.0)).tolist() == [[11.0, 11.0, 12.0, 12.0]]  # never decreasing in k


def test_a_calibration_saved_before_the_peak_bound_loads_and_falls_back():
    quantiles, actual, mask = windows(500, seed=3)
    saved = fit_calibration(quantiles, actual, mask, coverage=COVERAGE, tolerance=0.1).model_dump()
    del saved["peak_margins_watts"]
    old = Calibration.model_validate(saved)
    assert old.peak_margins_watts is None
    forecast = old.apply(quantiles)
    assert np.array_equal(forecast.peak_upper, np.maximum.accumulate(forecast.upper, axis=1))
