"""A forecast from a window beyond the power the model trained on (training.power.inference): named so, its
interval widened with the level and to the last value, its confidence at most the lowest calibrated hit rate;
within the range, nothing changes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.forecasts import PowerHistory
from tests.unit.training.power.segments import make_segment
from training.power.calibration import CalibratedForecast, fit_calibration
from training.power.extrapolation import extrapolated, served_forecast
from training.power.features import FeaturePipeline
from training.power.fit import build_model
from training.power.forecaster import Architecture, PowerForecaster
from training.power.inference import forecast_histories, history_segment
from training.power.windows import Role, assign_roles, build_windows
from training.power.workload import sum_forecasts

SEQUENCE, HORIZON = 20, 4


@pytest.fixture(scope="module")
def forecaster() -> PowerForecaster:
    """An untrained LSTM calibrated on a 700-1300 W sine (the calibration, not the model, is under test)."""
    rng = np.random.default_rng(3)
    steps = np.arange(700)
    segment = make_segment(1000 + 300 * np.sin(2 * np.pi * steps / 30) + 10 * rng.normal(size=steps.size))
    (roles,) = assign_roles([segment], train_fraction=0.8, calib_fraction=0.25)
    pipeline = FeaturePipeline.fit([segment.slice(0, int((roles == Role.FIT).sum()))], (), 60)
    calib = build_windows([segment], [roles], pipeline, role=Role.CALIB, sequence_length=SEQUENCE, horizon=HORIZON)
    torch.manual_seed(0)
    model = build_model(len(pipeline.feature_names), HORIZON, 8, 1, 0.0)
    architecture = Architecture(n_features=len(pipeline.feature_names), sequence_length=SEQUENCE, horizon=HORIZON,
                                hidden_size=8, num_layers=1, dropout=0.0)
    forecaster = PowerForecaster(model.state_dict(), architecture, pipeline)
    raw = forecaster.raw_quantiles(calib.inputs, calib.last_power)
    forecaster.calibration = fit_calibration(raw, calib.targets, calib.mask, coverage=0.8, tolerance=0.1)
    return forecaster


def answer(forecaster: PowerForecaster, watts: list[float]):
    (forecast,) = forecast_histories(forecaster, [PowerHistory(power_watts=tuple(watts), horizon_s=HORIZON * 60)],
                                     "power_lstm/1")
    return forecast


def test_the_pipeline_keeps_the_training_range_and_one_saved_before_it_flags_nothing(forecaster):
    low, high = forecaster.pipeline.power_range
    assert 650 < low < 720 and 1280 < high < 1350
    older = FeaturePipeline.model_validate({**forecaster.pipeline.model_dump(), "power_range": None})
    assert not older.beyond_training_range(np.array([1e6]))
    assert not forecaster.pipeline.beyond_training_range(np.array([high + 0.09 * (high - low)]))  # within a tenth
    assert forecaster.pipeline.beyond_training_range(np.array([high + 0.11 * (high - low)]))
    # a flat training series has no range: 200.5 W is no extrapolation of 200 W (it flagged every window)
    flat = FeaturePipeline.model_validate({**forecaster.pipeline.model_dump(), "power_range": (200.0, 200.0)})
    assert not flat.beyond_training_range(np.array([200.5, 209.0]))
    assert flat.beyond_training_range(np.array([211.0]))


def test_a_window_within_the_range_is_answered_as_the_model_answers(forecaster):
    watts = [1000 + 200 * np.sin(k / 3) for k in range(SEQUENCE)]
    forecast = answer(forecaster, watts)
    segment, _ = history_segment(PowerHistory(power_watts=tuple(watts), horizon_s=240), SEQUENCE, 60)
    direct = forecaster.forecast(forecaster.pipeline.transform(segment)[None], segment.power[-1:])
    assert forecast.outside_training_range == ()
    np.testing.assert_allclose(forecast.upper, direct.upper[0], atol=0.01)
    np.testing.assert_allclose(forecast.confidence, direct.confidence[0], atol=1e-4)


def test_a_window_at_five_times_the_training_peak_is_an_extrapolation_said_so(forecaster):
    """The 10 MW input of the API review answered "confidence 1.0" with an interval of ±0.11 W."""
    high = forecaster.pipeline.power_range[1]
    watts = [5 * high] * SEQUENCE
    forecast = answer(forecaster, watts)
    segment, _ = history_segment(PowerHistory(power_watts=tuple(watts), horizon_s=240), SEQUENCE, 60)
    raw = forecaster.forecast(forecaster.pipeline.transform(segment)[None], segment.power[-1:])
    assert forecast.outside_training_range == ("power_watts",)
    assert max(forecast.confidence) <= min(forecaster.calibration.rate_knots) + 1e-4
    assert all(lo <= 5 * high <= hi for lo, hi in zip(forecast.lower, forecast.upper, strict=True))
    widths = np.subtract(forecast.upper, forecast.lower)
    assert (widths >= (raw.upper[0] - raw.lower[0]) - 0.02).all()
    assert all(peak >= hi for peak, hi in zip(forecast.peak_upper, forecast.upper, strict=True))


def test_a_workload_with_one_node_beyond_the_range_is_beyond_it(forecaster):
    inside = answer(forecaster, [1000.0] * SEQUENCE)
    beyond = answer(forecaster, [0.0] * SEQUENCE)  # below the range: an idle level the model never saw
    assert beyond.outside_training_range == ("power_watts",)
    assert sum_forecasts([inside, beyond]).outside_training_range == ("power_watts",)
    assert sum_forecasts([inside, inside]).outside_training_range == ()
    with pytest.raises(ValueError, match="different model versions"):  # never a sum across a reload
        sum_forecasts([inside, beyond.model_copy(update={"model_version": "power_lstm/99"})])


def test_the_backtest_and_the_simulator_serve_a_window_as_the_service_does(forecaster):
    """training.power.extrapolation.served_forecast, on windows the pipeline built, answers what inference does."""
    high = forecaster.pipeline.power_range[1]
    rows = [[1000 + 200 * np.sin(k / 3) for k in range(SEQUENCE)], [3 * high] * SEQUENCE]
    segments = [history_segment(PowerHistory(power_watts=tuple(w), horizon_s=240), SEQUENCE, 60)[0] for w in rows]
    windows = SimpleNamespace(inputs=np.stack([forecaster.pipeline.transform(s) for s in segments]),
                              last_power=np.array([s.power[-1] for s in segments]))
    served = served_forecast(forecaster, windows)
    for row, watts in enumerate(rows):
        expected = answer(forecaster, watts)
        np.testing.assert_allclose(served.upper[row], expected.upper, atol=0.01)
        np.testing.assert_allclose(served.lower[row], expected.lower, atol=0.01)
        np.testing.assert_allclose(served.confidence[row], expected.confidence, atol=1e-4)


def test_an_extrapolated_interval_is_centred_on_the_forecast_and_holds_the_last_value():
    """The API review: a forecast falling from a 2 kW window to 993 W had `lower == point` in 28 of 30 steps and
    `upper` at the last value: an "80 % interval" with the median on its edge."""
    point = np.array([[993.0, 1200.0]])
    forecast = CalibratedForecast(point=point, lower=point - 0.0, upper=point + 5.0,
                                  confidence=np.array([[0.9, 0.9]]))
    served = extrapolated(forecast, np.array([6.0]), np.array([2080.0]), None)
    np.testing.assert_allclose((served.upper - point)[0, 1], (point - served.lower)[0, 1])  # centred, unless clipped
    np.testing.assert_allclose(served.upper, [[2080.0, 2080.0]])  # the last value, on both sides' width
    np.testing.assert_allclose(served.lower, [[0.0, 320.0]])  # 993 - 1087 clipped at 0 W
    wide = extrapolated(forecast, np.array([6.0]), np.array([1000.0]), None)  # near the last value: the model's spread
    np.testing.assert_allclose(wide.upper - wide.lower, [[60.0, 400.0]])  # 2 x max(5 x 6, |1000 - point|)


def test_the_peak_bound_of_an_extrapolation_stays_a_running_maximum():
    """The centred widening differs from lead to lead: moving the peak bound by each lead's own widening put it
    under an earlier lead's upper bound (1,025 W after 1,100 W), which the autoscaler reads as the peak."""
    point = np.array([[1000.0, 1000.0, 1000.0]])
    forecast = CalibratedForecast(point=point, lower=np.array([[900.0, 980.0, 980.0]]),
                                  upper=np.array([[1010.0, 1020.0, 1020.0]]), confidence=np.full((1, 3), 0.9),
                                  peak_upper=np.array([[1015.0, 1025.0, 1025.0]]))
    served = extrapolated(forecast, np.array([1.0]), np.array([1000.0]), None)
    assert (np.diff(served.peak_upper) >= 0).all()
    assert (served.peak_upper >= np.maximum.accumulate(served.upper, axis=-1)).all()
