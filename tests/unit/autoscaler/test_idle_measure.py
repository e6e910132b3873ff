"""`power_based.measure_idle_power`: the controller measures its nodes' idle draw from the store's telemetry and sizes
a scale-out with it (autoscaler/idle_measure.py), and says in the event when it cannot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from autoscaler.idle_measure import MAX_READS_PER_TICK, REFRESH_S, RETRY_S, MeasuredIdleDraws
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


def test_the_lowest_node_idle_draw_is_used_and_kept_until_its_refresh(store):
    write_idle_history(store, {"n1": 600.0, "n2": 620.0}, NOW)
    counting = CountingStore(store)
    draws = MeasuredIdleDraws(counting)
    assert draws.for_policy(measured_policy(), ["n1", "n2"], NOW, [MAX_READS_PER_TICK]) == (600.0, None)
    assert counting.reads == 2
    later = NOW + timedelta(seconds=REFRESH_S - 1)
    assert draws.for_policy(measured_policy(), ["n1", "n2"], later, [MAX_READS_PER_TICK]) == (600.0, None)
    assert counting.reads == 2  # kept
    draws.for_policy(measured_policy(), ["n1", "n2"], NOW + timedelta(seconds=REFRESH_S), [MAX_READS_PER_TICK])
    assert counting.reads == 4


def test_a_tick_reads_at_most_so_many_nodes(store):
    nodes = [f"n{i}" for i in range(MAX_READS_PER_TICK + 3)]
    write_idle_history(store, dict.fromkeys(nodes, 500.0), NOW, hours=1)
    counting, reads_left = CountingStore(store), [MAX_READS_PER_TICK]
    draws = MeasuredIdleDraws(counting)
    assert draws.for_policy(measured_policy(), nodes, NOW, reads_left) == (500.0, None)  # from those measured
    assert counting.reads == MAX_READS_PER_TICK and reads_left == [0]
    draws.for_policy(measured_policy(), nodes, NOW, [MAX_READS_PER_TICK])
    assert counting.reads == MAX_READS_PER_TICK + 3  # the rest at the next tick


def test_what_stands_when_nothing_is_measured(store):
    write_power(store, {"n1": 900, "n2": 900}, end=NOW)  # power only: no utilization says what is idle
    draws = MeasuredIdleDraws(store)
    assert draws.for_policy(measured_policy(idle_power_watts=250), ["n1", "n2"], NOW, [8]) == (
        None, "no idle draw measured for the target's nodes: none was idle long enough in the last 7 days; "
              "idle_power_watts 250 W stands")
    failing = MeasuredIdleDraws(CountingStore(store, fail=True))
    assert failing.for_policy(measured_policy(), ["n1"], NOW, [8]) == (
        None, "no idle draw measured for the target's nodes: reading their telemetry failed (OSError: store down); "
              "every watt counts as load")


def test_a_failed_refresh_keeps_the_value_before_and_retries_sooner(store):
    write_idle_history(store, {"n1": 600.0}, NOW)
    counting = CountingStore(store)
    draws = MeasuredIdleDraws(counting)
    draws.for_policy(measured_policy(), ["n1"], NOW, [8])
    counting.fail = True
    refreshed = NOW + timedelta(seconds=REFRESH_S)
    assert draws.for_policy(measured_policy(), ["n1"], refreshed, [8]) == (600.0, None)
    assert counting.reads == 2
    draws.for_policy(measured_policy(), ["n1"], refreshed + timedelta(seconds=RETRY_S - 1), [8])
    assert counting.reads == 2
    draws.for_policy(measured_policy(), ["n1"], refreshed + timedelta(seconds=RETRY_S), [8])
    assert counting.reads == 3


def test_an_idle_draw_at_the_threshold_is_not_used(store):
    write_idle_history(store, {"n1": 850.0}, NOW)
    assert MeasuredIdleDraws(store).for_policy(measured_policy(), ["n1"], NOW, [8]) == (
        None, "the idle draw measured, 850 W, is at or above the scale-out threshold's 800 W: not used; every watt "
              "counts as load")


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
