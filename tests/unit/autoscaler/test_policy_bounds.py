"""The controller's online correction of each policy's peak bound (autoscaler/policy_bounds.py), without a store."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta

import pandas as pd

from autoscaler.actuators import Actuators
from autoscaler.controller import ScalingController
from autoscaler.forecast_view import ForecastView
from autoscaler.peak_tracking import PeakTracker
from autoscaler.policy_bounds import EXPIRE_S, PolicyBounds, SavedBound
from autoscaler.schema import PowerObservation
from autoscaler.state import ControllerState
from core.forecasts import PowerForecast
from core.stores.base import NodeLatest
from tests.factories import make_policy
from tests.unit.autoscaler.doubles import FixedForecaster, RecordingActuator, policy_data, write_power

START = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
STEP_S = 60
LEADS = 3
NODES = ("n1", "n2")
POLICY = make_policy(name="web", aggregation="max", predictive_scaling={"enabled": True, "lookahead_minutes": 3,
                                                                        "confidence_threshold": 0.8})


def at(minute: float) -> datetime:
    return START + timedelta(minutes=minute)


class BinStore:
    """Per node, the mean power of each minute's bin (a store's `window` at a 60 s step); `fail` makes reads raise."""

    def __init__(self) -> None:
        self.bins: dict[str, dict[datetime, float]] = {node: {} for node in NODES}
        self.fail = False

    def put(self, minute: int, watts: float, nodes: tuple[str, ...] = NODES) -> None:
        for node in nodes:
            self.bins[node][at(minute)] = watts

    def window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        if self.fail:
            raise ConnectionError("store actor unavailable")
        rows = sorted((t, w) for t, w in self.bins[node_id].items() if start <= t < end)
        return pd.DataFrame({"timestamp": pd.to_datetime([t for t, _ in rows], utc=True),
                             "power_watts": [w for _, w in rows]})

    def latest(self, minute: int) -> dict[str, NodeLatest]:
        """Every node's newest reading at the start of bin `minute` (bins before it complete)."""
        return {node: NodeLatest(node_id=node, timestamp=at(minute), power_watts=0.0, age_s=0.0) for node in NODES}


def view(bound: float = 600.0, expected: float = 500.0) -> ForecastView:
    return ForecastView(upper_quantile_per_node_watts=[bound, bound - 50.0], expected_per_node_watts=[expected] * 2,
                        calibrated=True, peak_bound=True, window_s=LEADS * STEP_S)


def forecasts(minute: int) -> list[PowerForecast]:
    """The nodes' forecasts made at the start of bin `minute`: leads are the bins minute .. minute + LEADS - 1."""
    times = tuple(at(minute + k) for k in range(LEADS))
    return [PowerForecast(model_version="power_lstm/1", step_s=STEP_S, timestamps=times, point=(500.0,) * LEADS,
                          lower=(400.0,) * LEADS, upper=(600.0,) * LEADS, confidence=(0.9,) * LEADS,
                          window_coverage=1.0, padded_steps=0, interval_coverage=0.8) for _ in NODES]


def seen(replicas: int = 2) -> PowerObservation:
    return PowerObservation(measured_per_node_watts=[500.0, 500.0], age_s=5.0, replicas=replicas)


def run(bounds: PolicyBounds, store: BinStore, watts: list[float], *, replicas: list[int] | None = None,
        policy=POLICY, discovered: bool = False) -> list[float]:
    """A tick at the start of every minute: bin minute - 1 arrives at `watts[minute - 1]`, the replica count is
    read, windows are scored, then the view is corrected; returns the bounds the ticks decided on."""
    used = []
    for minute in range(len(watts) + 1):
        if minute:
            store.put(minute - 1, watts[minute - 1])
        now = at(minute)
        count = replicas[minute] if replicas else 2
        bounds.observe(policy, seen(count), now)
        bounds.score(store, store.latest(minute), now)
        corrected = bounds.correct(policy, view(), NODES, count, forecasts(minute), discovered=discovered)
        used.extend(corrected.upper_quantile_per_node_watts[:1])
    return used


def test_windows_under_their_bound_narrow_it_and_exceeded_ones_widen_it():
    calm, wild = PolicyBounds(), PolicyBounds()
    calm_bounds = run(calm, BinStore(), [500.0] * 40)
    wild_bounds = run(wild, BinStore(), [700.0] * 40)  # every bin at 700 W, above the 600 W bound
    assert calm_bounds[0] == wild_bounds[0] == 600.0  # uncorrected until a window has been learned from
    assert calm_bounds[-1] < 600.0 and wild_bounds[-1] >= 690.0  # widened until it (nearly) holds the peaks
    assert calm.tracker("web").misses == 0 and calm.tracker("web").windows == 38  # windows ending by minute 40
    assert wild.tracker("web").windows == 38 and wild.tracker("web").misses > 20


