"""ServeForecaster: a tick's windows go to the replicas in concurrent calls of a bounded size, and each call's reply is
checked before the controller maps the results to policies by position."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

from autoscaler.serve_forecaster import WINDOWS_PER_CALL, ServeForecaster
from core.forecasts import ForecastRequestError, PowerForecast


class FakeHandle:
    """`forecast_windows.remote` answered by `reply(nodes)`: a list, or an exception the call raises."""

    def __init__(self, reply):
        self.reply, self.calls = reply, []
        self.forecast_windows = SimpleNamespace(remote=self._remote)

    def _remote(self, nodes, windows):
        assert len(nodes) == len(windows)
        assert [window.node for window in windows] == list(nodes)  # each node with its own window
        self.calls.append(list(nodes))

        async def answer():
            result = self.reply(nodes)
            if isinstance(result, Exception):
                raise result
            return result

        return answer()


def forecaster_over(handle: FakeHandle) -> ServeForecaster:
    forecaster = ServeForecaster()

    async def the_handle():
        return handle

    forecaster._handle, forecaster._run = the_handle, asyncio.run
    return forecaster


def forecast_of(node: str) -> PowerForecast:
    """A one-lead forecast that names the node it was made for (in its model version)."""
    return PowerForecast(model_version=f"for {node}", step_s=60, timestamps=(datetime(2026, 1, 1, tzinfo=UTC),),
                         point=(100.0,), lower=(90.0,), upper=(110.0,), confidence=(0.9,), window_coverage=1.0,
                         padded_steps=0, interval_coverage=0.8)


def test_windows_go_out_in_bounded_calls_and_a_failed_call_fails_only_its_own():
    """70 windows: calls of 32, 32 and 6; the second call's replica is gone, so its 32 windows get that error and the
    others their answers, in the order asked."""
    nodes = [f"n{i}" for i in range(70)]
    gone = ConnectionError("replica died")
    handle = FakeHandle(lambda part: gone if part[0] == nodes[WINDOWS_PER_CALL] else [forecast_of(n) for n in part])
    results = forecaster_over(handle).forecast(nodes, [SimpleNamespace(node=node) for node in nodes])
    assert [len(call) for call in handle.calls] == [32, 32, 6]
    assert results[WINDOWS_PER_CALL:2 * WINDOWS_PER_CALL] == [gone] * WINDOWS_PER_CALL
    for index in [*range(WINDOWS_PER_CALL), *range(2 * WINDOWS_PER_CALL, 70)]:
        assert results[index].model_version == f"for {nodes[index]}", index  # each node's own, in its place


def test_a_reply_that_is_not_a_forecast_fails_its_window():
    [wrong] = forecaster_over(FakeHandle(lambda part: ["a string"])).forecast(["n1"], [SimpleNamespace(node="n1")])
    assert type(wrong) is RuntimeError and "not a forecast: str" in str(wrong)


def test_a_reply_that_does_not_answer_every_window_fails_its_windows():
    """The controller maps results to policies by position: a short reply would misplace or drop them."""
    refused = ForecastRequestError("features", "cannot estimate")
    windows = [SimpleNamespace(node="n1"), SimpleNamespace(node="n2")]
    short = forecaster_over(FakeHandle(lambda part: [refused])).forecast(["n1", "n2"], windows)
    assert all(type(r) is RuntimeError and "answered 2 windows with 1" in str(r) for r in short)
    [kept] = forecaster_over(FakeHandle(lambda part: [refused])).forecast(["n1"], windows[:1])
    assert kept is refused  # a node's own error comes back as it is
