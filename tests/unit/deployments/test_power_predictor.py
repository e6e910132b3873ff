"""PowerPredictor: routing to the finest served resolution, stored-telemetry forecasts (windows from the store,
summed per workload), domain errors."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

import deployments.power as power_module
from app.errors import public_error
from core.forecasts import ForecastRequestError, ModelNotLoaded, PowerForecast, PowerHistory, utc_now_floor
from core.registry import ActivePointerUnreadable, ModelRegistry
from core.stores.base import StoreUnavailable
from core.stores.sqlite import SqliteStore
from core.telemetry import TelemetrySample
from deployments.forecast_gauges import ForecastGauges
from deployments.latency import LatencyRecorder
from deployments.node_calibration import NodeCalibrations
from deployments.power import (
    MAX_STORED_READS,
    STORED_READ_PAUSE_S,
    WARM_NODES_PER_REQUEST,
    PowerPredictor,
    PowerPredictorUserConfig,
    ServedPower,
    _portable,
)
from deployments.registry_follower import RETRY_FAILED_LOAD_S
from training.power.forecaster import ArtifactError
from training.power.stored_history import UnknownNode, stored_history
from training.power.workload import WorkloadTelemetryMissing


async def echo_forecast(history: PowerHistory) -> PowerForecast:
    """A forecast that repeats the window's last power for two steps."""
    last = history.power_watts[-1]
    end = history.end_time
    return PowerForecast(model_version="power_lstm/1", step_s=60, timestamps=(end + timedelta(minutes=1),
                         end + timedelta(minutes=2)), point=(last, last), lower=(last - 1, last - 1),
                         upper=(last + 1, last + 1), confidence=(0.9, 0.8), window_coverage=1.0, padded_steps=0,
                         interval_coverage=0.8)


def by_history(forecast):
    """A replica's `_forecast` (a history and the model chosen for it) answered by `forecast(history)`."""
    return lambda history, served: forecast(history)


def routed(replica: PowerPredictor, histories: list[PowerHistory]) -> list:
    """The forward passes of histories each with the model `_route` chooses for it, as `forecast` sends them."""
    return asyncio.run(replica._off_the_loop(histories, [replica._route(h.horizon_s, h.step_s) for h in histories]))


def controller_call(replica: PowerPredictor, nodes: list[str], windows: list) -> list:
    """`forecast_windows` as the scaling controller calls it, then the follow it left running, to its end."""
    async def call() -> list:
        answers = await replica.forecast_windows(nodes, windows)
        await asyncio.gather(*list(replica._following))
        return answers

    return asyncio.run(call())


class NeedsKeyword(Exception):
    """An error pickle can write but not rebuild (its keyword-only argument is not in `args`)."""

    def __init__(self, message: str, *, field: str):
        super().__init__(message)
        self.field = field


def recording(replica: PowerPredictor) -> list[PowerHistory]:
    """The histories the replica forecasts from, as they come (each answered by `echo_forecast`)."""
    seen: list[PowerHistory] = []

    async def forecast(history: PowerHistory) -> PowerForecast:
        seen.append(history)
        return await echo_forecast(history)

    replica._forecast = by_history(forecast)
    return seen


def served(model_id: str, step_s: int, horizon_steps: int, sequence_length: int = 5,
           max_gap_s: int | None = None, registered_at: datetime | None = None,
           blend_start: tuple[float, ...] | None = None) -> ServedPower:
    """A loaded model as far as routing and stored windows see it (registered now unless said otherwise: no
    stored window since, so no online calibration warmed from the store); with `blend_start`, one that blends the
    LSTM and the LightGBM online from those weights."""
    forecaster = SimpleNamespace(pipeline=SimpleNamespace(step_s=step_s, features=(), max_gap_s=max_gap_s),
                                 sequence_length=sequence_length, horizon=horizon_steps, features_only=None,
                                 blends_online=blend_start is not None,
                                 served=None if blend_start is None else SimpleNamespace(lstm_weight=blend_start))
    return ServedPower(model_id, 1, forecaster, model_id.endswith("_1h"), LatencyRecorder(model_id),
                       registered_at or datetime.now(UTC))


@pytest.fixture
def predictor(tmp_path):
    now = datetime.now(UTC)
    with SqliteStore(tmp_path / "telemetry") as store:
        store.write([TelemetrySample(timestamp=now - timedelta(minutes=m), node_id=node, source="ipmi",
                                     power_watts=watts) for node, watts in (("n1", 100.0), ("n2", 250.0))
                     for m in range(6)])
        replica = object.__new__(PowerPredictor)  # no registry, no model: only what stored forecasts use
        replica._loading = threading.Lock()
        replica._stored_reads = asyncio.Semaphore(MAX_STORED_READS)
        replica._reads_paused_until, replica._read_failures = 0.0, {}
        replica._read_failures_lock = threading.Lock()
        replica.store, replica.stale_after_s = store, 120.0
        replica.model_id, replica.model_ids = "power_lstm", ["power_lstm", "power_lstm_1h"]
        replica.unloaded = {}
        replica.served = {"power_lstm": served("power_lstm", 60, 60),
                          "power_lstm_1h": served("power_lstm_1h", 3600, 168)}
        replica._forecast = by_history(echo_forecast)
        replica.forecast_gauges = ForecastGauges()
        replica.node_calibrations, replica.settings = NodeCalibrations(), PowerPredictorUserConfig()
        replica._warming, replica._following = set(), set()
        replica._inference = ThreadPoolExecutor(max_workers=1)
        yield replica
        replica._inference.shutdown()


def test_a_workload_s_nodes_are_forecast_from_their_windows_and_summed(predictor):
    stored = asyncio.run(predictor.forecast_stored(["n1", "n2"], 120, workload_id="llm"))
    assert stored.forecast.point == (350.0, 350.0) and stored.forecast.confidence == (0.9, 0.8)
    assert 0 <= stored.age_s < 60 and stored.stale is False
    predictor.stale_after_s = 0.0
    assert asyncio.run(predictor.forecast_stored(["n1"], 120)).stale is True