def test_a_window_is_scored_on_the_bins_the_bound_was_for_once_every_node_measured_past_it():
    bounds, store = PolicyBounds(), BinStore()
    bounds.correct(POLICY, view(), NODES, 2, forecasts(0))  # bins 0, 1, 2
    for minute, watts in enumerate([500.0, 650.0]):
        store.put(minute, watts)
    bounds.score(store, store.latest(2), at(2))
    assert bounds.tracker("web").windows == 0  # bin 2 not measured past yet
    store.put(2, 500.0)
    bounds.observe(POLICY, seen(2), at(3))  # the tick at the window's end still reads the count it was made for
    bounds.score(store, {**store.latest(3), "n2": NodeLatest(node_id="n2", timestamp=at(2), power_watts=0.0,
                                                             age_s=0.0)}, at(3))
    assert bounds.tracker("web").windows == 0  # n2 has not reported past the window yet
    bounds.score(store, store.latest(3), at(3))
    assert (bounds.tracker("web").windows, bounds.tracker("web").misses) == (1, 1)  # the 650 W bin


def test_a_window_cut_short_by_another_replica_count_counts_only_when_already_missed():
    """Scaled out between the ticks of minutes 1 and 2: only the bin that ended by minute 1, the last tick that read
    the bound's count, is read; a miss there counts, a hit does not."""
    for early, expected in ((650.0, (1, 1)), (500.0, (0, 0))):
        bounds, store = PolicyBounds(), BinStore()
        bounds.correct(POLICY, view(), NODES, 2, forecasts(0))
        bounds.observe(POLICY, seen(2), at(1))
        bounds.observe(POLICY, seen(4), at(2))  # the count changed after minute 1: bin 0 ended by then
        for minute, watts in enumerate([early, 900.0, 900.0]):  # bin 1 may be after the change: not read
            store.put(minute, watts)
        bounds.score(store, store.latest(3), at(3))
        tracker = bounds.tracker("web")
        assert (tracker.windows, tracker.misses) == expected


def test_bins_a_node_missed_do_not_count_and_too_few_measured_bins_teach_nothing():
    bounds, store = PolicyBounds(), BinStore()
    bounds.correct(POLICY, view(), NODES, 2, forecasts(0))
    store.put(0, 500.0)
    store.put(1, 900.0, nodes=("n1",))  # n2 missed bin 1: the bin is not read
    bounds.score(store, store.latest(3), at(3))
    assert bounds.tracker("web").windows == 0  # one bin of three read, under the bound


def test_one_bound_waits_per_forecast_origin_however_often_the_controller_ticks():
    bounds, store = PolicyBounds(), BinStore()
    for second in range(0, 600, 10):  # a tick every 10 s for 10 min, the bins always over the bound
        now = START + timedelta(seconds=second)
        minute = second // 60
        if second % 60 == 0 and minute:
            store.put(minute - 1, 900.0)
        bounds.observe(POLICY, seen(2), now)
        bounds.score(store, store.latest(minute), now)
        bounds.correct(POLICY, view(), NODES, 2, forecasts(minute))
    assert bounds.tracker("web").windows == 7  # origins at minutes 0..6: their bins end by minute 9


def test_an_unreadable_store_leaves_the_window_waiting_and_a_window_never_read_expires():
    bounds, store = PolicyBounds(), BinStore()
    bounds.correct(POLICY, view(), NODES, 2, forecasts(0))
    for minute in range(3):
        store.put(minute, 900.0)
    store.fail = True
    bounds.observe(POLICY, seen(2), at(3))
    bounds.score(store, store.latest(3), at(3))
    assert bounds.tracker("web").windows == 0
    store.fail = False
    bounds.score(store, store.latest(4), at(4))
    assert bounds.tracker("web").windows == 1
    bounds.correct(POLICY, view(), NODES, 2, forecasts(10))
    bounds.score(store, {}, at(10) + timedelta(seconds=EXPIRE_S + 300))  # no node ever reported past it
    bounds.score(store, store.latest(200), at(200))
    assert bounds.tracker("web").windows == 1


