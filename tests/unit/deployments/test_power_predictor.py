"""PowerPredictor's stored-telemetry forecasts: windows from the store, summed per workload, domain errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from core.stores.base import StoreUnavailable
from core.stores.sqlite import SqliteStore
from core.telemetry import TelemetrySample
from deployments.forecast_gauges import ForecastGauges
from deployments.power import PowerPredictor
from training.power.inference import PowerForecast, PowerHistory
from training.power.stored_history import UnknownNode
from training.power.workload import WorkloadTelemetryMissing


async def echo_forecast(history: PowerHistory) -> PowerForecast:
    """A forecast that repeats the window's last power for two steps."""
    last = history.power_watts[-1]
    end = history.end_time
    return PowerForecast(model_version="power_lstm/1", step_s=60, timestamps=(end + timedelta(minutes=1),
                         end + timedelta(minutes=2)), point=(last, last), lower=(last - 1, last - 1),
                         upper=(last + 1, last + 1), confidence=(0.9, 0.8), window_coverage=1.0, padded_steps=0,
                         interval_coverage=0.8)


@pytest.fixture
def predictor(tmp_path):
    now = datetime.now(UTC)
    with SqliteStore(tmp_path / "telemetry") as store:
        store.write([TelemetrySample(timestamp=now - timedelta(minutes=m), node_id=node, source="ipmi",
                                     power_watts=watts) for node, watts in (("n1", 100.0), ("n2", 250.0))
                     for m in range(6)])
        replica = object.__new__(PowerPredictor)  # no registry, no model: only what stored forecasts use
        replica.store, replica.stale_after_s = store, 120.0
        replica.forecaster = SimpleNamespace(pipeline=SimpleNamespace(step_s=60), sequence_length=5)
        replica.forecast = echo_forecast
        replica.forecast_gauges = ForecastGauges()
        yield replica


def test_a_workload_s_nodes_are_forecast_from_their_windows_and_summed(predictor):
    stored = asyncio.run(predictor.forecast_stored(["n1", "n2"], 120, workload_id="llm"))
    assert stored.forecast.point == (350.0, 350.0) and stored.forecast.confidence == (0.9, 0.8)
    assert 0 <= stored.age_s < 60 and stored.stale is False
    predictor.stale_after_s = 0.0
    assert asyncio.run(predictor.forecast_stored(["n1"], 120)).stale is True


def test_a_named_node_without_data_is_unknown_a_workload_s_node_is_missing(predictor):
    with pytest.raises(UnknownNode, match="'ghost'"):
        asyncio.run(predictor.forecast_stored(["ghost"], 120))
    with pytest.raises(WorkloadTelemetryMissing, match=r"'ghost' \(workload 'llm'\)"):
        asyncio.run(predictor.forecast_stored(["n1", "ghost"], 120, workload_id="llm"))


def test_a_store_that_cannot_answer_says_so(predictor):
    class Down:
        def latest(self, node_id=None):
            raise StoreUnavailable("the telemetry store is not running")

    predictor.store = Down()
    with pytest.raises(StoreUnavailable):
        asyncio.run(predictor.forecast_stored(["n1"], 120))