def test_the_node_s_stored_power_teaches_the_blend_that_the_model_s_next_forecasts_serve(predictor, monkeypatch):
    """n1 draws 100 W; its forecasts blend an LSTM saying 130 W (served alone at first) and a LightGBM saying 100 W.
    Warmed from the store and followed, the model's blend moves to the LightGBM, and the version's later forecasts
    of nodes' own windows are made with the moved weights; a client's lists keep the calibration split's."""
    predictor.served["power_lstm"] = served("power_lstm", 60, 2, registered_at=datetime.now(UTC) - timedelta(hours=1),
                                            blend_start=(1.0, 1.0))

    marked = []

    async def blended(history: PowerHistory) -> PowerForecast:
        marked.append(history.node_window)
        answer = await echo_forecast(history)
        return answer.model_copy(update={"point": (130.0, 130.0), "blend_experts": ((130.0,) * 2, (100.0,) * 2)})

    predictor._forecast = by_history(blended)
    assert predictor.node_calibrations.lstm_weight("power_lstm/1") is None
    predictor.store.write([TelemetrySample(timestamp=datetime.now(UTC) - timedelta(minutes=m), node_id="n1",
                                           source="ipmi", power_watts=100.0) for m in range(6, 60)])
    asyncio.run(predictor.forecast_stored(["n1"], 120))  # warmed: the node's past windows replayed
    assert predictor.node_calibrations.lstm_weight("power_lstm/1").tolist() == [0.0, 0.0]
    assert len(marked) > 32 and all(marked)  # the node's own window and its replays, each marked as followed
    asyncio.run(predictor.forecast_stored(["n1"], 120, workload_type="training"))
    assert marked[-1] is False  # a forecast shaped with a workload type is not the node's own
    weights = []

    def fake(forecaster, histories, version, *, synthetic=False, lstm_weight=None, follow_blend=False):
        assert follow_blend == histories[0].node_window  # both points computed only where they teach
        weights.append(None if lstm_weight is None else lstm_weight.tolist())
        return [PowerForecast(model_version=version, step_s=60, timestamps=(), point=(), lower=(), upper=(),
                              confidence=(), window_coverage=1.0, padded_steps=0, interval_coverage=0.8)
                for _ in histories]

    monkeypatch.setattr("deployments.power.forecast_histories", fake)
    window = PowerHistory(power_watts=(1.0,), horizon_s=120, node_window=True)
    routed(predictor, [window, window.model_copy(update={"node_window": False}),
                       window.model_copy(update={"horizon_s": 86400})])
    # a node's own window: the moved weights; a client's lists: the calibration split's; the hourly model: no blend
    assert sorted(weights, key=str) == [None, None, [0.0, 0.0]]


def test_the_controller_s_windows_teach_the_blend_and_get_it_with_the_static_intervals(predictor):
    """The scaling controller reads its nodes' windows itself (PowerPredictor.forecast_windows): n1 draws 100 W, its
    LSTM says 130 W (served alone at first) and its LightGBM 100 W. Queried only by the controller, the replica
    warms n1 from the store and follows it, so the model's blend moves to the LightGBM; the controller gets each
    forecast with the static intervals (it corrects its peak bounds itself) and without the experts, and a node whose
    forecast fails is answered with its error while the others are answered."""
    predictor.served["power_lstm"] = served("power_lstm", 60, 2, registered_at=datetime.now(UTC) - timedelta(hours=1),
                                            blend_start=(1.0, 1.0))
    predictor.store.write([TelemetrySample(timestamp=datetime.now(UTC) - timedelta(minutes=m), node_id="n1",
                                           source="ipmi", power_watts=100.0) for m in range(6, 60)])
    marked = []

    async def blended(history: PowerHistory) -> PowerForecast:
        marked.append(history.node_window)
        if history.power_watts[-1] == 250.0:  # n2
            raise ForecastRequestError("features", "cannot estimate")
        answer = await echo_forecast(history)
        weight = predictor.node_calibrations.lstm_weight("power_lstm/1")
        point = 130.0 if weight is None else 100.0 + 30.0 * float(weight[0])
        return answer.model_copy(update={"point": (point, point), "blend_experts": ((130.0,) * 2, (100.0,) * 2)})

    predictor._forecast = by_history(blended)
    model = predictor.node_calibrations._model(asyncio.run(echo_forecast(PowerHistory(
        power_watts=(1.0,), horizon_s=120, end_time=datetime.now(UTC)))), 2)
    model.pooled.log_width[:] = np.log(2.0)  # a correction learnt before: the controller is not answered with it
    model.pooled.points = 40
    windows = [stored_history(predictor.store, node, step_s=60, sequence_length=5, horizon_s=120)
               for node in ("n1", "n2")]
    n1, n2 = controller_call(predictor, ["n1", "n2"], windows)
    assert isinstance(n2, ForecastRequestError) and n2.field == "features"
    assert n1.point == (130.0, 130.0) and n1.blend_experts is None  # answered before the replay taught the blend
    assert (n1.lower, n1.upper, n1.online_calibration_points) == ((99.0, 99.0), (101.0, 101.0), 0)
    assert len(marked) > 32 and all(marked)  # the windows and n1's replays, each a node's own
    assert predictor.node_calibrations.lstm_weight("power_lstm/1").tolist() == [0.0, 0.0]
    assert not predictor.node_calibrations.cold("power_lstm/1", "n1")
    assert predictor.node_calibrations.cold("power_lstm/1", "n2")  # failed: not followed
    [again] = controller_call(predictor, ["n1"], windows[:1])
    assert again.point == (100.0, 100.0) and again.upper == (101.0, 101.0)  # the moved blend, the static interval
    counts = []
    for nodes in (["n1"], ["n1", "n1"]):  # alone, and as the node of two policies
        predictor.node_calibrations, before = NodeCalibrations(), len(marked)
        controller_call(predictor, nodes, windows[:1] * len(nodes))
        counts.append(len(marked) - before)
    assert counts[1] == counts[0] + 1  # its past windows replayed once


def test_the_controller_is_answered_before_its_windows_are_followed_and_a_failed_follow_only_logs(predictor, caplog):
    """The follow (a cold node's replay from the store, then the correction) runs after the answer: a tick waits for
    the forecasts only, and an error while following is logged, never the controller's. One node per window."""
    predictor.served["power_lstm"] = served("power_lstm", 60, 2, registered_at=datetime.now(UTC) - timedelta(hours=1))
    windows = [stored_history(predictor.store, "n1", step_s=60, sequence_length=5, horizon_s=120)]

    async def answered_first() -> tuple[list, bool]:
        answers = await predictor.forecast_windows(["n1"], windows)
        pending = bool(predictor._following) and not any(task.done() for task in predictor._following)
        await asyncio.gather(*list(predictor._following))
        return answers, pending

    [answer], pending = asyncio.run(answered_first())
    assert isinstance(answer, PowerForecast) and pending
    assert not predictor.node_calibrations.cold("power_lstm/1", "n1")  # followed once the replay ended

    def broken(*args, **kwargs):
        raise RuntimeError("calibration state corrupt")

    predictor.node_calibrations.correct = broken
    [answer] = controller_call(predictor, ["n1"], windows)
    assert isinstance(answer, PowerForecast) and "windows of 1 nodes not followed" in caplog.text
    with pytest.raises(ValueError, match="2 nodes for 1 windows"):
        asyncio.run(predictor.forecast_windows(["n1", "n2"], windows))


