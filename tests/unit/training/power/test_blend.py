"""The served forecast (training.power.blend): the combination, the champion/challenger choice on held-out
data, calibrated intervals, and the artifact that carries it (training.power.forecaster)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from core.forecasts import PowerHistory
from core.telemetry_csv import validate_telemetry
from tests.unit.training.power.segments import make_segment
from training.metrics import point_metrics
from training.power.blend import (
    ServedBlend,
    blend_quantiles,
    choose_served,
    cross_fitted_mae,
    fit_weights,
    time_halves,
)
from training.power.calibration import fit_calibration
from training.power.common_leads import score_common
from training.power.features import FeaturePipeline
from training.power.fit import build_model
from training.power.forecaster import ARCHITECTURE_FILE, SERVED_FILE, Architecture, ArtifactError, PowerForecaster
from training.power.gbm import MODEL_FILE, DirectLightGBM
from training.power.holdout import CommonHoldout
from training.power.inference import forecast_histories, history_segment
from training.power.windows import Role, assign_roles, build_windows

N, H = 400, 4


def held_out(seed: int = 0, lstm_bias: float = 0.0, gbm_bias: float = 0.0, lstm_noise: float = 1.0,
             gbm_noise: float = 1.0):
    """Actual values and two forecasts of them with chosen bias and noise; LSTM quantiles +-2 around its median."""
    rng = np.random.default_rng(seed)
    actual = 100 + rng.normal(0, 5, (N, H))
    lstm = actual + lstm_bias + rng.normal(0, lstm_noise, (N, H))
    gbm = actual + gbm_bias + rng.normal(0, gbm_noise, (N, H))
    quantiles = np.stack([lstm - 2, lstm, lstm + 2], axis=-1)
    folds = (np.arange(N) >= N // 2).astype(int)
    return quantiles, gbm, actual, np.ones((N, H), bool), folds


def choose(*args, **kwargs) -> ServedBlend:
    quantiles, gbm, actual, mask, folds = held_out(*args, **kwargs)
    return choose_served(quantiles, gbm, actual, mask, folds, coverage=0.8, tolerance=0.1)


def test_blend_moves_the_point_and_keeps_the_lstm_spread() -> None:
    lstm = np.array([[[8.0, 10.0, 13.0], [0.0, 1.0, 2.0]]])
    gbm = np.array([[20.0, 3.0]])
    out = blend_quantiles(lstm, gbm, np.array([0.5, 0.0]))
    np.testing.assert_allclose(out, [[[13.0, 15.0, 18.0], [2.0, 3.0, 4.0]]])


def test_weights_follow_the_better_model_per_lead() -> None:
    rng = np.random.default_rng(1)
    actual = rng.normal(0, 1, (200, 3))
    lstm = actual + np.array([0.0, 5.0, 0.0]) + rng.normal(0, 0.1, (200, 3))  # wrong at lead 2 only
    gbm = actual + np.array([5.0, 0.0, -5.0]) + rng.normal(0, 0.1, (200, 3))
    weights = fit_weights(lstm, gbm, actual, np.ones((200, 3), bool))
    assert weights[0] == 1.0 and weights[1] == 0.0 and weights[2] == 1.0


def nested(better: str):
    """One forecast is the other plus noise of its own: mixing them cannot beat the better one."""
    quantiles, _, actual, mask, folds = held_out()
    worse = quantiles[..., 1] + np.random.default_rng(9).normal(0, 2.0, (N, H))
    if better == "lstm":
        return quantiles, worse, actual, mask, folds
    return np.stack([worse - 2, worse, worse + 2], axis=-1), quantiles[..., 1], actual, mask, folds


def test_the_better_model_on_held_out_data_is_served() -> None:
    assert choose_served(*nested("lstm"), coverage=0.8, tolerance=0.1).method == "lstm"
    served = choose_served(*nested("lightgbm"), coverage=0.8, tolerance=0.1)
    assert served.method == "lightgbm" and served.lstm_weight == (0.0,) * H
    assert served.calibration_mae["lightgbm"] < served.calibration_mae["lstm"]


def test_opposite_errors_are_served_combined() -> None:
    served = choose(lstm_bias=3.0, gbm_bias=-3.0)
    assert served.method == "combined"
    assert all(0.3 <= w <= 0.7 for w in served.lstm_weight)
    assert served.calibration_mae["combined"] < min(served.calibration_mae["lstm"], served.calibration_mae["lightgbm"])


def test_an_lstm_forecasting_no_number_leaves_the_lightgbm_served() -> None:
    """Regression: a NaN LSTM score made the best score NaN, so no method compared as good enough and the choice
    ended in a StopIteration traceback."""
    quantiles, gbm, actual, mask, folds = held_out()
    served = choose_served(np.full_like(quantiles, np.nan), gbm, actual, mask, folds, coverage=0.8, tolerance=0.1)
    assert served.method == "lightgbm"


def test_a_tie_keeps_the_champion() -> None:
    quantiles, _, actual, mask, folds = held_out()
    served = choose_served(quantiles, quantiles[..., 1].copy(), actual, mask, folds, coverage=0.8, tolerance=0.1)
    assert served.method == "lstm"


def test_combination_is_scored_cross_fitted() -> None:
    """Pure noise in both: the in-sample weights would look better than either model, cross-fitted they do not."""
    quantiles, gbm, actual, mask, folds = held_out(lstm_noise=1.0, gbm_noise=1.0)
    lstm = quantiles[..., 1]
    crossed = cross_fitted_mae(lstm, gbm, actual, mask, folds)
    weights = fit_weights(lstm, gbm, actual, mask)
    in_sample = np.abs(weights * lstm + (1 - weights) * gbm - actual).mean()
    assert crossed > in_sample


def test_time_halves_split_each_segment_by_origin() -> None:
    folds = time_halves(np.array([0, 0, 0, 0, 1, 1, 1]), np.array([9, 3, 7, 5, 1, 2, 3]))
    assert folds.tolist() == [1, 0, 1, 0, 0, 1, 1]


def test_served_intervals_are_calibrated_on_held_out_data() -> None:
    quantiles, gbm, actual, mask, folds = held_out(lstm_bias=4.0, gbm_bias=-4.0, lstm_noise=3.0, gbm_noise=3.0)
    served = choose_served(quantiles, gbm, actual, mask, folds, coverage=0.8, tolerance=0.1)
    assert served.method == "combined"
    raw = served.quantiles(quantiles, gbm)
    assert ((actual >= raw[..., 0]) & (actual <= raw[..., 2])).mean() < 0.7  # +-2 W around the point: too narrow
    calibrated = served.apply(quantiles, gbm)
    inside = (actual >= calibrated.lower) & (actual <= calibrated.upper)
    assert inside.mean() == pytest.approx(0.8, abs=0.02)
    assert served.calibration.calibration_points == N * H


def test_a_blend_that_needs_the_gbm_refuses_to_go_without() -> None:
    served = choose_served(*nested("lightgbm"), coverage=0.8, tolerance=0.1)
    with pytest.raises(ValueError, match="LightGBM"):
        served.quantiles(held_out()[0], None)


# --- the artifact --------------------------------------------------------------------------------------------------


def sine_series():
    """A noisy sine of 700 one-minute steps, and its roles."""
    rng = np.random.default_rng(3)
    steps = np.arange(700)
    segment = make_segment(1000 + 300 * np.sin(2 * np.pi * steps / 30) + 10 * rng.normal(size=steps.size))
    (roles,) = assign_roles([segment], train_fraction=0.8, calib_fraction=0.25)
    return segment, roles


def trained_parts():
    segment, roles = sine_series()
    pipeline = FeaturePipeline.fit([segment.slice(0, int((roles == Role.FIT).sum()))], (), 60)
    windows = {role: build_windows([segment], [roles], pipeline, role=role, sequence_length=20, horizon=H)
               for role in Role}
    gbm = DirectLightGBM(n_estimators=40, learning_rate=0.1, num_leaves=7).fit(
        windows[Role.FIT], windows[Role.CALIB], pipeline.power_std, pipeline)
    torch.manual_seed(0)
    model = build_model(len(pipeline.feature_names), H, 8, 1, 0.0)
    architecture = Architecture(n_features=len(pipeline.feature_names), sequence_length=20, horizon=H, hidden_size=8,
                                num_layers=1, dropout=0.0)
    forecaster = PowerForecaster(model.state_dict(), architecture, pipeline)
    calib = windows[Role.CALIB]
    raw = forecaster.raw_quantiles(calib.inputs, calib.last_power)
    forecaster.calibration = fit_calibration(raw, calib.targets, calib.mask, coverage=0.8, tolerance=0.1)
    return forecaster, gbm, windows


@pytest.mark.slow
def test_served_forecaster_round_trips_and_old_folders_serve_the_lstm(tmp_path) -> None:
    forecaster, gbm, windows = trained_parts()
    calib, test = windows[Role.CALIB], windows[Role.TEST]
    raw = forecaster.raw_quantiles(calib.inputs, calib.last_power)
    forecaster.served = choose_served(raw, gbm.predict(calib), calib.targets, calib.mask,
                                      time_halves(calib.segment_index, calib.origin_index), coverage=0.8,
                                      tolerance=0.1)
    forecaster.gbm = gbm
    assert forecaster.served_method != "lstm"  # an untrained LSTM is no match for the GBM on a sine
    forecaster.save(tmp_path / "new")
    loaded = PowerForecaster.load(tmp_path / "new")
    expected = forecaster.forecast(test.inputs, test.last_power)
    got = loaded.forecast(test.inputs, test.last_power)
    np.testing.assert_allclose(got.point, expected.point, rtol=1e-6)
    np.testing.assert_allclose(got.upper, expected.upper, rtol=1e-6)
    assert loaded.interval_coverage == 0.8
    # what a PowerPredictor replica answers with: the served forecast, in the same PowerForecast shape
    history = PowerHistory(power_watts=tuple(test.inputs[0, :, 0] * loaded.pipeline.power_std
                                             + loaded.pipeline.power_mean), horizon_s=2 * 60)
    (answer,) = forecast_histories(loaded, [history], "power_lstm/3")
    assert len(answer.point) == 2 and answer.interval_coverage == 0.8
    segment, _ = history_segment(history, loaded.sequence_length, 60)
    inputs = loaded.pipeline.transform(segment)[None]
    direct = loaded.forecast(inputs, segment.power[-1:])
    np.testing.assert_allclose(answer.point, direct.point[0, :2], atol=0.01)
    np.testing.assert_allclose(loaded.forecast_lstm(test.inputs, test.last_power).point,
                               forecaster.forecast_lstm(test.inputs, test.last_power).point, rtol=1e-6)
    # a folder from before served forecasts: the LSTM alone, as before
    forecaster.served, forecaster.gbm = None, None
    forecaster.save(tmp_path / "old")
    old = PowerForecaster.load(tmp_path / "old")
    assert old.served_method == "lstm" and not (tmp_path / "old" / SERVED_FILE).exists()
    np.testing.assert_array_equal(old.forecast(test.inputs, test.last_power).point,
                                  old.forecast_lstm(test.inputs, test.last_power).point)
    # a served blend whose GBM is missing is refused with the file's name
    (tmp_path / "new" / MODEL_FILE).unlink()
    with pytest.raises(ArtifactError, match=MODEL_FILE):
        PowerForecaster.load(tmp_path / "new")


def test_regression_weights_that_do_not_fit_the_architecture_are_no_loadable_model(tmp_path) -> None:
    """A folder whose architecture.json and weights disagree raised torch's RuntimeError: a retrain did not fall back
    to an older version and failed after training, and `evaluate --model` ended in a traceback."""
    segment, roles = sine_series()
    pipeline = FeaturePipeline.fit([segment.slice(0, int((roles == Role.FIT).sum()))], (), 60)
    architecture = Architecture(n_features=len(pipeline.feature_names), sequence_length=20, horizon=H, hidden_size=8,
                                num_layers=1, dropout=0.0)
    model = build_model(len(pipeline.feature_names), H, 8, 1, 0.0)
    PowerForecaster(model.state_dict(), architecture, pipeline).save(tmp_path / "m")
    wider = architecture.model_copy(update={"hidden_size": 16})
    (tmp_path / "m" / ARCHITECTURE_FILE).write_text(wider.model_dump_json())
    with pytest.raises(ArtifactError, match="do not fit the architecture"):
        PowerForecaster.load(tmp_path / "m")


def lstm_served_with_its_partner():
    """`trained_parts` with the LSTM served alone (weight 1 at every lead) and the LightGBM kept as its partner, and
    the test windows."""
    forecaster, gbm, windows = trained_parts()
    calib = windows[Role.CALIB]
    raw = forecaster.raw_quantiles(calib.inputs, calib.last_power)
    chosen = choose_served(raw, gbm.predict(calib), calib.targets, calib.mask,
                           time_halves(calib.segment_index, calib.origin_index), coverage=0.8, tolerance=0.1)
    forecaster.served = chosen.model_copy(update={"method": "lstm", "lstm_weight": (1.0,) * H})
    forecaster.gbm = gbm
    return forecaster, gbm, windows[Role.TEST]


@pytest.mark.slow
def test_an_lstm_served_alone_keeps_its_partner_for_the_online_blend(tmp_path) -> None:
    forecaster, gbm, test = lstm_served_with_its_partner()
    forecaster.save(tmp_path / "m")
    loaded = PowerForecaster.load(tmp_path / "m")
    assert (tmp_path / "m" / MODEL_FILE).exists() and loaded.blends_online
    assert loaded.forecast(test.inputs, test.last_power).experts is None  # the partner runs only when asked
    static = loaded.forecast(test.inputs, test.last_power, partner=True)
    lstm_median = loaded.raw_quantiles(test.inputs, test.last_power)[..., 1]
    np.testing.assert_allclose(static.point, np.maximum(lstm_median, 0.0), rtol=1e-6)  # the LSTM serves alone
    np.testing.assert_allclose(static.experts[..., 0], lstm_median, rtol=1e-6)
    np.testing.assert_allclose(static.experts[..., 1], gbm.predict(test), rtol=1e-6)
    # the online blend's weights move the point to the LightGBM's, lead by lead
    moved = loaded.forecast(test.inputs, test.last_power, np.array([0.0, 1.0, 0.0, 1.0]))
    np.testing.assert_allclose(moved.point[:, [0, 2]], np.maximum(gbm.predict(test)[:, [0, 2]], 0.0), rtol=1e-6)
    np.testing.assert_allclose(moved.point[:, [1, 3]], static.point[:, [1, 3]], rtol=1e-6)
    # what a replica answers carries both models' points to learn from, and follows the weights it is given
    history = PowerHistory(power_watts=tuple(test.inputs[0, :, 0] * loaded.pipeline.power_std
                                             + loaded.pipeline.power_mean), horizon_s=H * 60)
    assert forecast_histories(loaded, [history], "power_lstm/3")[0].blend_experts is None  # a client's lists
    (plain,) = forecast_histories(loaded, [history], "power_lstm/3", follow_blend=True)
    (weighted,) = forecast_histories(loaded, [history], "power_lstm/3", lstm_weight=np.zeros(H), follow_blend=True)
    assert plain.blend_experts is not None and weighted.blend_experts == plain.blend_experts
    np.testing.assert_allclose(weighted.point, np.maximum(plain.blend_experts[1], 0.0), atol=0.011)
    # a model without its partner cannot follow a blend
    loaded.gbm = None
    with pytest.raises(ArtifactError, match="LightGBM"):
        loaded.forecast(test.inputs, test.last_power, np.zeros(H))


@pytest.mark.slow
def test_the_holdout_scores_the_blend_as_a_replica_follows_it() -> None:
    """The promotion gate and a version's held-out figures score the served forecast as a replica serves its nodes'
    windows: an LSTM served alone after the calibration split, beaten by its LightGBM partner on the holdout, is
    scored with the mix the holdout's own landed outcomes move it to, not with the LSTM throughout."""
    forecaster, gbm, test = lstm_served_with_its_partner()
    origins = np.datetime64("2026-01-01T00:00") + test.origin_index.astype("timedelta64[m]")  # 1-minute steps
    holdout = CommonHoldout(test.inputs, test.last_power, test.targets, test.mask, origins)

    def mae(point: np.ndarray) -> float:
        return point_metrics(point, test.targets, test.mask)["mae"]

    lstm, partner = mae(forecaster.forecast(test.inputs, test.last_power).point), mae(gbm.predict(test))
    followed = holdout.mae(forecaster)
    assert partner < lstm / 2 and followed < lstm / 2  # it moves to the partner once the outcomes weigh in
    assert followed > partner  # and serves the LSTM until they do


def test_the_resampled_comparison_scores_the_blend_as_a_replica_follows_it() -> None:
    """A version of another step or horizon is compared with the active one on the telemetry itself
    (training.power.common_leads): there too a model that blends online is scored as a replica serves it, its blend
    followed over the holdout, not with the calibration split's mix throughout."""
    followed, _, _ = lstm_served_with_its_partner()
    static = copy.copy(followed)
    static.gbm = None  # the same LSTM served alone, with no partner to move to
    segment, roles = sine_series()
    times = segment.start + pd.to_timedelta(np.arange(len(segment)) * segment.step_s, unit="s")
    frame = validate_telemetry(pd.DataFrame({"timestamp": times, "node_id": segment.node_id,
                                             "power_watts": segment.power}))
    held = np.flatnonzero(roles == Role.TEST)
    start = int(segment.start.timestamp())
    spans = {segment.node_id: (start + int(held[0]) * 60, start + (int(held[-1]) + 1) * 60)}
    score = score_common(followed, static, frame, spans, max_gap_s=60)
    assert (score.step_s, score.lead_steps) == (60, H) and score.points > 0
    assert score.mae[0] < score.mae[1] / 2  # it moves to the partner once the holdout's outcomes weigh in
