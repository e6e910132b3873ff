"""ServeForecaster: the replica's reply to a tick's windows is checked before the controller maps it to policies."""

from __future__ import annotations

import pytest

from autoscaler.serve_forecaster import ServeForecaster
from core.forecasts import ForecastRequestError


def replying(answer) -> ServeForecaster:
    """A ServeForecaster whose handle call returns `answer` (no Ray: the coroutine is closed unrun)."""
    forecaster = ServeForecaster()

    def run(coroutine):
        coroutine.close()
        return answer

    forecaster._run = run
    return forecaster


def test_each_window_gets_one_forecast_or_error_and_anything_else_is_an_error():
    refused = ForecastRequestError("features", "cannot estimate")
    results = replying([refused, "not a forecast"]).forecast(["n1", "n2"], [object(), object()])
    assert results[0] is refused
    assert type(results[1]) is RuntimeError and "not a forecast: str" in str(results[1])


@pytest.mark.parametrize("answer", [[], None])
def test_a_reply_that_does_not_answer_every_window_fails_the_batch(answer):
    """The controller maps results to policies by position: a short list would misplace or drop them."""
    with pytest.raises(RuntimeError, match="answered 2 windows with"):
        replying(answer).forecast(["n1", "n2"], [object(), object()])
