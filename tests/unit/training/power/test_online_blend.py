"""The online blend: the served mix of the LSTM and the LightGBM follows whichever has recently been more accurate."""

from __future__ import annotations

import numpy as np

from training.power.blend import MIN_GAIN
from training.power.online_blend import HALF_LIFE_POINTS, MIN_POINTS, OnlineBlend, blend_in_time

STEP_S = 60


def _teach(blend: OnlineBlend, lead: int, lstm: float, gbm: float, actual: float, times: int) -> None:
    for _ in range(times):
        blend.learn(np.array([lead]), np.array([lstm]), np.array([gbm]), np.array([actual]))


def test_the_calibration_split_s_weights_serve_until_enough_outcomes_weigh_in():
    blend = OnlineBlend.starting_at((1.0, 1.0))
    _teach(blend, 0, lstm=130.0, gbm=100.0, actual=100.0, times=MIN_POINTS - 1)  # the LightGBM is exact
    assert blend.weights().tolist() == [1.0, 1.0]
    _teach(blend, 0, lstm=130.0, gbm=100.0, actual=100.0, times=1)
    assert blend.weights().tolist() == [0.0, 1.0]  # lead 1 moved; lead 2 has learned nothing
    assert blend.points == MIN_POINTS


def test_a_mix_serves_only_where_it_beats_the_start_by_more_than_the_margin():
    slightly, clearly = OnlineBlend.starting_at((1.0,)), OnlineBlend.starting_at((1.0,))
    # the LSTM errs 10 W; the LightGBM half the margin less, or twice the margin less
    _teach(slightly, 0, lstm=110.0, gbm=110.0 - 10.0 * MIN_GAIN / 2, actual=100.0, times=4 * MIN_POINTS)
    _teach(clearly, 0, lstm=110.0, gbm=110.0 - 10.0 * MIN_GAIN * 2, actual=100.0, times=4 * MIN_POINTS)
    assert slightly.weights().tolist() == [1.0] and clearly.weights().tolist() == [0.0]


def test_the_mix_in_between_serves_where_the_two_err_on_opposite_sides():
    blend = OnlineBlend.starting_at((0.0,))
    _teach(blend, 0, lstm=120.0, gbm=80.0, actual=100.0, times=4 * MIN_POINTS)
    assert blend.weights().tolist() == [0.5]


def test_a_later_change_of_who_is_better_is_followed_within_a_few_half_lives():
    blend = OnlineBlend.starting_at((1.0,))
    _teach(blend, 0, lstm=130.0, gbm=100.0, actual=100.0, times=HALF_LIFE_POINTS)
    assert blend.weights().tolist() == [0.0]
    _teach(blend, 0, lstm=100.0, gbm=130.0, actual=100.0, times=2 * HALF_LIFE_POINTS)
    assert blend.weights().tolist() == [1.0]


def test_leads_beyond_the_horizon_are_ignored():
    blend = OnlineBlend.starting_at((1.0,))
    blend.learn(np.array([0, 3]), np.array([1.0, 1.0]), np.array([2.0, 2.0]), np.array([2.0, 2.0]))
    assert blend.points == 1 and blend.seen.tolist() == [1]


def _windows(count: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    origins = np.datetime64("2026-12-01T00:00") + np.arange(count) * np.timedelta64(STEP_S, "s")
    return origins, np.ones((count, horizon), dtype=bool)


def test_blend_in_time_learns_only_from_outcomes_landed_by_each_origin():
    count, horizon = 400, 3
    origins, observed = _windows(count, horizon)
    rng = np.random.default_rng(0)
    actual = 100.0 + rng.normal(0.0, 1.0, (count, horizon))
    lstm, gbm = actual + 30.0, actual.copy()  # the LightGBM is exact, the LSTM 30 W high
    weights = blend_in_time(lstm, gbm, actual, observed, origins, STEP_S, np.ones(horizon))
    # lead k of window r lands k steps after its origin: the first MIN_POINTS lead-1 outcomes have landed by the
    # origin MIN_POINTS steps in, and not one step earlier
    assert weights[MIN_POINTS, 0] == 0.0 and weights[MIN_POINTS - 1, 0] == 1.0
    assert weights[MIN_POINTS + 2, 2] == 0.0 and weights[MIN_POINTS + 1, 2] == 1.0
    # what lands later never changes an earlier window's weights
    changed = actual.copy()
    changed[200:] += 50.0
    again = blend_in_time(lstm, gbm, changed, observed, origins, STEP_S, np.ones(horizon))
    assert np.array_equal(again[:201], weights[:201])


def test_imputed_actuals_teach_nothing():
    count, horizon = 200, 1
    origins, observed = _windows(count, horizon)
    actual = np.full((count, horizon), 100.0)
    weights = blend_in_time(actual + 30.0, actual, actual, np.zeros_like(observed), origins, STEP_S, np.ones(1))
    assert (weights == 1.0).all()
