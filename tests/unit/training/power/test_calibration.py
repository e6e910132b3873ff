"""Unit tests for interval calibration and confidence (training.power.calibration) and training.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import interval_metrics, mae_by_lead, point_metrics
from training.power.calibration import Calibration, fit_calibration, raw_confidence
from training.power.peak_bound import fit_peak_margins

COVERAGE = 0.8
TOLERANCE = 0.1
Z80 = 1.2815515655446004  # standard normal 0.9 quantile


def synthetic(n: int, *, width_factor: float, seed: int, horizon: int = 4):
    """Raw quantiles [n, H, 3] in watts, the actual [n, H] and a full mask.

    actual = point + normal noise whose spread grows with the point and the lead; the raw interval is
    `width_factor` times the true central 80 % interval (< 1: too narrow, > 1: too wide).
    """
    rng = np.random.default_rng(seed)
    point = rng.uniform(300.0, 3000.0, size=(n, 1)) * np.ones((1, horizon))
    sigma = (20.0 + 0.06 * point) * (1.0 + 0.3 * np.arange(horizon))[None, :]
    actual = point + rng.normal(size=point.shape) * sigma
    half = width_factor * Z80 * sigma
    quantiles = np.stack([point - half, point, point + half], axis=-1)
    return quantiles, actual, np.ones(actual.shape, bool)


def coverage(forecast, actual) -> float:
    return float(((actual >= forecast.lower) & (actual <= forecast.upper)).mean())


def hit_rate(forecast, actual) -> float:
    return float((np.abs(actual - forecast.point) <= TOLERANCE * forecast.point).mean())


@pytest.mark.parametrize("width_factor", [0.3, 3.0], ids=["too-narrow", "too-wide"])
def test_calibrated_intervals_and_confidence_hold_on_fresh_data(width_factor: float) -> None:
    quantiles, actual, mask = synthetic(3000, width_factor=width_factor, seed=1)
    raw_coverage = float(((actual >= quantiles[..., 0]) & (actual <= quantiles[..., 2])).mean())
    assert abs(raw_coverage - COVERAGE) > 0.15  # the raw model really is miscalibrated
    calibration = fit_calibration(quantiles, actual, mask, coverage=COVERAGE, tolerance=TOLERANCE)
    margins = np.array(calibration.margins_watts)
    assert margins.shape == (4,)
    assert (margins > 0).all() if width_factor < 1 else (margins < 0).all()
    assert np.all(np.diff(margins if width_factor < 1 else -margins) > 0)  # noise grows with the lead
    assert calibration.calibration_points == mask.sum()
    assert calibration.calibration_coverage == pytest.approx(COVERAGE, abs=0.01)

    fresh_q, fresh_actual, _ = synthetic(5000, width_factor=width_factor, seed=2)
    forecast = calibration.apply(fresh_q)
    assert coverage(forecast, fresh_actual) == pytest.approx(COVERAGE, abs=0.03)
    for lead in range(4):  # per lead, too
        inside = (fresh_actual[:, lead] >= forecast.lower[:, lead]) & (fresh_actual[:, lead] <= forecast.upper[:, lead])
        assert inside.mean() == pytest.approx(COVERAGE, abs=0.03), lead
    hits = np.abs(fresh_actual - forecast.point) <= TOLERANCE * forecast.point
    assert float(forecast.confidence.mean()) == pytest.approx(float(hits.mean()), abs=0.03)
    assert forecast.confidence.min() >= 0.0 and forecast.confidence.max() <= 1.0
    assert (forecast.lower <= forecast.point).all() and (forecast.point <= forecast.upper).all()
    assert (forecast.lower >= 0).all()


def test_confidence_is_informative() -> None:
    """Forecasts stated as more confident land within the band more often, at about the stated rate."""
    quantiles, actual, mask = synthetic(3000, width_factor=0.3, seed=1)
    calibration = fit_calibration(quantiles, actual, mask, coverage=COVERAGE, tolerance=TOLERANCE)
    fresh_q, fresh_actual, _ = synthetic(5000, width_factor=0.3, seed=2)
    forecast = calibration.apply(fresh_q)
    hits = (np.abs(fresh_actual - forecast.point) <= TOLERANCE * forecast.point).reshape(-1)
    confidence = forecast.confidence.reshape(-1)
    thirds = np.array_split(np.argsort(confidence), 3)
    rates = [hits[t].mean() for t in thirds]
    assert rates[0] + 0.05 < rates[1] < rates[2] - 0.05
    for third, rate in zip(thirds, rates, strict=True):
        assert confidence[third].mean() == pytest.approx(rate, abs=0.03)


def test_calibration_keeps_the_median_as_the_point_forecast() -> None:
    """Narrowing a too-wide interval must not move the point forecast off the model's median."""
    calibration = Calibration(coverage=COVERAGE, tolerance=TOLERANCE, margins_watts=(-20.0,),
                              raw_knots=(0.0, 1.0), rate_knots=(0.0, 1.0), calibration_points=100,
                              calibration_coverage=0.8)
    forecast = calibration.apply(np.array([[[90.0, 100.0, 110.0]]]))  # narrowed by more than its half-width
    assert forecast.point[0, 0] == 100.0
    assert forecast.lower[0, 0] <= 100.0 <= forecast.upper[0, 0]
    quantiles, actual, mask = synthetic(2000, width_factor=3.0, seed=9)
    fitted = fit_calibration(quantiles, actual, mask, coverage=COVERAGE, tolerance=TOLERANCE)
    np.testing.assert_allclose(fitted.apply(quantiles).point, quantiles[..., 1])


