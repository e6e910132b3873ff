"""The controller scores its forecasts as telemetry arrives, falls back to measured power for a node whose live
coverage collapsed (the event says why), and publishes the scores (autoscaler/live_tracker.py, live_export.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from autoscaler.actuators import Actuators
from autoscaler.controller import ScalingController
from autoscaler.live_accuracy import LiveAccuracyReport, NodeLiveAccuracy, VersionLiveAccuracy
from autoscaler.live_export import LiveAccuracyExport, served_accuracies
from autoscaler.settings import AutoScalingConfig, LiveAccuracyConfig
from autoscaler.state import ControllerState
from core.actors import ActorUnavailable
from core.stores.base import StoreUnavailable
from tests.unit.autoscaler.doubles import FixedForecaster, RecordingActuator, policy_data, write_power

MINUTES_BEFORE = 12  # the first forecast is made from telemetry this old; what arrives since scores it


def controller(tmp_path, store, **live) -> ScalingController:
    defaults = AutoScalingConfig(live_accuracy=LiveAccuracyConfig(**{"min_points": 5, "min_bins": 5, **live}))
    return ScalingController(ControllerState(tmp_path / "state.sqlite"), store, FixedForecaster(),
                             Actuators([RecordingActuator(2)]), defaults=defaults)


def replay(made: ScalingController, store, before: float, after: float):
    """A tick on telemetry at `before` W ending MINUTES_BEFORE ago, then `after` W arrives up to now and the next
    tick scores the first tick's forecasts (6 leads of 1 min per node: the 5-min risk window and a tick) against
    it; returns the second event."""
    made.put_policy(policy_data(stale_after_s="1h"))
    now = datetime.now(UTC)
    then = now - timedelta(minutes=MINUTES_BEFORE)
    write_power(store, {"n1": before, "n2": before}, minutes=15, end=then)
    made.clock = lambda: then  # the first tick as the telemetry arrived (its forecast reaches 6 leads from then)
    made.tick()
    made.clock = lambda: datetime.now(UTC)
    write_power(store, {"n1": after, "n2": after}, minutes=MINUTES_BEFORE, end=now)
    [event] = made.tick()
    return event


def test_forecasts_are_scored_against_the_power_stored_since(tmp_path, store):
    made = controller(tmp_path, store)
    event = replay(made, store, 500, 500)
    assert event.signal == "forecast" and "live interval coverage" not in event.reason
    report = made.live_accuracy()
    (version,) = report.versions
    assert version.model_version == "power_lstm/1" == report.served_version
    assert [(n.node_id, n.points, n.mae, n.coverage, n.hit_rate) for n in version.nodes] == [
        ("n1", 6, 0.0, 1.0, 1.0), ("n2", 6, 0.0, 1.0, 1.0)]
    assert version.points == 12 and version.nominal_coverage == 0.8
    assert report.pending_forecasts == 2  # the second tick's forecasts wait for their actuals


def test_a_node_whose_coverage_collapsed_decides_on_measured_power_and_says_why(tmp_path, store):
    made = controller(tmp_path, store)
    event = replay(made, store, 500, 900)  # every actual 400 W above a zero-width interval
    assert event.signal == "measured", event
    assert ("forecast unavailable: live interval coverage 0% over 6 points (6 measured bins) in the last 1h for node "
            "n1 < 60% (nominal 80% - margin 20%, power_lstm/1); using measured power") in event.reason
    assert event.confidence is None
    node = made.live_accuracy().versions[0].nodes[0]
    assert (node.mae, node.coverage, node.hit_rate) == (400.0, 0.0, 0.0) and node.fallback


@pytest.mark.parametrize("standby", [False, True], ids=["restarted", "standby-taking-over"])
def test_the_next_lease_holder_keeps_distrusting_a_node_until_the_evidence_says_otherwise(tmp_path, store, standby):
    """Regression: live scores live in memory, so a restarted controller (or a standby started before the leader
    distrusted the node) acted again on forecasts its predecessor had stopped trusting."""
    waiting = controller(tmp_path, store) if standby else None  # built before the fall, leading only after it
    first = controller(tmp_path, store)
    assert replay(first, store, 500, 900).signal == "measured"
    first.state.release_lease(first.holder)  # it stopped
    restarted = waiting or controller(tmp_path, store)  # the same state file
    write_power(store, {"n1": 900, "n2": 900}, minutes=1)
    [event] = restarted.tick()
    assert event.signal == "measured" and "not trusted since" in event.reason, event.reason
    assert "too few points to trust it again" in event.reason


@pytest.mark.parametrize("live", [{"min_points": 7}, {"fallback": False}, {"coverage_margin": 0.9}])
def test_too_few_points_or_fallback_disabled_keep_the_forecast(tmp_path, store, live):
    made = controller(tmp_path, store, **live)
    event = replay(made, store, 500, 900)
    assert event.signal == "forecast", event.reason
    assert made.live_accuracy().versions[0].nodes[0].coverage == 0.0


HISTORY = timedelta(minutes=10)  # FixedForecaster's input window; an actuals read takes its bins and the 10 min before


class FailingWindows:
    """The store, except that windows of `broken` nodes cannot be read."""

    def __init__(self, store, broken: set[str]):
        self.store, self.broken = store, broken

    def __getattr__(self, name):
        return getattr(self.store, name)

    def window(self, node_id, start, end, step_s):
        if node_id in self.broken and end - start > HISTORY:  # an actuals read, not the history
            raise StoreUnavailable("store restarting")
        return self.store.window(node_id, start, end, step_s)


class CountingWindows(FailingWindows):
    """As FailingWindows, counting the actuals reads."""

    def __init__(self, store, broken: set[str]):
        super().__init__(store, broken)
        self.actuals_reads: list[str] = []

    def window(self, node_id, start, end, step_s):
        if end - start > HISTORY:
            self.actuals_reads.append(node_id)
        return super().window(node_id, start, end, step_s)


def test_unreadable_actuals_never_stop_a_tick_and_are_scored_later(tmp_path, store):
    """A store that fails a read (StoreUnavailable) is read no more that tick: each further read cost the tick its
    timeout (10 s) before any decision, until every policy held on stale telemetry. The node it failed on is read
    last at the next tick, so one node the store always fails never keeps the others unscored."""
    flaky = CountingWindows(store, {"n1"})
    made = controller(tmp_path, flaky)
    event = replay(made, store, 500, 500)
    assert event.signal == "forecast"
    # once by the live scoring, once by the peak bound's (each stops there): n2 not read after it
    assert flaky.actuals_reads == ["n1", "n1"] and made.live_accuracy().versions == []
    made.tick()
    assert flaky.actuals_reads[2:] == ["n2", "n1", "n1"]  # the live scoring reads n1 last
    assert [n.node_id for n in made.live_accuracy().versions[0].nodes] == ["n2"]
    flaky.broken.clear()
    made.tick()
    assert [n.node_id for n in made.live_accuracy().versions[0].nodes] == ["n1", "n2"]


def test_no_forecasts_no_scores(make):
    made, _ = make()
    report = made.live_accuracy()
    assert report.versions == [] and report.pending_forecasts == 0 and report.window_s == 3600


def report(version: str = "power_lstm/3", mae: float | None = 12.5, points: int = 40) -> LiveAccuracyReport:
    score = {"points": points, "mae": mae, "coverage": 0.75, "hit_rate": 0.5}
    node = NodeLiveAccuracy(node_id="n1", **score)
    return LiveAccuracyReport(at=datetime.now(UTC), window_s=3600, hit_tolerance=0.1, pending_forecasts=0,
                              served_version=version, versions=[VersionLiveAccuracy(model_version=version,
                                                                                    nodes=[node], **score)])


class Scheduler:
    def __init__(self, running: bool = True):
        self.running, self.calls = running, []

    def call(self, method, *args):
        if not self.running:
            raise ActorUnavailable("the retrain scheduler is not running")
        self.calls.append((method, *args))


class Gauge:
    def __init__(self):
        self.values = {}

    def set(self, value, tags):
        self.values[tuple(sorted(tags.items()))] = value


def test_the_served_version_is_reported_to_the_scheduler_at_most_once_a_minute():
    clock = iter([0.0, 0.0, 30.0, 61.0, 61.0]).__next__
    scheduler = Scheduler()
    export = LiveAccuracyExport(scheduler, clock=clock)
    for _ in range(3):
        export.publish(report())
    assert [call[0] for call in scheduler.calls] == ["report_live_accuracy"] * 2
    accuracy = scheduler.calls[0][1]
    assert (accuracy.model_id, accuracy.version, accuracy.mae, accuracy.samples) == ("power_lstm", 3, 12.5, 40)
    LiveAccuracyExport(Scheduler(running=False)).publish(report())  # retraining off: nothing to tell, no error


@pytest.mark.parametrize("made", [report(mae=None, points=0), report(version="local-model"),
                                  report().model_copy(update={"served_version": "power_lstm/4"})])
def test_nothing_to_report_without_points_or_a_registry_version(made):
    assert served_accuracies(made) == []


def test_every_power_model_s_newest_scored_version_is_reported_and_the_served_one_for_its_model():
    """Review: only the version the controller forecast with last was reported, so with policies on two resolutions
    the other model's degradation trigger never fired."""
    score = {"points": 40, "coverage": 0.75, "hit_rate": 0.5}
    versions = [VersionLiveAccuracy(model_version=version, nodes=[], mae=mae, **score)
                for version, mae in (("power_lstm/3", 12.5), ("power_lstm/4", 14.0), ("power_lstm_1h/1", 30.0),
                                     ("power_lstm_1h/2", 25.0))]
    made = report().model_copy(update={"versions": versions})  # served: power_lstm/3, scored beside v4
    found = {(a.model_id, a.version, a.mae) for a in served_accuracies(made)}
    assert found == {("power_lstm", 3, 12.5), ("power_lstm_1h", 2, 25.0)}
    scheduler = Scheduler()
    LiveAccuracyExport(scheduler).publish(made)
    assert sorted(call[1].model_id for call in scheduler.calls) == ["power_lstm", "power_lstm_1h"]