def test_an_error_the_controller_could_not_unpickle_comes_back_as_its_text():
    plain = StoreUnavailable("store restarting")
    assert _portable(plain) is plain
    odd = _portable(NeedsKeyword("no window", field="n1"))
    assert type(odd) is RuntimeError and str(odd) == "NeedsKeyword: no window"
    assert str(_portable(asyncio.CancelledError())) == "CancelledError"


def test_a_node_s_own_forecast_is_corrected_online_and_a_workload_shaped_one_is_not(predictor):
    """The replica's online calibration of n1 (here: widened by an earlier run of misses) corrects n1's stored
    forecast, and says so; a forecast shaped with a workload type is the static calibration's."""
    first = asyncio.run(predictor.forecast_stored(["n1"], 120))
    assert first.forecast.online_calibration_points == 0 and first.forecast.upper == (101.0, 101.0)
    model = predictor.node_calibrations._models["power_lstm/1"]
    model.pooled.log_width[:] = np.log(2.0)
    model.pooled.points = 40
    corrected = asyncio.run(predictor.forecast_stored(["n1"], 120)).forecast
    assert corrected.upper == (102.0, 102.0) and corrected.lower == (98.0, 98.0)
    assert corrected.online_calibration_points == 40
    shaped = asyncio.run(predictor.forecast_stored(["n1"], 120, workload_type="training")).forecast
    assert shaped.upper == (101.0, 101.0) and shaped.online_calibration_points == 0


def test_a_replica_warms_a_node_s_calibration_from_the_store_before_its_first_answer(predictor, caplog):
    """Registered before the node's stored windows: the first answer is already corrected by the forecasts the
    model makes from them (each once: the next request replays nothing); a workload-shaped forecast warms nothing;
    a store that fails the replay leaves the node unfollowed, answers all the same, and is tried again at the node's
    next request; a request warms at most a few nodes, the others at their next."""
    predictor.served["power_lstm"] = served("power_lstm", 60, 60, registered_at=datetime.now(UTC) - timedelta(hours=1))
    seen = recording(predictor)
    asyncio.run(predictor.forecast_stored(["n1"], 120, workload_type="training"))
    assert len(seen) == 1 and predictor.node_calibrations.cold("power_lstm/1", "n2")
    first = asyncio.run(predictor.forecast_stored(["n1", "n2"], 120, workload_id="llm"))
    replayed = len(seen) - 3  # the two nodes' own windows, and the shaped one before
    assert replayed >= 2 and first.forecast.online_calibration_points > 0
    asyncio.run(predictor.forecast_stored(["n1"], 120))
    assert len(seen) == 3 + replayed + 1

    class FailingWindows:
        def __init__(self, store):
            self.latest, self.nodes, self.store = store.latest, store.nodes, store

        def window(self, node_id, start, end, step_s):
            if end - start > timedelta(minutes=5):  # the replay's read, longer than the model's window
                raise StoreUnavailable("store restarting")
            return self.store.window(node_id, start, end, step_s)

    working = predictor.store
    predictor.store = FailingWindows(working)
    predictor.node_calibrations = NodeCalibrations()
    cold = asyncio.run(predictor.forecast_stored(["n1"], 120)).forecast
    assert cold.online_calibration_points == 0 and "n1 not warmed yet: store restarting" in caplog.text
    assert predictor.node_calibrations.cold("power_lstm/1", "n1")  # answered, not followed
    predictor.store = working
    assert asyncio.run(predictor.forecast_stored(["n1"], 120)).forecast.online_calibration_points > 0

    predictor.node_calibrations = NodeCalibrations()
    many = [f"n{index}" for index in range(1, WARM_NODES_PER_REQUEST + 3)]
    working.write([TelemetrySample(timestamp=datetime.now(UTC) - timedelta(minutes=m), node_id=node, source="ipmi",
                                   power_watts=100.0) for node in many[2:] for m in range(6)])
    asyncio.run(predictor.forecast_stored(many, 120))
    assert [predictor.node_calibrations.cold("power_lstm/1", node) for node in many] == (
        [False] * WARM_NODES_PER_REQUEST + [True] * 2)
    predictor._stored_reads = asyncio.Semaphore(MAX_STORED_READS)  # its nodes' reads waited on the run before's loop
    asyncio.run(predictor.forecast_stored(many, 120))
    assert not any(predictor.node_calibrations.cold("power_lstm/1", node) for node in many)

    predictor.node_calibrations = NodeCalibrations()
    answer = predictor._forecast

    calls: list[PowerHistory] = []

    async def replays_fail(history):  # the request's own window comes first, then the replayed ones
        calls.append(history)
        if len(calls) > 1:
            raise ForecastRequestError("features", "cannot estimate")
        return await answer(history, None)

    predictor._forecast = by_history(replays_fail)
    asyncio.run(predictor.forecast_stored(["n1"], 120))
    assert len(calls) > 2 and predictor.node_calibrations.cold("power_lstm/1", "n1")  # warmed at a later request


def test_warm_up_replays_count_towards_the_pause_of_stored_reads(predictor, monkeypatch):
    """Regression: a replay's reads neither waited out a pause of stored reads nor counted towards one, so a store
    failing the replays' long reads kept taking read slots (each for its timeout) at every controller tick."""
    predictor.served["power_lstm"] = served("power_lstm", 60, 60, registered_at=datetime.now(UTC) - timedelta(hours=1))
    working, replays = predictor.store, []

    class FailingReplays:
        latest, nodes = working.latest, working.nodes

        def window(self, node_id, start, end, step_s):
            if end - start > timedelta(minutes=5):  # the replay's read, longer than the model's window
                replays.append(node_id)
                raise StoreUnavailable("store restarting")
            return working.window(node_id, start, end, step_s)

    predictor.store = FailingReplays()
    clock = [1000.0]
    monkeypatch.setattr(power_module.time, "monotonic", lambda: clock[0])
    asyncio.run(predictor.forecast_stored(["n1", "n2"], 120))  # answered; both replays fail
    assert sorted(replays) == ["n1", "n2"]
    with pytest.raises(StoreUnavailable, match="reads resume in"):
        asyncio.run(predictor.forecast_stored(["n1"], 120))
    assert asyncio.run(predictor._replay("n1", None, "power_lstm/1")) is None and len(replays) == 2  # not asked


def test_regression_the_replay_forecasts_the_models_whole_horizon_whatever_the_request_asked(predictor):
    """It asked for the warming request's horizon: a replica first asked for 1 min learnt one lead, one first asked
    for 1 h all 60, and the two answered the same 1 h request with different intervals."""
    predictor.served["power_lstm"] = served("power_lstm", 60, 60, registered_at=datetime.now(UTC) - timedelta(hours=1))
    seen = recording(predictor)
    asyncio.run(predictor.forecast_stored(["n1"], 60))
    assert seen[0].horizon_s == 60 and len(seen) > 2
    assert {history.horizon_s for history in seen[1:]} == {3600}


