"""Unit tests for the direct multi-horizon LightGBM (training.power.gbm)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.unit.training.power.segments import STEP, all_windows, make_segment
from training.metrics import point_metrics
from training.power import calendar as cal
from training.power import gbm
from training.power.baselines import last_value
from training.power.features import FeaturePipeline
from training.power.gbm import DirectLightGBM, GbmSpec, lgbm_features
from training.power.windows import Role, assign_roles, build_windows


def test_lgbm_features_are_relative_to_the_origin() -> None:
    segment = make_segment(np.random.default_rng(2).normal(500, 50, size=80))
    pipeline = FeaturePipeline.fit([segment], (), STEP)
    roles = [np.full(80, Role.TEST, np.int8)]
    windows = build_windows([segment], roles, pipeline, role=Role.TEST, sequence_length=20, horizon=3)
    rows = lgbm_features(windows.inputs)
    # 12 lags + level, spread and trend over spans 6 and 15 + the last step's 2 features
    assert rows.shape == (len(windows), 12 + 3 * 2 + 2) and rows.dtype == np.float32
    assert (rows[:, 11] == 0).all()  # the last lag is the origin minus itself
    power = windows.inputs[:, :, 0]
    np.testing.assert_allclose(rows[:, 0], power[:, -12] - power[:, -1], rtol=1e-6)
    np.testing.assert_allclose(rows[:, 12], power[:, -6:].mean(axis=1) - power[:, -1], rtol=1e-5, atol=1e-6)
    raised = make_segment(segment.power + 200.0)  # same shape, higher level
    higher = lgbm_features(build_windows([raised], roles, pipeline, role=Role.TEST, sequence_length=20,
                                         horizon=3).inputs)
    np.testing.assert_allclose(higher[:, :-2], rows[:, :-2], atol=1e-5)  # relative features do not move
    assert (higher[:, -2] > rows[:, -2]).all()  # the scaled level does


@pytest.mark.slow
def test_direct_lightgbm_beats_last_value() -> None:
    rng = np.random.default_rng(3)
    steps = np.arange(900)
    power = 1000 + 300 * np.sin(2 * np.pi * steps / 30) + 10 * rng.normal(size=steps.size)
    segment = make_segment(power)
    (roles,) = assign_roles([segment], train_fraction=0.7, calib_fraction=0.2)
    pipeline = FeaturePipeline.fit([segment.slice(0, int((roles == Role.FIT).sum()))], (), STEP)

    def windows(role: Role):
        return build_windows([segment], [roles], pipeline, role=role, sequence_length=32, horizon=6)

    train, valid, test = windows(Role.FIT), windows(Role.CALIB), windows(Role.TEST)
    assert len(train) and len(valid) and len(test)
    model = DirectLightGBM(n_estimators=80, learning_rate=0.1, num_leaves=15).fit(train, valid, pipeline.power_std)
    forecast = model.predict(test)
    assert forecast.shape == test.targets.shape and np.isfinite(forecast).all()
    lgbm = point_metrics(forecast, test.targets, test.mask)["mae"]
    naive = point_metrics(last_value(test), test.targets, test.mask)["mae"]
    assert lgbm < 0.5 * naive
    # deterministic for a fixed seed
    again = DirectLightGBM(n_estimators=80, learning_rate=0.1, num_leaves=15).fit(train, valid, pipeline.power_std)
    np.testing.assert_allclose(again.predict(test), forecast)


def test_direct_lightgbm_must_be_fitted_first() -> None:
    windows = all_windows([make_segment(np.arange(30.0))], sequence_length=4, horizon=2)
    with pytest.raises(RuntimeError, match="fit"):
        DirectLightGBM().predict(windows)


def test_rows_carry_the_target_time_on_the_calendar() -> None:
    step = 3600
    segment = make_segment(np.arange(24 * 3, dtype=float), step=step)
    pipeline = FeaturePipeline.fit([segment], (), step, calendar=("time_of_day",))
    roles = [np.full(len(segment), Role.TEST, np.int8)]
    windows = build_windows([segment], roles, pipeline, role=Role.TEST, sequence_length=5, horizon=3)
    model = DirectLightGBM()
    model.spec = GbmSpec.of(pipeline)
    assert model.spec.calendar_columns == {"time_of_day": (2, 3)} and model.spec.step_s == step
    rows = model.rows(windows.inputs, 3)
    assert rows.shape == (3 * len(windows), lgbm_features(windows.inputs).shape[1] + 1 + 2)
    positions = np.repeat(windows.origin_index, 3) + np.tile([1, 2, 3], len(windows))
    targets = pd.DatetimeIndex(segment.start + pd.to_timedelta(positions * step, unit="s"))
    np.testing.assert_allclose(rows[:, -2:], np.column_stack(cal.encode(targets, ("time_of_day",))), atol=1e-5)
    assert rows[:, -3].tolist() == [1, 2, 3] * len(windows)  # the lead


@pytest.mark.slow
def test_saved_model_predicts_the_same(tmp_path) -> None:
    rng = np.random.default_rng(3)
    power = 1000 + 300 * np.sin(2 * np.pi * np.arange(600) / 30) + 10 * rng.normal(size=600)
    windows = all_windows([make_segment(power)], sequence_length=20, horizon=4)
    model = DirectLightGBM(n_estimators=30, learning_rate=0.1, num_leaves=7).fit(windows, windows, 300.0)
    model.save(tmp_path)
    np.testing.assert_allclose(DirectLightGBM.load(tmp_path).predict(windows), model.predict(windows), rtol=1e-9)


def test_the_refit_learns_the_newest_part_of_the_training_data() -> None:
    """A change of rhythm inside the calibration tail: the model early-stopped on it never trained on the new
    rhythm, the refit on FIT and CALIB together has, and it trains the chosen rounds scaled by the extra windows."""
    rng = np.random.default_rng(5)
    steps = np.arange(1200)
    period = np.where(steps < 600, 30, 12)  # the rhythm changes at 600 (FIT ends at 672, the test part at 960)
    power = 1000 + 300 * np.sin(2 * np.pi * steps / period) + 10 * rng.normal(size=steps.size)
    segment = make_segment(power)
    (roles,) = assign_roles([segment], train_fraction=0.8, calib_fraction=0.3)
    pipeline = FeaturePipeline.fit([segment.slice(0, int((roles == Role.FIT).sum()))], (), STEP)

    def windows(role: Role, of=(roles,)):
        return build_windows([segment], list(of), pipeline, role=role, sequence_length=32, horizon=4)

    fit, calib, test = windows(Role.FIT), windows(Role.CALIB), windows(Role.TEST)
    model = DirectLightGBM(n_estimators=120, learning_rate=0.1, num_leaves=15).fit(fit, calib, pipeline.power_std)
    everything = windows(Role.FIT, of=(np.where(roles == Role.CALIB, Role.FIT, roles).astype(np.int8),))
    refit = model.refit(everything)
    chosen = model.booster.best_iteration or model.booster.current_iteration()
    assert refit.booster.current_iteration() == round(chosen * len(everything) / len(fit))
    assert refit.spec == model.spec and refit.fit_windows == len(everything)
    early, late = (point_metrics(m.predict(test), test.targets, test.mask)["mae"] for m in (model, refit))
    assert late < 0.8 * early


def test_only_a_fitted_model_can_be_refitted() -> None:
    windows = all_windows([make_segment(np.arange(30.0))], sequence_length=4, horizon=2)
    with pytest.raises(RuntimeError, match="fit"):
        DirectLightGBM().refit(windows)


def test_a_fit_past_the_row_budget_trains_on_a_seeded_sample_and_predictions_go_in_parts(monkeypatch) -> None:
    """A cluster's worth of windows would not fit in memory as (window, lead) rows: past `MAX_FIT_ROWS` a fit (and
    its refit) trains on a seeded sample of the windows, and a prediction built in parts equals one built at once."""
    power = 500 + 100 * np.sin(np.arange(400) / 9.0) + np.random.default_rng(4).normal(0, 5, 400)
    fit, calib = (all_windows([make_segment(part)], sequence_length=8, horizon=4)
                  for part in (power[:300], power[300:]))
    whole = DirectLightGBM(n_estimators=20).fit(fit, calib, power_std=50.0)
    assert whole.fit_windows == len(fit) == 292
    monkeypatch.setattr(gbm, "MAX_FIT_ROWS", 400)  # 100 windows of 4 leads
    sampled = DirectLightGBM(n_estimators=20).fit(fit, calib, power_std=50.0)
    again = DirectLightGBM(n_estimators=20).fit(fit, calib, power_std=50.0)
    assert sampled.fit_windows == 100
    assert sampled.booster.model_to_string() == again.booster.model_to_string()  # the same sample each time
    assert sampled.booster.model_to_string() != whole.booster.model_to_string()
    chosen = gbm.fit_sample(len(fit), 4, seed=0)
    assert len(chosen) == 100 and len(set(chosen)) == 100 and (np.diff(chosen) > 0).all()
    assert gbm.fit_sample(100, 4, seed=0) is None
    assert sampled.refit(fit).fit_windows == 100  # as many windows as the fit: as many rounds
    at_once = sampled.predict(calib)
    monkeypatch.setattr(gbm, "PREDICT_ROWS", 12)  # 3 windows per part
    np.testing.assert_array_equal(sampled.predict(calib), at_once)
