"""`power_based.measure_idle_power`: the controller measures its nodes' idle draw from the store's telemetry and sizes
a scale-out with it (autoscaler/idle_measure.py), and says in the event when it cannot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from autoscaler.idle_measure import MAX_READS_PER_TICK, READ_BUDGET_S, REFRESH_S, RETRY_S, MeasuredIdleDraws
from autoscaler.policy_config import policy_from
from autoscaler.schema import ScaleAction
from autoscaler.settings import AutoScalingConfig
from core.stores.window import replay_samples
from tests.unit.autoscaler.doubles import policy_data, write_power

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
REACTIVE = {"enabled": False}


def write_idle_history(store, idle: dict[str, float], end: datetime, hours: int = 3) -> None:
    """`hours` of each node idle at its watts (GPU utilization 0), then an hour at work, ending at `end`."""
    samples = []
    for minute in range((hours + 1) * 60):
        at = end - timedelta(minutes=(hours + 1) * 60 - minute)
        for node, watts in idle.items():
            row = ({"power_watts": watts, "gpu_utilization": 0.0} if minute < hours * 60
                   else {"power_watts": 900.0, "gpu_utilization": 60.0})
            samples += replay_samples(at, node, row)
    store.write(samples)


def measured_policy(**power):
    return policy_from(policy_data(predictive_scaling=REACTIVE,
                                   power_based={"measure_idle_power": True, **power}), AutoScalingConfig())


class CountingStore:
    def __init__(self, store, fail: bool = False):
        self.store, self.fail, self.reads = store, fail, 0

    def window(self, *args):
        self.reads += 1
        if self.fail:
            raise OSError("store down")
        return self.store.window(*args)


def tick(draws: MeasuredIdleDraws, nodes: list[str], at: datetime, **power):
    draws.start_tick(nodes)
    return draws.for_policy(measured_policy(**power), nodes, at)


def test_the_lowest_node_idle_draw_is_used_and_kept_until_its_refresh(store):
    write_idle_history(store, {"n1": 620.0, "n2": 600.0}, NOW)
    counting = CountingStore(store)
    draws = MeasuredIdleDraws(counting)
    used = (600.0, "idle draw 600 W measured on n2 (the lowest of 2 node(s) measured); at or above the scale-in "
                   "threshold: these nodes never draw less, so power alone never consolidates them")
    assert tick(draws, ["n1", "n2"], NOW) == used
    assert counting.reads == 2
    assert tick(draws, ["n1", "n2"], NOW + timedelta(seconds=REFRESH_S - 1)) == used
    assert counting.reads == 2  # kept
    tick(draws, ["n1", "n2"], NOW + timedelta(seconds=REFRESH_S))
    assert counting.reads == 4
    tick(draws, ["n1", "n2"], NOW)  # a clock set back: measured again, not kept until the clock passes it
    assert counting.reads == 6


def test_a_tick_reads_at_most_so_many_nodes_and_for_so_long(store):
    nodes = [f"n{i:02d}" for i in range(MAX_READS_PER_TICK + 3)]
    write_idle_history(store, {node: 500.0 + i for i, node in enumerate(nodes)}, NOW, hours=1)
    counting = CountingStore(store)
    draws = MeasuredIdleDraws(counting)
    watts, _ = tick(draws, list(reversed(nodes)), NOW)
    assert counting.reads == MAX_READS_PER_TICK
    assert watts == 503.0  # the lowest of the nodes read (n10 .. n03), not of all
    assert tick(draws, nodes, NOW)[0] == 500.0 and counting.reads == MAX_READS_PER_TICK + 3  # the rest next tick
    clock = iter([0.0, READ_BUDGET_S + 1])  # the allowance's start, then past its time at the first read
    slow = MeasuredIdleDraws(store, monotonic=lambda: next(clock))
    assert tick(slow, ["n00"], NOW) == (None, "no idle draw measured for the target's nodes: 1 of 1 not measured "
                                              "yet; every watt counts as load")


def test_what_stands_when_nothing_is_measured(store):
    write_power(store, {"n1": 900, "n2": 900}, end=NOW)  # power only: no utilization says what is idle
    assert tick(MeasuredIdleDraws(store), ["n1", "n2"], NOW, idle_power_watts=250) == (
        None, "no idle draw measured for the target's nodes: their telemetry reports no utilization; "
              "idle_power_watts 250 W stands")
    write_idle_history(store, {"n3": 600.0}, NOW, hours=0)  # utilization, but never idle
    assert tick(MeasuredIdleDraws(store), ["n3"], NOW)[1] == (
        "no idle draw measured for the target's nodes: none was idle for 10 five-minute bins in the last 7 days; "
        "every watt counts as load")


def test_a_failed_read_pauses_every_read_and_keeps_the_values_before(store):
    write_idle_history(store, {"n1": 600.0, "n2": 610.0}, NOW)
    counting = CountingStore(store)
    draws = MeasuredIdleDraws(counting)
    tick(draws, ["n1"], NOW)
    counting.fail = True
    refreshed = NOW + timedelta(seconds=REFRESH_S)
    assert tick(draws, ["n1", "n2"], refreshed)[0] == 600.0  # n1's failed refresh: its value stays
    assert counting.reads == 2  # and n2 was not tried after it
    assert tick(draws, ["n2"], refreshed)[1] == (
        "no idle draw measured for the target's nodes: 1 of 1 not measured yet (reading telemetry failed: "
        "OSError: store down); every watt counts as load")
    tick(draws, ["n1", "n2"], refreshed + timedelta(seconds=RETRY_S - 1))
    assert counting.reads == 2
    counting.fail = False
    assert tick(draws, ["n1", "n2"], refreshed + timedelta(seconds=RETRY_S))[0] == 600.0
    assert counting.reads == 4


def test_nodes_no_policy_measures_are_forgotten(store):
    write_idle_history(store, {"n1": 600.0}, NOW)
    counting = CountingStore(store)
    draws = MeasuredIdleDraws(counting)
    tick(draws, ["n1"], NOW)
    draws.start_tick([])
    tick(draws, ["n1"], NOW)
    assert counting.reads == 2


def test_an_idle_draw_at_the_threshold_is_not_used(store):
    write_idle_history(store, {"n1": 850.0}, NOW)
    assert tick(MeasuredIdleDraws(store), ["n1"], NOW) == (
        None, "the idle draw measured on n1, 850 W, is at or above the scale-out threshold's 800 W: not used; every "
              "watt counts as load")


@pytest.mark.parametrize(("measure", "expected"), [(False, 3), (True, 4)])
def test_the_controller_sizes_a_scale_out_with_the_measured_idle_draw(make, store, measure, expected):
    """Two nodes at 950 W of a 1,000 W budget (80 % threshold) that idle at 600 W: every watt counted, 3 replicas
    seem to carry it (633 W each); with the idle draw staying on every node they carry 775 W at 4, 833 W at 3."""
    now = datetime.now(UTC)
    write_idle_history(store, {"n1": 600.0, "n2": 600.0}, now - timedelta(minutes=20))
    write_power(store, {"n1": 950, "n2": 950}, end=now)
    controller, actuator = make()
    controller.put_policy(policy_data(predictive_scaling=REACTIVE, power_based={"measure_idle_power": measure}))
    [event] = controller.tick()
    assert event.action is ScaleAction.SCALE_OUT and event.to_replicas == expected
    assert actuator.calls == [("web", expected)]
    assert ("each node's idle 600 W stays put" in event.reason) is measure
    assert ("idle draw 600 W measured on n1 (the lowest of 2 node(s) measured)" in event.reason) is measure


def test_a_tick_whose_store_failed_reads_no_idle_draw(make, store, monkeypatch):
    controller, _ = make()
    controller.put_policy(policy_data(predictive_scaling=REACTIVE, power_based={"measure_idle_power": True}))
    monkeypatch.setattr(store, "latest", lambda *args: (_ for _ in ()).throw(OSError("down")))
    monkeypatch.setattr(store, "window", lambda *args: pytest.fail("read an idle draw on a failed tick"))
    [event] = controller.tick()
    assert event.action is ScaleAction.HOLD and "idle draw" not in event.reason


def test_a_shared_target_re_spreads_above_the_measured_idle_draw(make, store):
    """A second policy on the target decides from the count the first set, re-spreading the part of its reading
    above the measured idle draw (decision.py `_Respread`)."""
    now = datetime.now(UTC)
    write_idle_history(store, {"n1": 600.0, "n2": 600.0}, now - timedelta(minutes=20))
    write_power(store, {"n1": 950, "n2": 950}, end=now)
    controller, _ = make()
    shared = {"kind": "deployment", "name": "web"}
    for name in ("a", "b"):
        controller.put_policy(policy_data(name=name, target=shared, predictive_scaling=REACTIVE,
                                          power_based={"measure_idle_power": True}))
    first, second = controller.tick()
    assert first.to_replicas == 4
    assert second.action is ScaleAction.HOLD and "above the nodes' idle 600 W" in second.reason