def test_an_uncalibrated_view_or_a_level_at_most_one_half_is_left_alone():
    bounds = PolicyBounds()
    unavailable = ForecastView.unavailable("no model")
    assert bounds.correct(POLICY, unavailable, NODES, 2, forecasts(0)) is unavailable
    low = make_policy(name="web", predictive_scaling={"enabled": True, "confidence_threshold": 0.4})
    assert bounds.correct(low, view(), NODES, 2, forecasts(0)) == view()
    assert bounds.tracker("web") is None
    off = make_policy(name="web", predictive_scaling={"enabled": True, "online_bound": False})
    assert bounds.correct(off, view(), NODES, 2, forecasts(0)) == view()


def test_a_policy_whose_bound_means_something_else_or_that_was_deleted_starts_afresh():
    bounds, store = PolicyBounds(), BinStore()
    run(bounds, store, [900.0] * 10)
    assert bounds.tracker("web").factor > 1
    stricter = POLICY.model_copy(update={"predictive_scaling": POLICY.predictive_scaling.model_copy(
        update={"confidence_threshold": 0.95})})
    assert bounds.correct(stricter, view(), NODES, 2, forecasts(10)).upper_quantile_per_node_watts[0] == 600.0
    assert bounds.tracker("web").windows == 0
    run(bounds, BinStore(), [900.0] * 10)
    assert bounds.correct(POLICY, view(), ("n1", "n3"), 2, forecasts(20)) == view()  # other nodes
    bounds.retain(["other"])
    assert bounds.tracker("web") is None


def test_the_controller_widens_a_policy_bound_that_its_nodes_keep_exceeding(tmp_path, store):
    """Through real ticks on a store: power alternating 400/500 W against a forecast bounded near the last reading,
    so windows from a 400 W origin are exceeded; the events say the bound was widened."""
    start = datetime.now(UTC) - timedelta(minutes=40)  # a timeline in the past, a tick a minute
    clock = [start]
    made = ScalingController(ControllerState(tmp_path / "state.sqlite"), store, FixedForecaster(upper_watts=450.0),
                             Actuators([RecordingActuator(2)]), clock=lambda: clock[0])
    made.put_policy(policy_data(stale_after_s="1h"))
    write_power(store, {"n1": 400.0, "n2": 400.0}, minutes=15, end=start)
    events = []
    for minute in range(1, 22):  # (from minute 22 the live coverage fallback takes the forecast away)
        clock[0] = start + timedelta(minutes=minute)
        watts = 400.0 + 100.0 * (minute % 2)
        write_power(store, {"n1": watts, "n2": watts}, minutes=1, end=clock[0])
        events += made.tick()
    tracker = made.bounds.tracker("web")
    assert tracker is not None and tracker.windows >= 14 and tracker.misses >= 7
    assert "corrected online" not in events[0].reason  # nothing learned yet: the calibrated bound as it is
    factor = float(events[-1].reason.split("(its spread x")[1].split(",")[0])
    assert factor > 1.2, events[-1].reason


def test_a_window_that_cannot_be_scored_is_dropped_without_failing_the_tick(caplog):
    """Bins the store answers with naive times cannot be placed in the window: logged, the window dropped."""
    bounds, store = PolicyBounds(), BinStore()
    bounds.correct(POLICY, view(), NODES, 2, forecasts(0))
    bounds.observe(POLICY, seen(4), at(1))  # cut at minute 1: the bins are compared with the cut
    for minute in range(3):
        store.put(minute, 900.0)
    naive = store.window

    def without_zone(*args):
        frame = naive(*args)
        return frame.assign(timestamp=frame["timestamp"].dt.tz_localize(None))

    store.window = without_zone
    bounds.score(store, store.latest(3), at(3))
    assert bounds.tracker("web").windows == 0 and "not scored" in caplog.text
    bounds.score(store, store.latest(3), at(3))  # nothing left waiting


def test_a_saved_correction_resumes_where_its_policy_bound_means_the_same():
    """A restarted controller goes on from the corrections its predecessor saved, not from the calibrated bound."""
    before = PolicyBounds()
    run(before, BinStore(), [900.0] * 10)
    saved = before.saved()
    assert set(saved) == {"web"} and saved["web"].windows == before.tracker("web").windows
    after = PolicyBounds()
    after.restore(saved)
    assert after.saved() == saved  # kept while its policy has not been corrected yet
    widened = after.correct(POLICY, view(), NODES, 2, forecasts(10)).upper_quantile_per_node_watts[0]
    assert widened > 600.0 and after.tracker("web").factor == before.tracker("web").factor
    other_nodes = PolicyBounds()
    other_nodes.restore(saved)
    assert other_nodes.correct(POLICY, view(), ("n1", "n3"), 2, forecasts(10)) == view()  # means something else
    assert other_nodes.tracker("web").windows == 0 and other_nodes.saved() == {}
    other_reach = PolicyBounds(reach_s=30.0)  # another tick: its forecasts cover another window
    other_reach.restore(saved)
    assert other_reach.correct(POLICY, view(), NODES, 2, forecasts(10)) == view()