def test_a_workload_s_windows_end_at_one_bin_when_its_nodes_last_reported_at_different_times(predictor):
    """n3 last reported a minute and a half before n1: both windows end at n3's bin, so the sum adds the same
    minutes; the age is n3's (the older)."""
    now = datetime.now(UTC)
    predictor.store.write([TelemetrySample(timestamp=now - timedelta(seconds=90 + 60 * m), node_id="n3",
                                           source="ipmi", power_watts=50.0) for m in range(6)])
    ends: list[datetime] = []

    async def recording(history: PowerHistory) -> PowerForecast:
        ends.append(history.end_time)
        return await echo_forecast(history)

    predictor._forecast = by_history(recording)
    stored = asyncio.run(predictor.forecast_stored(["n1", "n3"], 120, workload_id="llm"))
    assert len(set(ends[-2:])) == 1 and stored.forecast.timestamps[0] == ends[-1] + timedelta(minutes=1)
    assert 90 <= stored.age_s < 100 and stored.forecast.point == (150.0, 150.0)


def test_a_workload_s_windows_end_at_one_bin_when_a_node_s_newest_reading_lies_before_its_last_bin(predictor):
    """Regression: the windows were re-read up to the node with the oldest newest reading. Where that reading lay a
    bin before its window's last (whose power combined to nothing), the others were cut one bin earlier than it,
    and the sum added minutes a step apart."""
    now = datetime.now(UTC)
    predictor.store.write([TelemetrySample(timestamp=now - timedelta(seconds=90 + 60 * m), node_id="n3",
                                           source="ipmi", power_watts=50.0) for m in range(6)])
    read = predictor._stored_history

    def last_bin_empty(served, node_id, *args):
        stored = read(served, node_id, *args)
        if node_id != "n3":
            return stored
        return dataclasses.replace(stored, newest=stored.history.end_time - timedelta(minutes=1))

    predictor._stored_history = last_bin_empty
    ends: list[datetime] = []

    async def recording(history: PowerHistory) -> PowerForecast:
        ends.append(history.end_time)
        return await echo_forecast(history)

    predictor._forecast = by_history(recording)
    asyncio.run(predictor.forecast_stored(["n1", "n3"], 120, workload_id="llm"))
    assert len(set(ends[-2:])) == 1 and ends[-1] < utc_now_floor(60)  # both at n3's last bin, before n1's


def test_a_forecast_made_is_answered_when_its_online_correction_fails(predictor, caplog):
    """Regression: an error of the node's online calibration turned a forecast already made into a 500."""
    async def broken(*args):
        raise FloatingPointError("a correction that could not be computed")

    predictor._follow_nodes = broken
    stored = asyncio.run(predictor.forecast_stored(["n1"], 120))
    assert stored.forecast.point == (100.0, 100.0) and "not corrected online" in caplog.text


def test_a_stored_window_holds_a_stopped_feature_as_long_as_the_model_was_trained_to(predictor):
    """Regression: the stored window held a feature for the default 5 steps whatever `max_gap` the model had."""
    now = datetime.now(UTC)
    predictor.store.write([TelemetrySample(timestamp=now - timedelta(minutes=m), node_id="n3", source="ipmi",
                                           power_watts=300.0) for m in range(30)])
    predictor.store.write([TelemetrySample(timestamp=now - timedelta(minutes=m), node_id="n3", source="nvml",
                                           device_id="GPU-1", utilization=90.0) for m in range(20, 30)])
    predictor.served["power_lstm"] = served("power_lstm", 60, 60, sequence_length=40, max_gap_s=600)
    windows = recording(predictor)
    asyncio.run(predictor.forecast_stored(["n3"], 120))
    utilization = windows[0].numeric["gpu_utilization"]
    held = [value for value in utilization if value == 90.0]
    assert len(held) == 20  # 10 read, 10 held (max_gap 10 min at 1-min steps)
    assert all(value != value for value in utilization[len(held):])  # then missing


def test_requests_without_lists_read_at_most_a_few_windows_at_once(predictor, monkeypatch):
    """Every request without lists read the store at once: an anonymous flood took all of the store actor's calls,
    which the collectors' writes and the scaling controller's reads share."""
    reading, most, counting = [0], [0], threading.Lock()
    read = predictor._stored_history

    def slow(*args):
        with counting:
            reading[0] += 1
            most[0] = max(most[0], reading[0])
        try:
            threading.Event().wait(0.05)
            return read(*args)
        finally:
            with counting:
                reading[0] -= 1

    monkeypatch.setattr(predictor, "_stored_history", slow)

    async def flood():
        return await asyncio.gather(*(predictor.forecast_stored(["n1"], 120) for _ in range(12)))

    assert len(asyncio.run(flood())) == 12 and most[0] == MAX_STORED_READS


def test_a_named_node_without_data_is_unknown_a_workload_s_node_is_missing(predictor):
    with pytest.raises(UnknownNode, match="'ghost'"):
        asyncio.run(predictor.forecast_stored(["ghost"], 120))
    with pytest.raises(WorkloadTelemetryMissing, match=r"'ghost' \(workload 'llm'\)"):
        asyncio.run(predictor.forecast_stored(["n1", "ghost"], 120, workload_id="llm"))


def test_a_workload_s_node_windows_are_read_at_once_and_the_first_node_s_error_is_answered(predictor):
    """Regression: a workload's windows were read one after another, so its answer took the sum of its reads.
    Each read here waits at a barrier until all three are in (a read that never comes breaks it)."""
    read, arrived = predictor.store, threading.Barrier(3, timeout=30)

    class Together:
        def __getattr__(self, name):
            return getattr(read, name)

        def latest(self, node_id=None):
            arrived.wait()
            if node_id == "down":
                raise StoreUnavailable("the telemetry store did not answer")
            return read.latest(node_id)

    predictor.store = Together()
    predictor._stored_reads = asyncio.Semaphore(3)
    stored = asyncio.run(predictor.forecast_stored(["n1", "n2", "n1"], 120, workload_id="llm"))
    assert stored.forecast.point == (450.0, 450.0)
    arrived.reset()
    with pytest.raises(WorkloadTelemetryMissing, match="'ghost'"):  # the first in order, not the first to fail
        asyncio.run(predictor.forecast_stored(["n1", "ghost", "down"], 120, workload_id="llm"))


