"""Two policies on one target within one tick: each write sets an absolute count, so a later policy decides from
the count an earlier one set (autoscaler/intents.py `TickCounts`), with its power (read before that change)
re-spread over it, and never lowers a count raised in the same tick."""

from __future__ import annotations

import pytest

from autoscaler.actuators import ActuationError, ActuationOutcomeUnknown
from autoscaler.schema import ActuationStatus, ScaleAction
from tests.unit.autoscaler.doubles import policy_data, write_power

TARGET = {"kind": "deployment", "name": "web"}
MEASURED = {"enabled": False}


@pytest.fixture
def pair(make, store):
    """a-hot (node n1, 100 % by default, scale out above 50 %) sorts before b-other (node n2, scale out above 80 %)
    on one target at 4 replicas."""
    def build(b_watts: float, *, a_mode: str = "enforce", a_watts: float = 1000):
        controller, actuator = make(replicas=4)
        controller.put_policy(policy_data("a-hot", target=TARGET, nodes=["n1"], mode=a_mode,
                                          predictive_scaling=MEASURED,
                                          power_based={"scale_out_threshold": 50, "scale_in_threshold": 20}))
        controller.put_policy(policy_data("b-other", target=TARGET, nodes=["n2"], predictive_scaling=MEASURED))
        write_power(store, {"n1": a_watts, "n2": b_watts})
        return controller, actuator
    return build


def test_regression_a_later_policy_never_lowers_a_count_raised_in_the_same_tick(pair):
    """Both decided from the 4 read at the tick's start: a-hot set 8, then b-other set 1 (a scale-in during risk)."""
    controller, actuator = pair(b_watts=100)
    a, b = controller.tick()
    assert (a.action, a.to_replicas) == (ScaleAction.SCALE_OUT, 8)
    assert (b.action, b.from_replicas, b.to_replicas) == (ScaleAction.HOLD, 8, 8), b.reason
    assert "policy a-hot raised the target to 8 earlier in this tick" in b.reason
    assert actuator.calls == [("web", 8)]


def test_regression_a_later_scale_out_starts_from_the_count_set_in_the_same_tick(pair):
    """b-other decided from the stale 4 read at the tick's start: at 850 W it asked for 5, and its write took the
    target back from 8 to 5. At 1700 W its load (170 % at 4 replicas, 85 % each over 8) needs 9."""
    controller, actuator = pair(b_watts=1700)
    _, b = controller.tick()
    assert (b.from_replicas, b.action, b.to_replicas) == (8, ScaleAction.SCALE_OUT, 9), b.reason
    assert [count for _, count in actuator.calls] == [8, 9]
    assert "lowered outside" not in controller.tick()[0].reason  # a-hot's next tick sees no foreign change


@pytest.mark.parametrize(("a_watts", "b_watts", "raised_to"), [
    pytest.param(600, 960, 5, id="a-4-to-5-b-96pct-went-to-6"),
    pytest.param(1000, 850, 8, id="a-4-to-8-b-85pct-went-to-9"),
])
def test_regression_a_later_policy_adds_no_replica_for_load_an_earlier_raise_spread(pair, a_watts, b_watts,
                                                                                    raised_to):
    """b-other's power was read at 4 replicas; it decided as if each of a-hot's raised count carried that load, so
    it added a replica its load (96 % at 4 is 76.8 % each over 5; 85 % at 4 is 42.5 % over 8) does not need."""
    controller, actuator = pair(b_watts=b_watts, a_watts=a_watts)
    a, b = controller.tick()
    assert (a.action, a.to_replicas) == (ScaleAction.SCALE_OUT, raised_to), a.reason
    assert (b.action, b.from_replicas, b.to_replicas) == (ScaleAction.HOLD, raised_to, raised_to), b.reason
    assert (f"policy a-hot raised the target to {raised_to} earlier in this tick: the power read at 4 replicas is "
            f"counted re-spread over {raised_to}") in b.reason
    assert b.measured_power_watts == b_watts  # the event keeps the power as measured
    assert actuator.calls == [("web", raised_to)]


def test_a_third_policy_re_spreads_its_power_from_the_count_read_at_the_tick_start(pair, store):
    """a-hot 4 -> 8, b-other 8 -> 9: c-third's power was read at 4 replicas too (170 % there, 75.6 % over 9)."""
    controller, actuator = pair(b_watts=1700)
    controller.put_policy(policy_data("c-third", target=TARGET, nodes=["n3"], predictive_scaling=MEASURED))
    write_power(store, {"n3": 1700})
    _, _, c = controller.tick()
    assert (c.action, c.from_replicas, c.to_replicas) == (ScaleAction.HOLD, 9, 9), c.reason
    assert "policy b-other raised the target to 9 earlier in this tick: the power read at 4 replicas" in c.reason
    assert actuator.calls == [("web", 8), ("web", 9)]


@pytest.mark.parametrize(("failure", "mode", "seen"), [
    pytest.param(ActuationOutcomeUnknown("sent, no answer"), "enforce", 8, id="outcome-unknown-may-have-landed"),
    pytest.param(ActuationError("forbidden (403)"), "enforce", 4, id="refused-changed-nothing"),
    pytest.param(None, "dry_run", 4, id="dry-run-changed-nothing"),
])
def test_only_a_change_that_may_have_landed_moves_the_count(pair, failure, mode, seen):
    controller, actuator = pair(b_watts=650, a_mode=mode)

    def fail_a_hot(_target: str, replicas: int) -> None:
        if replicas == 8 and failure is not None:
            raise failure

    actuator.on_scale = fail_a_hot
    a, b = controller.tick()
    assert a.actuation.status in (ActuationStatus.FAILED, ActuationStatus.DRY_RUN)
    assert (b.action, b.from_replicas) == (ScaleAction.HOLD, seen), b.reason