def test_regression_nodes_found_from_the_replicas_keep_the_correction_when_the_replicas_move():
    """A policy naming no nodes corrects the bound over the nodes its replicas run on; every scale change that moved a
    replica made the bound "mean something else", so the correction started afresh and seldom built up."""
    bounds = PolicyBounds()
    run(bounds, BinStore(), [900.0] * 10, discovered=True)
    learned = bounds.tracker("web")
    assert learned.factor > 1 and bounds._policies["web"].waiting
    widened = bounds.correct(POLICY, view(), ("n1", "n3"), 3, forecasts(11), discovered=True)
    assert bounds.tracker("web") is learned and widened.upper_quantile_per_node_watts[0] > 600.0
    waiting = bounds._policies["web"].waiting  # each window is scored on the nodes its bound was made for
    assert {w.nodes for w in waiting} == {NODES, ("n1", "n3")} and waiting[-1].nodes == ("n1", "n3")
    configured = bounds.correct(POLICY, view(), ("n1", "n3"), 3, forecasts(12))  # the same nodes, configured
    assert configured == view() and bounds.tracker("web").windows == 0


def test_a_saved_correction_out_of_range_or_of_a_deleted_policy_is_dropped():
    saved = PolicyBounds()
    run(saved, BinStore(), [900.0] * 10)
    good = saved.saved()["web"]
    for bad in (dataclasses.replace(good, log_factor=9.0), dataclasses.replace(good, log_factor=float("nan")),
                dataclasses.replace(good, misses=good.windows + 1)):
        bounds = PolicyBounds()
        bounds.restore({"web": bad})
        assert bounds.correct(POLICY, view(), NODES, 2, forecasts(10)) == view()  # afresh
    deleted = PolicyBounds()
    deleted.restore({"web": good})
    deleted.retain(["other"])
    assert deleted.saved() == {}


def test_a_restarted_controller_goes_on_from_the_saved_correction(tmp_path, store):
    """Through real ticks: the corrections live in the state file, so the controller that takes over (here the same
    file reopened) decides on the widened bound at its first tick; a deleted policy's correction goes with it."""
    start = datetime.now(UTC) - timedelta(minutes=40)
    clock = [start]

    def controller() -> ScalingController:
        return ScalingController(ControllerState(tmp_path / "state.sqlite"), store,
                                 FixedForecaster(upper_watts=450.0), Actuators([RecordingActuator(2)]),
                                 clock=lambda: clock[0])

    first = controller()
    first.put_policy(policy_data(stale_after_s="1h"))
    write_power(store, {"n1": 400.0, "n2": 400.0}, minutes=15, end=start)
    for minute in range(1, 12):
        clock[0] = start + timedelta(minutes=minute)
        watts = 400.0 + 100.0 * (minute % 2)
        write_power(store, {"n1": watts, "n2": watts}, minutes=1, end=clock[0])
        first.tick()
    learned = first.bounds.tracker("web")
    assert learned.windows > 0 and learned.factor > 1.0
    assert first.state.bound_trackers()["web"].windows == learned.windows
    first.stop()
    restarted = controller()
    clock[0] += timedelta(seconds=10)  # within the same minute: no new window has ended
    [event] = restarted.tick()
    assert "corrected online" in event.reason, event.reason
    assert restarted.bounds.tracker("web").log_factor == learned.log_factor
    restarted.state.delete_policy("web")
    assert restarted.state.bound_trackers() == {}


def test_a_window_whose_count_no_tick_read_past_its_end_teaches_no_hit():
    """Regression: windows were scored before the tick read its replica count, so a change between the last tick
    and this one (the controller's own scale-out) let post-change bins teach a window under its bound."""
    for last_tick, expected in ((at(2), (0, 0)), (at(3), (1, 0))):
        bounds, store = PolicyBounds(), BinStore()
        bounds.correct(POLICY, view(), NODES, 2, forecasts(0))  # bins 0, 1, 2: its end is minute 3
        bounds.observe(POLICY, seen(2), last_tick)  # then scaled out, its power spread over 4 replicas since
        for minute in range(4):
            store.put(minute, 500.0)
        bounds.score(store, store.latest(4), at(4))  # before any tick read the new count
        tracker = bounds.tracker("web")
        assert (tracker.windows, tracker.misses) == expected  # whole only when a tick at its end read 2