def test_gauges_carry_each_node_s_scores_of_the_served_version_only():
    """One series per node and score: a version label left a series per node behind at every activation (Ray
    cannot delete a label set), 9,600 a day for 100 nodes and hourly activations."""
    export = LiveAccuracyExport(Scheduler())
    gauges = [Gauge() for _ in export._gauges]
    export._gauges = [(gauge, name) for gauge, (_, name) in zip(gauges, export._gauges, strict=True)]
    export.publish(report())
    tags = (("node_id", "n1"),)
    assert [gauge.values[tags] for gauge in gauges] == [12.5, 0.75, 0.5, 40]
    export.publish(report(mae=20.0, version="power_lstm/4"))  # a new served version: the same series
    assert [gauge.values[tags] for gauge in gauges] == [20.0, 0.75, 0.5, 40] and len(gauges[0].values) == 1
    gone = report(version="power_lstm/4").model_copy(update={"versions": []})  # n1 no longer forecast
    export.publish(gone)
    old = [gauge.values[tags] for gauge in gauges]
    assert old[3] == 0 and all(math.isnan(value) for value in old[:3])


def test_every_node_of_a_policy_is_judged_though_the_first_has_fallen(store):
    """Regression: the check stopped at the first collapsed node, so a later node's own fall or recovery was not
    noted when it happened (its "not trusted since" came late, its hysteresis was skipped)."""
    from autoscaler.live_tracker import LiveTracker
    from core.forecasts import PowerForecast

    tracker = LiveTracker(store)
    judged = []

    def collapse(version, node, now):
        judged.append(node)
        return f"{node} collapsed" if node in ("n1", "n3") else None

    tracker.ledger.collapse = collapse
    answer = PowerForecast(model_version="power_lstm/1", step_s=60, timestamps=(), point=(), lower=(), upper=(),
                           confidence=(), window_coverage=1.0, padded_steps=0, interval_coverage=0.8)
    reasons = tracker.collapses(["n1", "n2", "n3", "n4"], [answer] * 3 + [RuntimeError("failed")], datetime.now(UTC))
    assert reasons == ["n1 collapsed", None, "n3 collapsed", None] and judged == ["n1", "n2", "n3"]


