"""Unit tests for the recency weighting of the LightGBM partner and the LSTM (training.power.recency, served, fit)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.fakes.trainer import untrained
from tests.unit.training.power.segments import STEP, make_segment
from training.metrics import point_metrics
from training.power.dataset import PreparedData, train_forecaster
from training.power.features import FeaturePipeline
from training.power.fit import SupervisedArrays
from training.power.gbm import DirectLightGBM
from training.power.recency import HALF_LIFE_FRACTIONS, candidate_half_lives, recency_weights, window_ages
from training.power.served import fit_gbm, train_served
from training.power.train_loop import WeightedChallenger
from training.power.windows import Role, assign_roles
from training.settings import PowerPredictorConfig


def prepared_of(segments, train_fraction: float = 0.8, calib_fraction: float = 0.2, sequence_length: int = 8,
                horizon: int = 3) -> PreparedData:
    roles = assign_roles(segments, train_fraction, calib_fraction)
    fit_parts = [s.slice(0, int((r == Role.FIT).sum())) for s, r in zip(segments, roles, strict=True)]
    pipeline = FeaturePipeline.fit(fit_parts, (), STEP)
    return PreparedData(segments, roles, pipeline, sequence_length, horizon)


def test_a_window_s_age_is_the_steps_from_its_origin_to_the_series_last_training_step() -> None:
    prepared = prepared_of([make_segment(np.arange(100.0))], train_fraction=0.5)  # training steps 0..49
    windows = prepared.training_windows()
    np.testing.assert_array_equal(window_ages(prepared, windows), 49 - windows.origin_index)
    test = prepared.windows(Role.TEST)
    # a test window's origin may lie in the training part (its input is history); past the end, age 0
    np.testing.assert_array_equal(window_ages(prepared, test), np.maximum(49 - test.origin_index, 0))


def test_ages_count_the_gap_between_a_series_segments_and_each_series_ends_on_its_own() -> None:
    first = make_segment(np.arange(40.0))
    second = make_segment(np.arange(60.0), start_step=40 + 20)  # a 20-step gap, then 60 steps
    other = make_segment(np.arange(50.0), node="m")
    prepared = prepared_of([first, second, other], train_fraction=0.8)  # "n": 80 training steps, "m": 40
    windows = prepared.training_windows()
    ages = window_ages(prepared, windows)
    # "n" trains on all of the first segment and the second's first 40 steps: its last training step is 99 steps
    # after the first segment's start (gap included) and 39 after the second's; "m" trains on its first 40 steps
    for segment_index, expected_end in ((0, 99), (1, 39), (2, 39)):
        rows = windows.segment_index == segment_index
        assert rows.any()
        np.testing.assert_array_equal(ages[rows], expected_end - windows.origin_index[rows])


def test_cut_at_one_time_every_series_ages_to_the_cut_so_an_early_run_counts_as_old() -> None:
    """Per series, a run recorded long before the cut aged only to its own end and weighed like the newest run."""
    segments = [make_segment(np.arange(100.0), node="early"),
                make_segment(np.arange(100.0), node="late", start_step=300)]
    roles = assign_roles(segments, 0.75, 0.2, split="time")  # 150 training steps: all of "early", "late" 300..349
    assert [int((r != Role.TEST).sum()) for r in roles] == [100, 50]
    per_series = replace(prepared_of(segments), roles=roles)
    in_time = replace(per_series, split="time")
    windows = in_time.training_windows()
    early, late = windows.segment_index == 0, windows.segment_index == 1
    assert early.any() and late.any()
    np.testing.assert_array_equal(window_ages(per_series, windows)[early], 99 - windows.origin_index[early])
    np.testing.assert_array_equal(window_ages(in_time, windows)[early], 349 - windows.origin_index[early])
    for prepared in (per_series, in_time):  # the newest series ends at the cut either way
        np.testing.assert_array_equal(window_ages(prepared, windows)[late], 49 - windows.origin_index[late])


def test_candidates_are_none_then_fractions_of_the_median_series_training_steps() -> None:
    segments = [make_segment(np.arange(n, dtype=float), node=f"n{n}") for n in (100, 200, 1000)]
    prepared = prepared_of(segments, train_fraction=0.5)  # training steps 50, 100, 500: median 100
    assert candidate_half_lives(prepared) == [None, *(100 * f for f in HALF_LIFE_FRACTIONS)]
    tiny = prepared_of([make_segment(np.arange(20.0))], train_fraction=0.5)  # 10 training steps
    assert candidate_half_lives(tiny) == [None, 5.0, 2.5, 1.25]  # no half-life under one step


def test_series_without_training_steps_leave_the_candidates_to_those_with_some() -> None:
    """Cut at one time for all series, one recorded after the cut has none: it pulled the median (and every
    half-life tried) towards 0."""
    segments = [make_segment(np.arange(100.0), node="early"), make_segment(np.arange(100.0), node="middle",
                                                                         start_step=100),
                make_segment(np.arange(100.0), node="late", start_step=300)]
    roles = assign_roles(segments, 0.5, 0.2, split="time")
    assert [int((r != Role.TEST).sum()) for r in roles] == [100, 50, 0]
    prepared = replace(prepared_of(segments), roles=roles)
    assert candidate_half_lives(prepared) == [None, *(75 * f for f in HALF_LIFE_FRACTIONS)]


def test_a_weighted_fit_needs_every_window_s_age() -> None:
    prepared = prepared_of([make_segment(np.random.default_rng(1).normal(100, 5, 300))])
    fit, calib = prepared.windows(Role.FIT), prepared.windows(Role.CALIB)
    with pytest.raises(ValueError, match="age"):
        DirectLightGBM(n_estimators=5).fit(fit, calib, 5.0, half_life=10.0)
    model = DirectLightGBM(n_estimators=5).fit(fit, calib, 5.0, ages=window_ages(prepared, fit), half_life=10.0)
    assert model.spec.half_life_steps == 10.0
    with pytest.raises(ValueError, match="age"):
        model.refit(prepared.training_windows())


def test_without_a_half_life_the_ages_change_nothing() -> None:
    prepared = prepared_of([make_segment(np.random.default_rng(2).normal(100, 5, 400))])
    fit, calib, test = (prepared.windows(role) for role in (Role.FIT, Role.CALIB, Role.TEST))
    plain = DirectLightGBM(n_estimators=10).fit(fit, calib, 5.0)
    aged = DirectLightGBM(n_estimators=10).fit(fit, calib, 5.0, ages=window_ages(prepared, fit))
    np.testing.assert_array_equal(aged.predict(test), plain.predict(test))


def drifting_rhythm() -> PreparedData:
    """The rhythm quickens slowly all through the series: the newest training windows are the best guide to the
    test part."""
    rng = np.random.default_rng(7)
    steps = np.arange(1200)
    period = np.linspace(40, 12, steps.size)
    phase = 2 * np.pi * np.cumsum(1.0 / period)
    power = 500 + 150 * np.sin(phase) + 5 * rng.normal(size=steps.size)
    return prepared_of([make_segment(power)], sequence_length=24, horizon=4)


@pytest.mark.slow
def test_a_drifting_rhythm_gets_a_half_life_that_beats_the_unweighted_model() -> None:
    """The calibration split says the newest windows are the best guide, and the chosen weighting is better on the
    test part too."""
    prepared = drifting_rhythm()
    weighted = fit_gbm(prepared, seed=0)
    assert weighted.spec.half_life_steps is not None
    fit, calib, test = (prepared.windows(role) for role in (Role.FIT, Role.CALIB, Role.TEST))
    plain = DirectLightGBM(seed=0).fit(fit, calib, prepared.pipeline.power_std, prepared.pipeline)
    plain = plain.refit(prepared.training_windows())
    weighted_mae, plain_mae = (point_metrics(m.predict(test), test.targets, test.mask)["mae"]
                               for m in (weighted, plain))
    assert weighted_mae < 0.9 * plain_mae


def capture_training(monkeypatch: pytest.MonkeyPatch, challenger_kept: bool = False,
                     ) -> list[tuple[SupervisedArrays, SupervisedArrays, WeightedChallenger | None]]:
    """Replace Ray Train with an untrained LSTM and keep the (FIT, CALIB, challenger) of every training; the
    challenger, when there is one, is reported kept as `challenger_kept` says (the choice itself is Ray Train's:
    tests/integration/test_backtest_suite.py)."""
    seen: list[tuple[SupervisedArrays, SupervisedArrays, WeightedChallenger | None]] = []
    train = untrained(0.0)

    def capture(train_arrays: SupervisedArrays, val_arrays: SupervisedArrays, *args, challenger=None, **kwargs):
        seen.append((train_arrays, val_arrays, challenger))
        kept = challenger.half_life_steps if challenger is not None and challenger_kept else None
        return replace(train(train_arrays, val_arrays, *args, **kwargs), half_life_steps=kept)

    monkeypatch.setattr("training.power.dataset.train_power_lstm", capture)
    return seen


SMALL_LSTM = PowerPredictorConfig(hidden_size=8, num_layers=1, sequence_length=8, epochs=4, min_epochs=1)


def test_the_lstm_s_challenger_draws_its_windows_with_the_recency_weights_of_a_half_life(monkeypatch) -> None:
    seen = capture_training(monkeypatch)
    prepared = prepared_of([make_segment(np.random.default_rng(3).normal(100, 5, 300))])
    train_forecaster(prepared, SMALL_LSTM, verbose=False)
    train_forecaster(prepared, SMALL_LSTM, verbose=False, half_life=20.0)
    (plain_fit, plain_calib, none), (fit, calib, challenger) = seen
    assert none is None and challenger is not None and challenger.half_life_steps == 20.0
    for arrays in (plain_fit, plain_calib, fit, calib):
        assert arrays.sample_weights is None  # the first run of each draws uniformly
    for weights, role in ((challenger.fit_weights, Role.FIT), (challenger.calib_weights, Role.CALIB)):
        np.testing.assert_array_equal(weights, recency_weights(window_ages(prepared, prepared.windows(role)), 20.0))
    assert challenger.fit_weights.min() < 0.1 < 0.9 < challenger.calib_weights.max()  # the oldest, the newest


@pytest.mark.slow
@pytest.mark.parametrize("challenger_kept", [True, False])
def test_the_lstm_trains_again_with_its_partner_s_half_life_and_says_which_run_serves(monkeypatch,
                                                                                    challenger_kept) -> None:
    """The challenger draws with the half-life the LightGBM partner chose, in the same training; the weights say
    whether it was kept."""
    seen = capture_training(monkeypatch, challenger_kept)
    prepared = drifting_rhythm()
    forecaster, weights, partner = train_served(prepared, SMALL_LSTM.model_copy(update={"sequence_length": 24}),
                                                verbose=False)
    assert partner is not None and partner.spec.half_life_steps is not None
    [(uniform, _, challenger)] = seen
    expected = recency_weights(window_ages(prepared, prepared.windows(Role.FIT)), partner.spec.half_life_steps)
    assert uniform.sample_weights is None and challenger is not None
    np.testing.assert_array_equal(challenger.fit_weights, expected)
    assert weights.half_life_steps == (partner.spec.half_life_steps if challenger_kept else None)
    assert forecaster.served is not None  # the blend was chosen on the calibration split


def test_without_a_partner_the_lstm_trains_once_on_uniform_samples(monkeypatch) -> None:
    seen = capture_training(monkeypatch)
    monkeypatch.setattr("training.power.served.fit_partner", lambda *_args, **_kwargs: None)
    prepared = prepared_of([make_segment(np.random.default_rng(4).normal(100, 5, 300))])
    _, weights, partner = train_served(prepared, SMALL_LSTM, verbose=False)
    assert partner is None and weights.half_life_steps is None
    [(uniform, _, challenger)] = seen
    assert uniform.sample_weights is None and challenger is None