def test_a_store_that_cannot_answer_says_so_and_is_not_asked_again_for_a_while(predictor, monkeypatch):
    """Regression: every read asked a store that hangs, and held a read slot for its whole timeout. Reads of two
    nodes failing pause the others; one node failing again and again does not, and a read that succeeds ends it."""
    asked = []
    down = {"d1", "d2"}
    read = predictor.store

    class Flaky:
        def __getattr__(self, name):
            return getattr(read, name)

        def latest(self, node_id=None):
            asked.append(node_id)
            if node_id in down:
                raise StoreUnavailable("the telemetry store is not running")
            return read.latest(node_id)

    predictor.store = Flaky()
    clock = [1000.0]
    monkeypatch.setattr(power_module.time, "monotonic", lambda: clock[0])

    def fails(node: str) -> bool:
        try:
            asyncio.run(predictor.forecast_stored([node], 120))
        except StoreUnavailable:
            return True
        return False

    assert fails("d1") and fails("d1") and not fails("n1")  # one node's own failures pause nobody
    assert fails("d2") and fails("d1")  # two nodes within the pause: paused
    assert fails("n1") and asked[-1] == "d1"  # n1 fails at once, unasked
    clock[0] += STORED_READ_PAUSE_S
    assert not fails("n1") and asked[-1] == "n1"
    assert fails("d1") and not fails("n1")  # the pause ended with n1's read: d1 alone pauses nothing


def test_a_horizon_goes_to_the_finest_served_model_that_covers_it(predictor):
    assert predictor._route(1800).model_id == "power_lstm" and predictor._route(3600).model_id == "power_lstm"
    assert predictor._route(86400).model_id == "power_lstm_1h"
    assert predictor.describe("power_lstm_1h").step_seconds == 3600
    assert predictor.describe().model_version == "power_lstm/1"  # the scaling controller's model


def test_a_stored_day_ahead_forecast_reads_the_hourly_window(predictor):
    seen = recording(predictor)
    asyncio.run(predictor.forecast_stored(["n1"], 86400))
    assert seen[0].step_s == 3600 and seen[0].horizon_s == 86400  # answered by the hourly model only


def test_a_batch_runs_one_pass_per_model_and_says_which_answered(predictor, monkeypatch):
    passes = []

    def fake(forecaster, histories, version, *, synthetic=False, lstm_weight=None, follow_blend=False):
        passes.append((version, [h.horizon_s for h in histories], synthetic))
        return [PowerForecast(model_version=version, step_s=forecaster.pipeline.step_s, timestamps=(), point=(),
                              lower=(), upper=(), confidence=(), window_coverage=1.0, padded_steps=0,
                              interval_coverage=0.8, trained_on_synthetic_data=synthetic) for _ in histories]

    monkeypatch.setattr("deployments.power.forecast_histories", fake)
    histories = [PowerHistory(power_watts=(1.0,), horizon_s=h) for h in (1800, 86400, 3600)]
    answers = routed(predictor, histories)
    assert [a.model_version for a in answers] == ["power_lstm/1", "power_lstm_1h/1", "power_lstm/1"]
    assert passes == [("power_lstm/1", [1800, 3600], False), ("power_lstm_1h/1", [86400], True)]
    assert predictor.served["power_lstm_1h"].latency.requests == 1


@pytest.mark.parametrize("batching", [True, False])
def test_the_event_loop_goes_on_answering_during_a_forward_pass(predictor, monkeypatch, batching):
    """Regression: the forward pass (and a node's 128 warm-up replays) ran on the replica's event loop, so every other
    request, the health check and the registry follower waited for it."""
    def slow(forecaster, histories, version, *, synthetic=False, lstm_weight=None, follow_blend=False):
        time.sleep(0.6)  # a forward pass holding its thread, as torch does
        return [PowerForecast(model_version=version, step_s=60, timestamps=(), point=(), lower=(), upper=(),
                              confidence=(), window_coverage=1.0, padded_steps=0, interval_coverage=0.8)
                for _ in histories]

    monkeypatch.setattr("deployments.power.forecast_histories", slow)

    async def batch_of_one(history: PowerHistory, model: ServedPower):  # Serve's batching, which needs a replica
        return (await PowerPredictor._batched.__wrapped__(predictor, [history], [model]))[0]

    monkeypatch.setattr(predictor, "_batched", batch_of_one)
    predictor.settings = PowerPredictorUserConfig(batching=batching)
    history = PowerHistory(power_watts=(1.0,), horizon_s=1800)

    async def run() -> list[float]:
        beats: list[float] = []

        async def heartbeat() -> None:
            while True:
                beats.append(time.monotonic())
                await asyncio.sleep(0.02)

        beating = asyncio.create_task(heartbeat())
        await asyncio.sleep(0.05)
        await PowerPredictor._forecast(predictor, history, predictor.served["power_lstm"])
        await asyncio.sleep(0.05)  # a beat after the pass: a loop held by it shows as one long gap
        beating.cancel()
        return beats

    beats = asyncio.run(run())
    assert max(later - earlier for earlier, later in itertools.pairwise(beats)) < 0.3, beats


def test_a_warm_up_replay_is_forecast_but_left_out_of_the_served_latency(predictor, monkeypatch):
    """Regression: the 128 past windows a replica replays to warm a node counted as requests in its latency figures
    (`describe()`, the inference histogram), so a new replica's figures were mostly its own warm-up."""
    def fake(forecaster, histories, version, *, synthetic=False, lstm_weight=None, follow_blend=False):
        return [PowerForecast(model_version=version, step_s=60, timestamps=(), point=(), lower=(), upper=(),
                              confidence=(), window_coverage=1.0, padded_steps=0, interval_coverage=0.8)
                for _ in histories]

    monkeypatch.setattr("deployments.power.forecast_histories", fake)
    window = PowerHistory(power_watts=(1.0,), horizon_s=1800)
    replays = [power_module._node_window(window, replay=True)] * 5
    answers = routed(predictor, [power_module._node_window(window), *replays, window])
    assert len(answers) == 7 and all(isinstance(answer, PowerForecast) for answer in answers)
    assert predictor.served["power_lstm"].latency.requests == 2


def test_a_version_that_cannot_load_holds_back_only_its_own_model(predictor, monkeypatch):
    """The default model's new version is broken; the hourly model's new version must still go into service."""
    active = {"power_lstm": 2, "power_lstm_1h": 2}
    predictor.model_ids = ["power_lstm", "power_lstm_1h"]
    predictor.settings = SimpleNamespace(model_version=None)
    predictor.registry = SimpleNamespace(served_version=active.get, active_version=active.get)
    loaded: list[tuple[str, int]] = []
    tried: list[tuple[str, int]] = []

    def load(model_id: str, version: int) -> None:
        tried.append((model_id, version))
        if model_id == "power_lstm":
            raise OSError("weights.pt: truncated")
        loaded.append((model_id, version))

    monkeypatch.setattr(predictor, "_load_model", load)
    predictor._refresh()
    assert loaded == [("power_lstm_1h", 2)]
    assert predictor.served["power_lstm"].version == 1  # still serving the version it had
    predictor._refresh()  # the next poll: not tried again (a traceback every poll), until a while has passed
    assert tried.count(("power_lstm", 2)) == 1
    predictor._failed_loads["power_lstm"] = (2, 0.0)  # as if the retry time had come
    predictor._refresh()
    assert tried.count(("power_lstm", 2)) == 2
    active["power_lstm"] = 3  # another version: tried at once
    predictor._refresh()
    assert ("power_lstm", 3) in tried