def test_forecast_invariants_for_arbitrary_quantiles() -> None:
    quantiles, actual, mask = synthetic(400, width_factor=1.0, seed=3)
    calibration = fit_calibration(quantiles, actual, mask, coverage=COVERAGE, tolerance=TOLERANCE)
    rng = np.random.default_rng(4)
    messy = np.sort(rng.normal(100.0, 400.0, size=(500, 4, 3)), axis=-1)  # some negative watts
    messy[:50, :, 1] = messy[:50, :, 2] + 5.0  # median outside its own interval
    forecast = calibration.apply(messy)
    assert forecast.point.shape == forecast.lower.shape == forecast.upper.shape == forecast.confidence.shape
    assert forecast.point.shape == (500, 4)
    assert (forecast.lower <= forecast.point).all() and (forecast.point <= forecast.upper).all()
    assert (forecast.lower >= 0).all() and (forecast.point >= 0).all()
    assert np.isfinite(forecast.confidence).all()
    assert forecast.confidence.min() >= 0.0 and forecast.confidence.max() <= 1.0


def test_apply_is_monotone() -> None:
    quantiles, actual, mask = synthetic(1000, width_factor=0.5, seed=5)
    calibration = fit_calibration(quantiles, actual, mask, coverage=COVERAGE, tolerance=TOLERANCE)
    assert all(np.diff(calibration.rate_knots) >= 0) and all(np.diff(calibration.raw_knots) >= 0)
    base = calibration.apply(quantiles)
    shifted = calibration.apply(quantiles + 50.0)  # a higher raw forecast never gives a lower one
    assert (shifted.point >= base.point).all()
    assert (shifted.lower >= base.lower).all() and (shifted.upper >= base.upper).all()
    # same point, narrower raw interval: never less confident
    narrow = quantiles.copy()
    narrow[..., 0] = (quantiles[..., 0] + quantiles[..., 1]) / 2
    narrow[..., 2] = (quantiles[..., 2] + quantiles[..., 1]) / 2
    assert (calibration.apply(narrow).confidence >= base.confidence - 1e-12).all()
    # the confidence map itself is non-decreasing in the raw value
    grid = np.linspace(0.0, 1.0, 101)
    assert np.all(np.diff(calibration.confidence(grid)) >= 0)


def test_a_forecast_less_certain_than_any_in_calibration_is_not_given_their_hit_rate() -> None:
    """Raw values below the calibrated range used to get the lowest bin's hit rate (0.93 for an idle node whose
    hit band is a watt wide); now the map falls to 0 at raw 0 and keeps the fitted rates over the range seen."""
    quantiles, actual, mask = synthetic(1000, width_factor=0.5, seed=5)
    calibration = fit_calibration(quantiles, actual, mask, coverage=COVERAGE, tolerance=TOLERANCE)
    lowest, first_rate = calibration.raw_knots[0], calibration.rate_knots[0]
    assert lowest > 0.05 and first_rate > 0.2
    np.testing.assert_allclose(calibration.confidence(np.array([0.0, lowest / 2, lowest])),
                               [0.0, first_rate / 2, first_rate])
    idle = calibration.apply(np.zeros((1, len(calibration.margins_watts), 3)))  # 0 W: a band of no width
    assert (idle.confidence == 0.0).all()



def test_margins_widen_or_narrow_the_raw_interval() -> None:
    calibration = Calibration(coverage=COVERAGE, tolerance=TOLERANCE, margins_watts=(10.0, -5.0),
                              raw_knots=(0.0, 1.0), rate_knots=(0.0, 1.0), calibration_points=100,
                              calibration_coverage=0.8)
    quantiles = np.array([[[90.0, 100.0, 110.0], [90.0, 100.0, 110.0]]])
    forecast = calibration.apply(quantiles)
    np.testing.assert_allclose(forecast.lower, [[80.0, 95.0]])
    np.testing.assert_allclose(forecast.upper, [[120.0, 105.0]])
    np.testing.assert_allclose(forecast.point, [[100.0, 100.0]])
    # identity map: confidence is the raw value
    np.testing.assert_allclose(forecast.confidence, raw_confidence(forecast.point, forecast.lower, forecast.upper,
                                                                   COVERAGE, TOLERANCE))