def test_a_failure_judging_live_accuracy_falls_back_to_measured_power_and_never_stops_the_tick(make, store,
                                                                                              monkeypatch):
    """Judged once per tick for every policy since the windows are shared: its failure must stay a per-policy
    fallback, as it was when each policy judged its own."""
    from tests.unit.autoscaler.doubles import FixedForecaster, policy_data, write_power

    controller, _ = make(FixedForecaster(upper_watts=1000))
    controller.put_policy(policy_data())
    write_power(store, {"n1": 700, "n2": 700})

    def broken(*args):
        raise ZeroDivisionError("a ledger in a bad state")

    monkeypatch.setattr(controller.live, "collapses", broken)
    [event] = controller.tick()
    assert event.signal != "forecast" and "judging its live accuracy failed" in event.reason


class HistoryReads(FailingWindows):
    """The store, except that the forecast windows (the history read, 10 minutes or more) of `broken` nodes fail;
    every history read counted."""

    def __init__(self, store, broken: set[str]):
        super().__init__(store, set())
        self.history_broken, self.history_reads = broken, []

    def window(self, node_id, start, end, step_s):
        if end - start >= timedelta(minutes=10):
            self.history_reads.append(node_id)
            if node_id in self.history_broken:
                raise StoreUnavailable("the store actor did not answer within 10 s")
        return super().window(node_id, start, end, step_s)


def test_after_a_failed_forecast_window_no_other_is_read_that_tick_and_its_policies_go_last(tmp_path, store):
    """Every node's window was read whatever the store had answered for the one before: a store past its timeout
    cost the tick 10 s a node before any decision, and a tick past `stale_after_s` holds every policy. The policies
    listing a node it failed on are read last at the next tick: one node the store always fails does not keep the
    other policies from their forecasts."""
    slow = HistoryReads(store, {"n1", "n2"})
    made = controller(tmp_path, slow)
    made.put_policy(policy_data(name="api", nodes=["n1"], stale_after_s="1h"))
    made.put_policy(policy_data(name="web", nodes=["n2"], stale_after_s="1h"))
    write_power(store, {"n1": 500, "n2": 500}, minutes=15)
    events = made.tick()
    assert slow.history_reads == ["n1"]  # one timeout, for both policies' nodes
    assert [event.signal for event in events] == ["measured", "measured"]
    assert "the store failed this tick's read before" in events[1].reason, events[1].reason
    slow.history_broken = {"n1"}  # the store fails n1's window only, from now on
    for _ in range(2):
        slow.history_reads.clear()
        events = made.tick()
        assert slow.history_reads == ["n2", "n1"]  # "api", whose n1 failed, read last
        assert [(event.policy, event.signal) for event in events] == [("api", "measured"), ("web", "forecast")]