def test_a_resolution_is_served_only_once_activated_the_default_model_also_without_a_pointer(predictor, monkeypatch):
    """The default model follows the served version (the latest when there is no ACTIVE pointer), as a new replica
    and GET /api/v1/models take it; another resolution only its activated version (README: one never activated is
    listed as not served)."""
    predictor.model_ids = ["power_lstm", "power_lstm_1h"]
    predictor.settings = SimpleNamespace(model_version=None)
    predictor.registry = SimpleNamespace(served_version={"power_lstm": 2, "power_lstm_1h": 1}.get,
                                         active_version={}.get)  # no pointer for either
    loaded: list[tuple[str, int]] = []
    monkeypatch.setattr(predictor, "_load_model", lambda model_id, version: loaded.append((model_id, version)))
    predictor._refresh()
    assert loaded == [("power_lstm", 2)]


def test_a_horizon_no_served_model_answers_names_the_configured_models_not_served(predictor):
    """An unloaded resolution was invisible: the 422 said to train a longer horizon, which the operator had."""
    predictor.model_ids = ["power_lstm", "power_lstm_1h", "power_lstm_1d"]
    with pytest.raises(ForecastRequestError) as refused:
        predictor._route(30 * 86400)
    assert refused.value.field == "prediction_horizon"
    assert refused.value.message.endswith("configured but not served here: power_lstm_1d (no version activated yet, "
                                          "or its version could not be loaded)")
    predictor.model_ids = ["power_lstm", "power_lstm_1h"]
    with pytest.raises(ForecastRequestError) as refused:
        predictor._route(30 * 86400)
    assert "not served here" not in refused.value.message


def test_a_horizon_only_a_configured_model_not_loaded_answers_is_unavailable_not_unanswerable(predictor):
    """The model that would answer is configured and has an activated version this replica could not load (yet):
    a 503 to retry, not a 422 telling the client its request cannot be answered. What that version answers is read
    when its load fails, in the follower's thread, never by a request."""
    predictor.model_ids = ["power_lstm", "power_lstm_1h", "power_lstm_1d"]
    metadata = SimpleNamespace(feature_spec={"step_s": 86400, "horizon_steps": 30})
    predictor.registry = SimpleNamespace(get=lambda model_id, version: (None, metadata))
    predictor._load_failed("power_lstm_1d", 4)
    predictor.registry = None  # no registry read from here on
    with pytest.raises(ModelNotLoaded) as unavailable:
        predictor._route(30 * 86400)
    assert unavailable.value.model_ids == ("power_lstm_1d",)
    assert public_error(unavailable.value).status == 503
    with pytest.raises(ForecastRequestError, match="not served here: power_lstm_1d"):  # beyond it too
        predictor._route(31 * 86400)
    predictor._load_failed("power_lstm_1d", None)  # a version loaded since (or none failed): forgotten
    with pytest.raises(ForecastRequestError):
        predictor._route(30 * 86400)


def test_a_resolution_being_loaded_for_the_first_time_is_unavailable_not_unanswerable(predictor, monkeypatch):
    """Regression: while a newly activated resolution's first version loaded, a request it would answer was told
    "configured but not served" (a 422, which clients take as final)."""
    predictor.model_ids = ["power_lstm", "power_lstm_1h", "power_lstm_1d"]
    predictor.settings = SimpleNamespace(model_version=None)
    metadata = SimpleNamespace(feature_spec={"step_s": 86400, "horizon_steps": 30})
    predictor.registry = SimpleNamespace(served_version={"power_lstm": 1}.get, get=lambda model_id, version: (
        None, metadata), active_version={"power_lstm_1h": 1, "power_lstm_1d": 1}.get)
    during = []

    def load(model_id, version):
        with pytest.raises(ModelNotLoaded):
            predictor._route(30 * 86400)
        during.append(model_id)
        predictor.served[model_id] = served(model_id, 86400, 30)

    monkeypatch.setattr(predictor, "_load_model", load)
    predictor._refresh()
    assert during == ["power_lstm_1d"] and predictor.unloaded == {}
    assert predictor._route(30 * 86400).model_id == "power_lstm_1d"


def test_a_history_the_model_cannot_take_fails_alone_not_the_requests_batched_with_it(predictor, monkeypatch):
    def fake(forecaster, histories, version, *, synthetic=False, lstm_weight=None, follow_blend=False):
        if any(h.power_watts == (-1.0,) for h in histories):
            raise ValueError("the model cannot take this window")
        return [PowerForecast(model_version=version, step_s=60, timestamps=(), point=(), lower=(), upper=(),
                              confidence=(), window_coverage=1.0, padded_steps=0, interval_coverage=0.8)
                for _ in histories]

    monkeypatch.setattr("deployments.power.forecast_histories", fake)
    histories = [PowerHistory(power_watts=(watts,), horizon_s=1800) for watts in (1.0, -1.0, 2.0)]
    answers = routed(predictor, histories)
    assert isinstance(answers[0], PowerForecast) and isinstance(answers[2], PowerForecast)
    assert isinstance(answers[1], ValueError)
    predictor.settings = SimpleNamespace(batching=False)
    predictor._forecast = PowerPredictor._forecast.__get__(predictor)
    with pytest.raises(ValueError, match="cannot take"):
        asyncio.run(PowerPredictor.forecast(predictor, histories[1]))


def test_a_workload_s_nodes_are_forecast_by_one_version_across_a_reload(predictor, monkeypatch):
    """Regression: a reload between a workload's nodes' forecasts (they go through separate batches) answered some
    nodes with the old version and the others with the new, summed and labelled with the first one's version."""
    passes = []

    def fake(forecaster, histories, version, *, synthetic=False, lstm_weight=None, follow_blend=False):
        passes.append(version)
        predictor.served["power_lstm"] = dataclasses.replace(predictor.served["power_lstm"], version=2)  # reloaded
        return [PowerForecast(model_version=version, step_s=60, timestamps=(h.end_time + timedelta(minutes=1),),
                              point=(h.power_watts[-1],), lower=(h.power_watts[-1],), upper=(h.power_watts[-1],),
                              confidence=(0.9,), window_coverage=1.0, padded_steps=0, interval_coverage=0.8)
                for h in histories]

    monkeypatch.setattr("deployments.power.forecast_histories", fake)
    predictor.settings = SimpleNamespace(batching=False)  # one pass per node: the reload comes after the first
    predictor._forecast = PowerPredictor._forecast.__get__(predictor)
    predictor._follow_nodes = lambda nodes, stored, forecasts: asyncio.sleep(0, forecasts)
    stored = asyncio.run(predictor.forecast_stored(["n1", "n2"], 60, workload_id="llm"))
    assert passes == ["power_lstm/1", "power_lstm/1"] and stored.forecast.model_version == "power_lstm/1"
    assert stored.forecast.point == (350.0,)