def test_raw_confidence_on_a_hand_example() -> None:
    sigma = 100.0
    point = np.array([1000.0])
    lower, upper = point - Z80 * sigma, point + Z80 * sigma  # an 80 % interval of a normal with sigma 100
    value = raw_confidence(point, lower, upper, COVERAGE, TOLERANCE)
    assert value[0] == pytest.approx(math.erf(1 / math.sqrt(2)), rel=1e-6)  # P(|N(0, 100)| <= 100) = 0.6827
    wider = raw_confidence(point, point - 2 * Z80 * sigma, point + 2 * Z80 * sigma, COVERAGE, TOLERANCE)
    assert wider[0] < value[0]
    zero_width = raw_confidence(point, point, point, COVERAGE, TOLERANCE)
    assert zero_width[0] == pytest.approx(1.0)


def test_json_round_trip() -> None:
    quantiles, actual, mask = synthetic(300, width_factor=0.5, seed=6)
    calibration = fit_calibration(quantiles, actual, mask, coverage=COVERAGE, tolerance=TOLERANCE)
    copy = Calibration.model_validate_json(calibration.model_dump_json())
    assert copy == calibration
    a, b = calibration.apply(quantiles), copy.apply(quantiles)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    np.testing.assert_array_equal(a.lower, b.lower)


def test_refuses_too_few_points() -> None:
    quantiles, actual, _ = synthetic(40, width_factor=0.5, seed=7, horizon=1)
    mask = np.zeros(actual.shape, bool)
    mask[:29] = True
    with pytest.raises(ValueError, match="at least 30"):
        fit_calibration(quantiles, actual, mask, coverage=COVERAGE, tolerance=TOLERANCE)
    mask[29] = True
    assert fit_calibration(quantiles, actual, mask, coverage=COVERAGE, tolerance=TOLERANCE).calibration_points == 30


def test_only_masked_points_are_used_and_thin_leads_use_the_pooled_margin() -> None:
    quantiles, actual, _ = synthetic(200, width_factor=0.5, seed=8, horizon=2)
    mask = np.ones(actual.shape, bool)
    mask[10:, 1] = False  # lead 2 has only 10 points: it takes the pooled margin
    poisoned = actual.copy()
    poisoned[~mask] = 1e9  # unscored values must not matter
    calibration = fit_calibration(quantiles, poisoned, mask, coverage=COVERAGE, tolerance=TOLERANCE)
    reference = fit_calibration(quantiles, actual, mask, coverage=COVERAGE, tolerance=TOLERANCE)
    assert calibration == reference
    assert calibration.calibration_points == 210
    lead1 = fit_calibration(quantiles[:, :1], actual[:, :1], mask[:, :1], coverage=COVERAGE, tolerance=TOLERANCE)
    assert calibration.margins_watts[0] == pytest.approx(lead1.margins_watts[0])
    scores = np.maximum(quantiles[..., 0] - actual, actual - quantiles[..., 2])[mask]
    assert calibration.margins_watts[1] != calibration.margins_watts[0]
    assert calibration.margins_watts[1] >= np.quantile(scores, COVERAGE)  # the pooled conformal quantile
    assert calibration.margins_watts[1] <= np.quantile(scores, COVERAGE + 0.02)


# --- metrics ------------------------------------------------------------------------------------------------------


def test_point_metrics_on_a_hand_example() -> None:
    forecast = np.array([[110.0, 90.0], [50.0, 0.0]])
    actual = np.array([[100.0, 100.0], [0.0, 999.0]])
    mask = np.array([[True, True], [True, False]])
    metrics = point_metrics(forecast, actual, mask)
    # errors 10, -10, 50 (the unscored pair is left out)
    assert metrics["mae"] == pytest.approx(70 / 3)
    assert metrics["rmse"] == pytest.approx(math.sqrt((100 + 100 + 2500) / 3))
    assert metrics["mape"] == pytest.approx(10.0)  # the zero actual is left out of MAPE: (10 % + 10 %) / 2


def test_interval_metrics_on_a_hand_example() -> None:
    lower = np.array([[90.0, 90.0, 90.0, 0.0]])
    upper = np.array([[110.0, 110.0, 110.0, 1.0]])
    point = np.array([[100.0, 100.0, 100.0, 0.5]])
    actual = np.array([[110.0, 111.0, 95.0, 0.5]])  # on the edge (inside), outside, inside, unscored
    confidence = np.array([[0.2, 0.4, 0.9, 0.0]])
    mask = np.array([[True, True, True, False]])
    metrics = interval_metrics(lower, upper, point, confidence, actual, mask, nominal=0.8, tolerance=0.1)
    assert metrics["coverage"] == pytest.approx(2 / 3)
    assert metrics["nominal_coverage"] == 0.8 and metrics["confidence_tolerance"] == 0.1
    assert metrics["mean_interval_width"] == pytest.approx(20.0)
    assert metrics["mean_confidence"] == pytest.approx(0.5)
    assert metrics["hit_rate"] == pytest.approx(2 / 3)  # |10| <= 10 and |5| <= 10 hit, |11| misses


