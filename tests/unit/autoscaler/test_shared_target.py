"""Two policies on one target within one tick: each write sets an absolute count, so a later policy decides from
the count an earlier one set (autoscaler/intents.py `TickCounts`) and never lowers a count raised in the same tick."""

from __future__ import annotations

import pytest

from autoscaler.actuators import ActuationError, ActuationOutcomeUnknown
from autoscaler.schema import ActuationStatus, ScaleAction
from tests.unit.autoscaler.doubles import policy_data, write_power

TARGET = {"kind": "deployment", "name": "web"}
MEASURED = {"enabled": False}


@pytest.fixture
def pair(make, store):
    """a-hot (node n1 at 100 %, scale out above 50 %) sorts before b-other (node n2) on one target at 4 replicas."""
    def build(b_watts: float, *, a_mode: str = "enforce"):
        controller, actuator = make(replicas=4)
        controller.put_policy(policy_data("a-hot", target=TARGET, nodes=["n1"], mode=a_mode,
                                          predictive_scaling=MEASURED,
                                          power_based={"scale_out_threshold": 50, "scale_in_threshold": 20}))
        controller.put_policy(policy_data("b-other", target=TARGET, nodes=["n2"], predictive_scaling=MEASURED))
        write_power(store, {"n1": 1000, "n2": b_watts})
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
    """b-other asked for 5 from the stale 4 and its write took the target back from 8 to 5."""
    controller, actuator = pair(b_watts=850)
    _, b = controller.tick()
    assert b.from_replicas == 8 and b.action is ScaleAction.SCALE_OUT
    assert [count for _, count in actuator.calls] == [8, b.to_replicas]
    assert "lowered outside" not in controller.tick()[0].reason  # a-hot's next tick sees no foreign change


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