def test_a_correction_the_state_file_cannot_give_is_not_overwritten_and_is_read_again(tmp_path, store, monkeypatch):
    """Regression: a failed read left the controller saving what it learned alone over every saved correction, and
    a late read threw away what it had learned since it took the lease."""
    read, broken, reads = ControllerState.bound_trackers, [True], []

    def bound_trackers(self):
        reads.append(broken[0])
        if broken[0]:
            raise sqlite3.OperationalError("disk I/O error")
        return read(self)

    monkeypatch.setattr(ControllerState, "bound_trackers", bound_trackers)
    state = ControllerState(tmp_path / "state.sqlite")
    made = ScalingController(state, store, FixedForecaster(upper_watts=450.0), Actuators([RecordingActuator(2)]))
    made.put_policy(policy_data(stale_after_s="1h"))
    write_power(store, {"n1": 400.0, "n2": 400.0}, minutes=5)
    made.tick()  # taking the lease: the read fails, it goes on from nothing
    entry = made.bounds._policies["web"]
    left = {"web": SavedBound(entry.meaning, 0.5, 20, 10), "gone": SavedBound("x", 0.1, 3, 1)}
    assert state.save_bound_trackers(left, made.holder)  # what the controller before it left there
    entry.tracker = PeakTracker(0.8, 0.2, 5, 5)  # what it learned itself meanwhile
    made._save()
    made.tick()  # read again, in vain: nothing saved over it
    assert read(state) == left
    broken[0] = False
    made.tick()  # read at last: it fills in only what this controller has not learned
    made.tick()
    assert reads == [True, True, False] and not made._unread
    assert made.bounds.tracker("web").windows < 20 and read(state)["web"].windows < 20


def test_a_window_no_tick_has_read_the_count_past_its_end_waits():
    """A tick that could not read the replica count (an actuator error), or a node whose clock runs ahead, does not
    end a window: it waits for a tick that read the count, as the replay's every step does."""
    bounds, store = PolicyBounds(), BinStore()
    bounds.correct(POLICY, view(), NODES, 2, forecasts(0))  # its end is minute 3
    for minute in range(4):
        store.put(minute, 500.0)
    bounds.observe(POLICY, None, at(3))  # the count unread at the tick after its end
    bounds.score(store, store.latest(4), at(3))
    assert bounds.tracker("web").windows == 0
    bounds.observe(POLICY, seen(2), at(4))
    bounds.score(store, store.latest(4), at(4))
    assert (bounds.tracker("web").windows, bounds.tracker("web").misses) == (1, 0)


def _learned() -> PolicyBounds:
    bounds = PolicyBounds()
    run(bounds, BinStore(), [900.0] * 10)
    return bounds



def test_a_store_that_fails_a_read_is_read_no_more_that_tick_and_the_policy_it_failed_on_goes_last():
    """Each policy's windows were read whatever the store had answered the one before: a store past its timeout
    (10 s a read) cost the tick that much per policy before any decision, until every policy held on stale
    telemetry. The policy it failed on is read last at the next tick, so that one the store always fails never
    keeps the others unscored."""
    from core.stores.base import StoreUnavailable

    bounds, store = PolicyBounds(), BinStore()
    policies = (POLICY, POLICY.model_copy(update={"name": "api"}))  # "web" first, then "api"
    for policy in policies:
        bounds.correct(policy, view(), NODES, 2, forecasts(0))
        bounds.observe(policy, seen(2), at(3))  # the tick at the windows' end reads the count they were made for
    for minute in range(3):
        store.put(minute, 500.0)
    reads: list[str] = []
    working = store.window

    def failing_after(count: int):
        def window(node_id, start, end, step_s):
            reads.append(node_id)
            if len(reads) > count:
                raise StoreUnavailable("the store actor did not answer within 10 s")
            return working(node_id, start, end, step_s)
        return window

    store.window = failing_after(0)
    bounds.score(store, store.latest(3), at(3))
    assert len(reads) == 1  # one timeout, not one per policy
    assert bounds.tracker("web").windows == bounds.tracker("api").windows == 0
    reads.clear()
    store.window = failing_after(len(NODES))  # one policy's reads answered, then the store fails again
    bounds.score(store, store.latest(3), at(3))
    assert (bounds.tracker("api").windows, bounds.tracker("web").windows) == (1, 0)  # "web" went last
