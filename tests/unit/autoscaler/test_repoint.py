"""A policy re-pointed at another target (same name) starts afresh there: the old target's cooldown clock, count and
recommendations are dropped, and an actuation pending on the old target is abandoned, never completed against the
new one (autoscaler/state.py `put_policy`)."""

from __future__ import annotations

import sqlite3

import pytest

from autoscaler.decision import PolicyState
from autoscaler.schema import ActuationStatus, ScaleAction
from tests.unit.autoscaler.doubles import policy_data, write_power

MEASURED = {"enabled": False}


class Crash(BaseException):
    """The controller dies between the intent and its completion."""


def web(name: str) -> dict:
    return policy_data(target={"kind": "deployment", "name": name}, nodes=["n1"], predictive_scaling=MEASURED)


def test_regression_a_repointed_policy_forgets_the_old_targets_state(make, store):
    """The new target (2 replicas) looked lowered from the old one's 9 ("lowered outside this controller")."""
    controller, actuator = make()
    actuator.counts = {"old": 8, "new": 2}
    controller.put_policy(web("old"))
    write_power(store, {"n1": 900})
    assert controller.tick()[0].to_replicas == 9
    controller.put_policy(web("old") | {"mode": "dry_run"})  # same target: the state stays
    assert controller.state.policy_state("web").replicas_after == 9
    controller.put_policy(web("new"))
    assert controller.state.policy_state("web") == PolicyState()
    [event] = controller.tick()
    assert (event.action, event.from_replicas) == (ScaleAction.SCALE_OUT, 2)
    assert "lowered outside" not in event.reason, event.reason


def crashed_mid_actuation(make, store):
    """A controller whose tick died between recording the intent to scale "old" and completing it; the pending
    event."""
    controller, actuator = make()
    controller.put_policy(web("old"))
    write_power(store, {"n1": 900})

    def crash(_target: str, _replicas: int) -> None:
        raise Crash

    actuator.on_scale = crash
    with pytest.raises(Crash):
        controller.tick()
    pending = controller.state.pending_intent("web")
    assert pending is not None and pending.actuation.status is ActuationStatus.PENDING
    return controller, actuator, pending


def test_regression_an_intent_pending_on_the_old_target_is_abandoned(make, store):
    """It stayed pending, and the next tick completed it against the new target's count."""
    controller, actuator, pending = crashed_mid_actuation(make, store)
    controller.put_policy(web("new"))
    assert controller.state.pending_intent("web") is None
    [abandoned] = [e for e in controller.state.events() if e.id == pending.id]
    assert abandoned.actuation.status is ActuationStatus.FAILED and abandoned.target == pending.target
    assert "abandoned: the policy was re-pointed" in abandoned.actuation.detail
    actuator.on_scale = None
    [event] = controller.tick()
    assert "left pending" not in event.reason and event.actuation.status is ActuationStatus.APPLIED


def test_an_intent_pending_when_its_policy_is_deleted_is_abandoned(make, store):
    """Deleting the policy dropped the intent and left its event `pending` for good."""
    controller, _, pending = crashed_mid_actuation(make, store)
    assert controller.state.delete_policy("web")
    [abandoned] = [e for e in controller.state.events() if e.id == pending.id]
    assert abandoned.actuation.status is ActuationStatus.FAILED
    assert "abandoned: the policy was deleted" in abandoned.actuation.detail


def test_an_intent_pending_when_its_stored_policy_stops_validating_is_abandoned_and_its_cooldown_kept(make, store):
    """No tick decides on a policy that no longer validates (e.g. stored by an older version), so its event stayed
    `pending` for good."""
    controller, actuator, pending = crashed_mid_actuation(make, store)
    started = controller.state.policy_state("web").last_scale_at
    with sqlite3.connect(controller.state.path) as db:
        db.execute("UPDATE policies SET body = ? WHERE name = ?", ("{not json", "web"))
    actuator.on_scale = None
    assert controller.tick() == []
    assert controller.state.pending_intent("web") is None
    [abandoned] = [e for e in controller.state.events() if e.id == pending.id]
    assert abandoned.actuation.status is ActuationStatus.FAILED
    assert "abandoned: the stored policy no longer validates" in abandoned.actuation.detail
    assert controller.state.policy_state("web").last_scale_at == started  # its hold still applies if it is fixed
    controller.tick()  # nothing pending any more: nothing to write
    assert [e for e in controller.state.events() if e.id == pending.id] == [abandoned]


def test_a_repoint_while_the_old_target_is_being_scaled_keeps_its_outcome_off_the_new_target(make, store):
    controller, actuator = make()
    controller.put_policy(web("old"))
    write_power(store, {"n1": 900})
    actuator.on_scale = lambda _target, _replicas: controller.put_policy(web("new"))
    [event] = controller.tick()
    assert event.actuation.status is ActuationStatus.APPLIED and event.target.name == "old"
    assert controller.state.policy_state("web") == PolicyState()  # no cooldown from the old target's change


def test_a_state_that_cannot_abandon_an_invalid_policys_change_still_lets_the_others_act(make, store, monkeypatch):
    controller, actuator = make()
    controller.put_policy(web("old"))
    controller.put_policy(web("other") | {"name": "api"})
    with sqlite3.connect(controller.state.path) as db:
        db.execute("UPDATE policies SET body = ? WHERE name = ?", ("{not json", "web"))

    def locked(*_args):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(controller.state, "abandon_intent", locked)
    write_power(store, {"n1": 900})
    [event] = controller.tick()
    assert event.policy == "api" and event.action is ScaleAction.SCALE_OUT
