"""ServeForecaster: a tick's windows go to the replicas in concurrent calls of a bounded size, and each call's reply is
checked before the controller maps the results to policies by position."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from autoscaler.serve_forecaster import WINDOWS_PER_CALL, ServeForecaster
from core.forecasts import ForecastRequestError


class FakeHandle:
    """`forecast_windows.remote` answered by `reply(nodes)`: a list, or an exception the call raises."""

    def __init__(self, reply):
        self.reply, self.calls = reply, []
        self.forecast_windows = SimpleNamespace(remote=self._remote)

    def _remote(self, nodes, windows):
        assert len(nodes) == len(windows)
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


def test_windows_go_out_in_bounded_calls_and_a_failed_call_fails_only_its_own():
    """70 windows: calls of 32, 32 and 6; the second call's replica is gone, so its 32 windows get that error and the
    others their answers, in the order asked."""
    nodes = [f"n{i}" for i in range(70)]
    gone = ConnectionError("replica died")
    handle = FakeHandle(lambda part: gone if part[0] == nodes[WINDOWS_PER_CALL] else [f"is {n}" for n in part])
    results = forecaster_over(handle).forecast(nodes, [object()] * 70)
    assert [len(call) for call in handle.calls] == [32, 32, 6]
    assert results[WINDOWS_PER_CALL:2 * WINDOWS_PER_CALL] == [gone] * WINDOWS_PER_CALL
    others = results[:WINDOWS_PER_CALL] + results[2 * WINDOWS_PER_CALL:]
    assert all(type(r) is RuntimeError and "not a forecast: str" in str(r) for r in others)  # strings, not forecasts


def test_a_reply_that_does_not_answer_every_window_fails_its_windows():
    """The controller maps results to policies by position: a short reply would misplace or drop them."""
    refused = ForecastRequestError("features", "cannot estimate")
    short = forecaster_over(FakeHandle(lambda part: [refused])).forecast(["n1", "n2"], [object(), object()])
    assert all(type(r) is RuntimeError and "answered 2 windows with 1" in str(r) for r in short)
    [kept] = forecaster_over(FakeHandle(lambda part: [refused])).forecast(["n1"], [object()])
    assert kept is refused  # a node's own error comes back as it is