def test_mae_by_lead() -> None:
    forecast = np.array([[1.0, 2.0], [3.0, 4.0]])
    actual = np.array([[2.0, 2.0], [3.0, 0.0]])
    mask = np.array([[True, True], [True, False]])
    assert mae_by_lead(forecast, actual, mask) == [0.5, 0.0]
    assert mae_by_lead(forecast, actual, np.array([[True, False], [True, False]])) == [0.5, None]  # no NaN in JSON


def test_the_conformal_margin_is_the_k_th_smallest_score_of_the_finite_sample_rule() -> None:
    """Regression: it took the (k+1)-th (10 of 10 scores at 80 %, 26 of 30): intervals wider than the rule, 84.6 %
    where 80.6 % was due at the smallest calibration set allowed."""
    from training.conformal import conformal_quantile

    assert conformal_quantile(np.arange(1.0, 11.0), 0.8) == 9.0  # k = ceil(11 * 0.8) = 9
    assert conformal_quantile(np.arange(30.0, 0.0, -1.0), 0.8) == 25.0  # unsorted scores too
    assert conformal_quantile(np.array([1.0, 2.0]), 0.8) == 2.0  # k > n: the largest


def test_tied_raw_values_are_one_confidence_bin_not_the_last_of_several() -> None:
    """Regression: 500 forecasts at raw 1.0 (narrow intervals) hitting 74.6 % were split into bins in time order;
    the map kept several knots at 1.0 and answered the last one's rate, 0.95."""
    from training.power.calibration import _monotone_bins

    hits = np.zeros(500)
    hits[:373] = 1.0  # 74.6 %
    hits = hits[np.random.default_rng(0).permutation(500)]
    hits[-40:] = 1.0  # the newest all hit: the last time-ordered bin's rate is 1.0
    knots, rates = _monotone_bins(np.ones(500), hits)
    assert len(set(knots)) == len(knots)
    assert np.interp(1.0, knots, rates) == pytest.approx(hits.mean())


def test_a_level_too_high_for_the_scores_is_never_taken_from_too_few() -> None:
    """Regression: where ceil((n + 1) x level) > n the largest score was taken, which covers n / (n + 1) < level
    (30 windows at the 0.975 peak level of a 95 % interval: 96.8 %); such leads now take the pooled margin (per
    step) or none of their own (the peak bound), and a calibration too small for its level is refused."""
    from training.conformal import points_for

    assert [points_for(level) for level in (0.5, 0.8, 0.9, 0.95, 0.975)] == [1, 4, 9, 19, 39]
    for level in (0.8, 0.9, 0.95, 0.975):  # the fewest scores whose k-th smallest is a score, and no fewer
        n = points_for(level)
        assert math.ceil((n + 1) * level - 1e-9) <= n and math.ceil(n * level - 1e-9) > n - 1
    upper, actual = np.full((35, 2), 10.0), np.full((35, 2), 12.0)
    mask = np.ones((35, 2), bool)
    assert fit_peak_margins(upper, actual, mask, 0.9) == (2.0, 2.0)  # level 0.95: 19 windows do
    assert fit_peak_margins(upper, actual, mask, 0.95) == ()  # level 0.975: 35 windows are too few
    rng = np.random.default_rng(0)
    quantiles = np.stack([np.full((40, 2), 90.0), np.full((40, 2), 100.0), np.full((40, 2), 110.0)], axis=-1)
    truth = 100.0 + rng.normal(0, 15, (40, 2))
    some = np.zeros((40, 2), bool)
    some[:, 0], some[:20, 1] = True, True  # lead 2 has 20 points: too few at 0.96 (24)
    calibration = fit_calibration(quantiles, truth, some, coverage=0.96, tolerance=0.1)
    pooled = conformal_quantile_of(quantiles, truth, some, 0.96)
    assert calibration.margins_watts[1] == pytest.approx(pooled)
    with pytest.raises(ValueError, match="at least 99 held-out points at a coverage of 0.99"):
        fit_calibration(quantiles, truth, some, coverage=0.99, tolerance=0.1)


def conformal_quantile_of(quantiles: np.ndarray, actual: np.ndarray, mask: np.ndarray, level: float) -> float:
    from training.conformal import conformal_quantile

    scores = np.maximum(quantiles[..., 0] - actual, actual - quantiles[..., 2])
    return conformal_quantile(scores[mask], level)