def test_a_pinned_replica_marks_its_version_so_that_pruning_keeps_it(predictor, tmp_path, monkeypatch):
    """Regression: pruning deleted the version a replica was pinned to (`model_version`); the next replica start
    failed."""
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "w.bin").write_bytes(b"0")
    registry = ModelRegistry(tmp_path / "models")
    for _ in range(3):
        registry.publish("power_lstm", weights, model_type="lstm")
    predictor.registry, predictor._pinned_at = registry, None
    predictor.settings = SimpleNamespace(model_version=1)
    predictor._renew_pin(1)
    assert registry.pinned_versions("power_lstm") == {1}
    assert registry.prune("power_lstm", keep=1) == []  # 1 pinned, 2 served before 3, 3 served
    renewals = []
    monkeypatch.setattr(registry, "pin", lambda *args: renewals.append(args))
    predictor._renew_pin(1)
    assert renewals == []  # renewed at most hourly


def test_a_pin_that_cannot_be_marked_is_tried_again_after_a_while_not_at_every_poll(predictor, monkeypatch):
    """Regression: a failed mark (a read-only registry, a guard held elsewhere for 30 s) was tried again, and
    warned about, at every registry poll, holding the replica's loading lock each time."""
    tries = []

    def refused(model_id: str, version: int) -> None:
        tries.append(version)
        raise OSError(30, "Read-only file system")

    predictor.registry, predictor._pinned_at = SimpleNamespace(pin=refused), None
    clock = [1000.0]
    monkeypatch.setattr("deployments.power.time.monotonic", lambda: clock[0])
    predictor._renew_pin(1)
    predictor._renew_pin(1)
    assert tries == [1]
    clock[0] += RETRY_FAILED_LOAD_S
    predictor._renew_pin(1)
    assert tries == [1, 1]


def test_a_replica_pinned_to_a_version_marks_it_before_loading_it(predictor, monkeypatch):
    """Pruning between the load and the mark could delete the version a replica was about to load."""
    calls = []
    predictor.registry = SimpleNamespace(pin=lambda model_id, version: calls.append(("pin", version)))
    predictor._pinned_at, predictor._loading = None, threading.Lock()
    predictor._batched = SimpleNamespace(set_max_batch_size=lambda size: None, set_batch_wait_timeout_s=lambda s: None)
    monkeypatch.setattr(predictor, "_load", lambda version: calls.append(("load", version)))
    asyncio.run(predictor.reconfigure({"model_version": 4}))
    assert calls == [("pin", 4), ("load", 4)] and predictor.settings.model_version == 4


def test_only_a_node_s_own_forecast_is_published_as_its_gauge(predictor):
    """Regression: any caller's request with another workload_type set the node's published forecast gauge."""
    published = []
    predictor.forecast_gauges = SimpleNamespace(publish=lambda node, forecast: published.append(node),
                                                withdraw=lambda node, version: published.append(f"-{node}"))
    asyncio.run(predictor.forecast_stored(["n1"], 120, workload_type="idle"))
    assert published == []
    asyncio.run(predictor.forecast_stored(["n1"], 120))
    assert published == ["n1"]
    predictor.stale_after_s = 0.0  # n1's newest reading is older than that: its forecast is no current one
    asyncio.run(predictor.forecast_stored(["n1"], 120))
    assert published == ["n1", "-n1"]  # regression: its last forecast stayed on its gauges for good


def registered(tmp_path, versions: int) -> ModelRegistry:
    """A registry with `versions` versions of power_lstm, each activated in turn (so each was served)."""
    weights = tmp_path / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    (weights / "w.bin").write_bytes(b"0")
    registry = ModelRegistry(tmp_path / "models")
    for _ in range(versions):
        registry.activate("power_lstm", registry.publish("power_lstm", weights, model_type="lstm").version)
    return registry


def bare_replica(registry: ModelRegistry, loadable: set[int]) -> PowerPredictor:
    """A replica whose model loads are faked: versions in `loadable` load, others raise as a torch upgrade would."""
    replica = object.__new__(PowerPredictor)
    replica.unloaded = {}
    replica.registry, replica.model_id, replica.model_ids = registry, "power_lstm", ["power_lstm"]
    replica.served, replica._pinned_at, replica._loading = {}, None, threading.Lock()
    replica.settings, replica.node_calibrations = PowerPredictorUserConfig(), NodeCalibrations()
    replica.forecast_gauges = ForecastGauges()
    replica._batched = SimpleNamespace(set_max_batch_size=lambda size: None, set_batch_wait_timeout_s=lambda s: None)

    def load(model_id, version):
        version = version or registry.active_version(model_id)
        if version not in loadable:
            raise ArtifactError(f"version {version}: not a loadable power model")
        replica.served[model_id] = dataclasses.replace(served(model_id, 60, 60), version=version)

    replica._load_model = load
    return replica


def test_an_active_version_that_cannot_load_falls_back_to_the_one_served_before(tmp_path):
    """Regression: an active version this image could not read failed every new replica (the controller's
    scale-outs included) while a version served before would have loaded."""
    replica = bare_replica(registered(tmp_path, 3), loadable={1, 2})
    assert replica._load_default() == "" and replica.version == 2
    loadable: set[int] = set()
    nothing = bare_replica(registered(tmp_path / "other", 2), loadable)
    nothing._unloadable = nothing._load_default()
    assert "no version of power_lstm could be loaded" in nothing._unloadable and nothing.version is None
    with pytest.raises(RuntimeError, match="no model loaded: no version"):
        nothing.check_health()  # unserved, and its health check says why
    # Serve calls reconfigure before the first health check: a pinned version that loads brings it up
    loadable.add(1)
    asyncio.run(nothing.reconfigure({"model_version": 1}))  # a pin brings it into service
    nothing.check_health()
    assert nothing.version == 1


