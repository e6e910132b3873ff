"""The features-only mode: power estimated from the other telemetry, the forecaster run on it, intervals
calibrated for the mode on held-out data with the power withheld (no Ray: an untrained PowerLSTM stands in
for the Ray Train step, as in tests.fakes.trainer; calibration is the real code)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.forecasts import ForecastRequestError, PowerHistory
from tests.fakes.trainer import untrained
from tests.paths import TEST_DATA
from training.metrics import interval_metrics
from training.power.dataset import prepare, train_forecaster
from training.power.features_only import withheld_windows
from training.power.forecaster import PowerForecaster
from training.power.inference import _model_input, check_history, forecast_histories
from training.power.windows import Role
from training.settings import ALL_FEATURES, PowerPredictorConfig
from training.synthetic import generate_trace

SEED_REQUEST = json.loads((TEST_DATA / "seed" / "power_request.json").read_text())
CONFIG = PowerPredictorConfig(hidden_size=8, num_layers=1, epochs=1, interval_coverage=0.8)


@pytest.fixture(scope="module")
def trained(request):
    """A forecaster on a SYNTHETIC 5-minute trace (GPU, NPU and CPU-only nodes): 70 % trains, 30 % is held out."""
    patch = pytest.MonkeyPatch()
    patch.setattr("training.power.dataset.train_power_lstm", untrained(0.0))
    request.addfinalizer(patch.undo)
    frame = generate_trace(nodes=4, duration_s=4 * 86400, step_s=300, seed=3)
    prepared = prepare(frame, step_s=300, max_gap_s=1500, features=ALL_FEATURES, sequence_length=24, horizon=12,
                       train_fraction=0.7)
    forecaster, _ = train_forecaster(prepared, CONFIG, verbose=False)
    return forecaster, prepared


@pytest.mark.slow
def test_held_out_intervals_cover_as_stated_with_the_power_withheld(trained):
    forecaster, prepared = trained
    test, scale = withheld_windows(prepared, Role.TEST, forecaster.features_only.estimator)
    forecast = forecaster.forecast_features_only(test.inputs, test.last_power, scale)
    scores = interval_metrics(forecast.lower, forecast.upper, forecast.point, forecast.confidence, test.targets,
                              test.mask, nominal=0.8, tolerance=0.1)
    assert 0.7 <= scores["coverage"] <= 0.9, scores
    assert abs(scores["mean_confidence"] - scores["hit_rate"]) < 0.1, scores
    measured = forecaster.forecast(prepared.windows(Role.TEST).inputs, prepared.windows(Role.TEST).last_power)
    assert scores["mean_interval_width"] > float((measured.upper - measured.lower)[test.mask].mean())  # it costs


@pytest.mark.slow
def test_the_seed_s_request_is_forecast_from_its_features(trained, tmp_path):
    forecaster, _ = trained
    forecaster.save(tmp_path / "model")
    loaded = PowerForecaster.load(tmp_path / "model")
    features = SEED_REQUEST["features"]
    history = PowerHistory(numeric={name: tuple(values) for name, values in features.items()}, horizon_s=3600)
    assert check_history(loaded, history) == 12
    (answer,) = forecast_histories(loaded, [history], "power_lstm_1h/1", synthetic=True)
    assert answer.estimated_from == ("cpu_utilization", "gpu_utilization", "temperature")
    assert answer.window_coverage == 0.0 and answer.padded_steps == 24 - 3 and answer.trained_on_synthetic_data
    assert answer.confidence_tolerance == loaded.confidence_tolerance == 0.1  # the band `confidence` is about
    assert len(answer.point) == 12 and all(lo <= p <= hi for lo, p, hi in zip(answer.lower, answer.point,
                                                                           answer.upper, strict=True))
    assert 2000 < np.mean(answer.point) < 6000  # a busy 8-GPU node of the generated trace draws kilowatts
    measured = PowerHistory(power_watts=(4000.0,) * 24, horizon_s=3600)
    both = forecast_histories(loaded, [measured, history], "power_lstm_1h/1")  # one batch, two modes
    assert both[1].point == answer.point and both[0].estimated_from == () and both[0].window_coverage == 1.0
    held = measured.model_copy(update={"filled_steps": 6})  # a store's window with 6 steps held over a gap
    assert forecast_histories(loaded, [held], "power_lstm_1h/1")[0].window_coverage == 0.75


@pytest.mark.slow
def test_before_the_feature_lists_start_the_earliest_estimate_is_repeated(trained):
    """Regression (this session's own): with the front of short feature lists missing, the estimator answered its
    no-feature intercept there, a step in the estimated power that the model's change and trend inputs then read."""
    forecaster, _ = trained
    features = SEED_REQUEST["features"]
    history = PowerHistory(numeric={name: tuple(values) for name, values in features.items()}, horizon_s=3600)
    model_input = _model_input(forecaster, history)
    power = model_input.window[:, forecaster.pipeline.feature_names.index("power")]
    padded = model_input.padded
    assert padded == 24 - 3 and np.all(power[:padded + 1] == power[padded])


@pytest.mark.slow
def test_features_the_model_cannot_estimate_from_are_refused_naming_the_field(trained):
    forecaster, _ = trained
    kept = forecaster.features_only
    history = PowerHistory(numeric={"cpu_utilization": (50.0,)}, horizon_s=600)
    try:
        prior_only = kept.estimator.model_copy(update={"fits": kept.estimator.fits[-1:]})  # the training mean
        forecaster.features_only = kept.model_copy(update={"estimator": prior_only})
        with pytest.raises(ForecastRequestError, match=r"none of the given features \(cpu_utilization\)") as refused:
            check_history(forecaster, history)
        assert refused.value.field == "features"
        forecaster.features_only = None  # a model saved before the mode
        with pytest.raises(ForecastRequestError, match="power_watts is required"):
            check_history(forecaster, history)
    finally:
        forecaster.features_only = kept


@pytest.mark.slow
def test_a_workload_label_the_model_never_saw_tells_it_nothing(trained):
    """Alone, an unknown label was answered as a known one (the "any other" offset, which no training row had)."""
    forecaster, _ = trained
    known = forecaster.features_only.estimator.workload_vocab
    assert known
    (answer,) = forecast_histories(forecaster, [PowerHistory(workload_type=known[0], horizon_s=600)], "v")
    assert answer.estimated_from == ("workload_type",)
    unknown = PowerHistory(workload_type="nonsense-label", horizon_s=600)
    with pytest.raises(ForecastRequestError, match=r"'nonsense-label' is not one it learned") as refused:
        check_history(forecaster, unknown)
    assert refused.value.field == "features" and known[0] in str(refused.value)
    with_numbers = unknown.model_copy(update={"numeric": {"cpu_utilization": (50.0,) * 3}})
    (answer,) = forecast_histories(forecaster, [with_numbers], "v")
    assert "workload_type" not in answer.estimated_from
