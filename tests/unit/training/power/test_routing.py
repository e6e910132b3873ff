"""Which served model answers a horizon: the finest step that covers it (no Ray)."""

from __future__ import annotations

import pytest

from core.durations import parse_duration
from core.forecasts import ForecastRequestError
from training.power.routing import Coverage, route

# The default resolutions (training.settings.DEFAULT_RESOLUTIONS): 1 min up to 1 h, 1 h up to 7 days.
SERVED = [Coverage("power_lstm_1h", 3600, 7 * 86400), Coverage("power_lstm", 60, 3600)]


@pytest.mark.parametrize(("horizon", "model_id"), [
    ("30m", "power_lstm"), ("1h", "power_lstm"), ("24h", "power_lstm_1h"), ("90m", None),
    ("2h", "power_lstm_1h"), ("7d", "power_lstm_1h"), ("10m", "power_lstm"),
])
def test_the_seed_s_horizons_go_to_the_finest_model_that_covers_them(horizon, model_id):
    if model_id is None:  # 90 minutes: beyond the fine model, not a whole number of hours
        with pytest.raises(ForecastRequestError, match=r"whole number of the served model's steps \(1h; served: "
                                                       r"power_lstm: 1min steps up to 1h; power_lstm_1h"):
            route(SERVED, parse_duration(horizon))
        return
    assert route(SERVED, parse_duration(horizon)) == model_id


def test_beyond_every_horizon_names_what_each_model_covers():
    with pytest.raises(ForecastRequestError) as refused:
        route(SERVED[1:], parse_duration("24h"))
    assert refused.value.field == "prediction_horizon"
    assert "beyond the served models' horizons (power_lstm: 1min steps up to 1h)" in refused.value.message


def test_a_history_at_a_known_step_is_answered_by_a_model_of_that_step():
    assert route(SERVED, 1800, step_s=3600 // 60) == "power_lstm"
    assert route(SERVED, 3600, step_s=3600) == "power_lstm_1h"  # a stored hourly window, not the 1-minute model
    with pytest.raises(ForecastRequestError, match="no served model works at a 5min step") as refused:
        route(SERVED, 3600, step_s=300)
    assert refused.value.field == "step"  # the request's `step`, not its horizon


def test_among_equal_steps_the_shorter_horizon_that_covers_wins():
    served = [Coverage("long", 60, 7200), Coverage("short", 60, 1800)]
    assert route(served, 1800) == "short" and route(served, 3600) == "long"