def test_another_resolution_whose_active_version_cannot_load_serves_the_one_before(tmp_path):
    """Only the default model fell back: a resolution whose active version this image could not read was left
    unserved on every new replica while older replicas served it."""
    registry = registered(tmp_path, 1)
    weights = tmp_path / "weights"
    for _ in range(3):
        registry.activate("power_lstm_1h", registry.publish("power_lstm_1h", weights, model_type="lstm").version)
    replica = bare_replica(registry, loadable={1})
    replica.model_ids = ["power_lstm", "power_lstm_1h"]
    replica._load_default()
    loads = []

    def load(model_id, version):
        loads.append((model_id, version))
        if model_id == "power_lstm_1h" and version != 1:
            raise ArtifactError(f"version {version}: not a loadable power model")
        replica.served[model_id] = dataclasses.replace(served(model_id, 3600, 168), version=version)

    replica._load_model = load
    replica._refresh()
    assert replica.served["power_lstm_1h"].version == 1  # version 2, served before 3, does not load either
    assert loads == [("power_lstm_1h", 3), ("power_lstm_1h", 2), ("power_lstm_1h", 1)]


def test_a_resolution_whose_pointer_cannot_be_read_holds_back_only_itself(tmp_path, monkeypatch, caplog):
    """Regression: the first resolution whose ACTIVE pointer could not be read ended the replica's follow of every
    resolution after it, for as long as it stayed unreadable."""
    registry = registered(tmp_path, 1)
    replica = bare_replica(registry, loadable={1, 2})
    replica.model_ids = ["power_lstm_1h", "power_lstm"]
    replica._load_default()
    registry.activate("power_lstm", registry.publish("power_lstm", tmp_path / "weights", model_type="lstm").version)
    active = registry.active_version

    def unreadable(model_id):
        if model_id == "power_lstm_1h":
            raise ActivePointerUnreadable("the ACTIVE pointer of power_lstm_1h is damaged")
        return active(model_id)

    monkeypatch.setattr(registry, "active_version", unreadable)
    replica._refresh()
    assert replica.version == 2
    replica._refresh()
    assert caplog.text.count("cannot follow power_lstm_1h") == 1  # at every poll, but logged once in a while


def test_a_history_that_cannot_be_read_leaves_a_replica_unserved_with_the_reason_not_down(tmp_path, monkeypatch):
    """Regression: after the active version failed to load, an unreadable history of versions escaped the
    constructor (for the cost model, which the ingress builds in process, the whole API)."""
    registry = registered(tmp_path, 2)
    replica = bare_replica(registry, loadable=set())

    def unreadable(model_id):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(registry, "former_versions", unreadable)
    assert "no version of power_lstm could be loaded" in replica._load_default()


def test_a_pin_that_cannot_load_changes_nothing(tmp_path):
    replica = bare_replica(registered(tmp_path, 3), loadable={2, 3})
    replica._load_default()
    assert not replica.describe().pinned  # the active version, followed
    with pytest.raises(ArtifactError):
        asyncio.run(replica.reconfigure({"model_version": 1}))
    assert replica.version == 3 and replica.settings.model_version is None
    asyncio.run(replica.reconfigure({"model_version": 2}))
    replica._refresh()  # the follower keeps off a pinned model
    assert replica.version == 2 and replica.settings.model_version == 2
    described = replica.describe("power_lstm")  # the API's list and metrics show the pinned version as served
    assert (described.model_version, described.pinned) == ("power_lstm/2", True)


class SlowStore:
    """A store whose reads time out (the RemoteStore's 2 s limit), counting them."""

    def __init__(self) -> None:
        self.reads = 0

    def window(self, *args):
        self.reads += 1
        raise StoreUnavailable("the telemetry store did not answer: GetTimeoutError")


def test_a_short_list_is_completed_from_the_store_and_a_slow_store_is_left_alone_a_while(predictor):
    predictor.fill_store, predictor._fill_paused_until = predictor.store, 0.0
    predictor._fills = threading.BoundedSemaphore(2)
    short = PowerHistory(power_watts=(100.0, 101.0), horizon_s=120, end_time=utc_now_floor(60))
    _, from_store = asyncio.run(predictor.forecast_filled(short, "n1"))
    assert from_store == 3  # the window is 5 steps: 3 stored before the request's 2
    slow = predictor.fill_store = SlowStore()
    forecast, from_store = asyncio.run(predictor.forecast_filled(short, "n1"))
    assert from_store == 0 and forecast.point  # answered from the request's own lists
    asyncio.run(predictor.forecast_filled(short, "n1"))
    assert slow.reads == 1  # paused: a timed-out read still runs in the store actor, none is added to it
    predictor._fill_paused_until = 0.0  # the pause over
    asyncio.run(predictor.forecast_filled(short, "n1"))
    assert slow.reads == 2


def test_a_list_as_long_as_the_window_reads_nothing_from_the_store(predictor, monkeypatch):
    """The hot path: a request that brings a whole window costs no store read, nor a thread hop to ask."""
    predictor._fill_paused_until, predictor._fills = 0.0, threading.BoundedSemaphore(2)
    slow = predictor.fill_store = SlowStore()
    hops: list = []

    async def to_thread(fn, *args, **kwargs):
        hops.append(fn)
        return fn(*args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    whole = PowerHistory(power_watts=(100.0,) * 5, horizon_s=120, end_time=utc_now_floor(60))
    forecast, from_store = asyncio.run(predictor.forecast_filled(whole, "n1"))
    assert (from_store, slow.reads, predictor._fill_paused_until, hops) == (0, 0, 0.0, []) and forecast.point


def test_describe_s_latency_is_the_served_version_s_alone(predictor, monkeypatch):
    """Regression: after a new version loaded, describe() named it with percentiles and counts that still held the
    former version's calls. Reloading the version already served keeps them."""
    monkeypatch.setattr(power_module.PowerForecaster, "load", lambda folder, device: predictor.served[
        "power_lstm"].forecaster)
    version = {"value": 1}
    predictor.registry = SimpleNamespace(get=lambda model_id, wanted: (None, SimpleNamespace(
        version=version["value"], created_at=datetime.now(UTC), training={}, trained_on_synthetic_data=False)))
    predictor.device = "cpu"
    predictor.served["power_lstm"].latency.record(900.0, count=4)
    predictor._load_model("power_lstm", None)  # the same version again
    assert predictor.served["power_lstm"].latency.requests == 4
    version["value"] = 2
    predictor._load_model("power_lstm", None)
    assert predictor.served["power_lstm"].version == 2
    assert predictor.served["power_lstm"].latency.percentiles() == {"calls": 0, "requests": 0}


def test_a_replica_runs_on_a_gpu_only_where_ray_gave_it_one(monkeypatch):
    """Regression (review): at num_gpus 0 Ray leaves CUDA_VISIBLE_DEVICES alone, and a replica took cuda:0 of any
    node with a GPU, stacking CUDA contexts on a GPU nothing had reserved for them."""
    import ray
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert power_module._default_device() == "cpu"
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    assert power_module._default_device() == "cuda"
