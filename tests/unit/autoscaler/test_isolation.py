"""One policy's failure is an event for that policy and the others still tick (issue 10); a stored policy that no
longer validates is reported with its reason and skipped."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import pytest

from autoscaler.schema import ActuationStatus, InvalidStoredPolicy, ScaleAction, ScalingPolicy
from tests.unit.autoscaler.doubles import FixedForecaster, policy_data, write_power

REACTIVE = {"enabled": False}


def by_policy(events):
    return {event.policy: event for event in events}


def test_regression_an_exception_in_one_policy_does_not_abort_the_tick(make, store):
    """Issue 10: an exception in one policy aborted the whole tick (here: a client bug reading one target)."""
    controller, actuator = make()
    controller.put_policy(policy_data(name="broken", predictive_scaling=REACTIVE))
    controller.put_policy(policy_data(name="web", predictive_scaling=REACTIVE))
    actuator.broken = {"broken"}
    write_power(store, {"n1": 950, "n2": 950})
    events = by_policy(controller.tick())
    assert events["web"].action is ScaleAction.SCALE_OUT and actuator.calls == [("web", 3)]
    failed = events["broken"]
    assert failed.action is ScaleAction.HOLD and failed.actuation.status is ActuationStatus.FAILED
    assert "reading the target's replicas failed: RuntimeError: client bug reading broken" in failed.reason
    assert [e.policy for e in controller.state.events(policy="broken")] == ["broken"]  # recorded


def test_an_unexpected_actuator_error_is_that_policy_s_event(make, store):
    controller, actuator = make()
    controller.put_policy(policy_data(name="a-first", predictive_scaling=REACTIVE))
    controller.put_policy(policy_data(name="web", predictive_scaling=REACTIVE))

    def explode(key: str, replicas: int) -> None:
        if key == "a-first":
            raise TypeError("unexpected response")

    actuator.on_scale = explode
    write_power(store, {"n1": 950, "n2": 950})
    events = by_policy(controller.tick())
    assert events["a-first"].actuation.status is ActuationStatus.PENDING  # judged later, as a crash's would be
    assert "TypeError: unexpected response (outcome unknown: the policy holds" in events["a-first"].actuation.detail
    assert events["web"].actuation.status is ActuationStatus.APPLIED


def test_a_forecast_batch_failure_falls_back_to_measured_power_for_each_policy(make, store):
    forecaster = FixedForecaster(upper_watts=1000)
    forecaster.fail = True
    controller, _ = make(forecaster)
    controller.put_policy(policy_data(name="web"))
    controller.put_policy(policy_data(name="api"))
    write_power(store, {"n1": 950, "n2": 950})
    events = controller.tick()
    assert sorted(event.policy for event in events) == ["api", "web"]  # each decided, none lost to the failure
    for event in events:
        assert event.signal == "measured" and event.action is ScaleAction.SCALE_OUT
        assert "forecast failed: ConnectionError: predictor replica died" in event.reason


def test_regression_a_forecaster_that_timed_out_is_named_in_the_reason(make, store, monkeypatch):
    """A timed-out handle call raises TimeoutError(''): the reason read "forecaster not available: " and stopped."""
    forecaster = FixedForecaster(upper_watts=1000)
    monkeypatch.setattr(forecaster, "shape", lambda: (_ for _ in ()).throw(TimeoutError()))
    controller, _ = make(forecaster)
    controller.put_policy(policy_data(name="web"))
    write_power(store, {"n1": 950, "n2": 950})
    [event] = controller.tick()
    assert event.signal == "measured" and "forecaster not available: TimeoutError" in event.reason


def test_a_bad_telemetry_value_is_that_policy_s_event(make, store, monkeypatch):
    controller, _ = make()
    controller.put_policy(policy_data(name="web", predictive_scaling=REACTIVE))
    controller.put_policy(policy_data(name="other", nodes=["n3"], predictive_scaling=REACTIVE))
    write_power(store, {"n1": 950, "n2": 950, "n3": 950})
    latest = store.latest

    def with_a_negative_reading():
        return [n.model_copy(update={"power_watts": -1.0}) if n.node_id == "n3" else n for n in latest()]

    monkeypatch.setattr(store, "latest", with_a_negative_reading)
    events = by_policy(controller.tick())
    assert events["web"].action is ScaleAction.SCALE_OUT
    assert events["other"].action is ScaleAction.HOLD and "reading its telemetry failed" in events["other"].reason


def store_raw(path, name: str, body: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("INSERT OR REPLACE INTO policies VALUES (?, ?, ?)", (name, body, datetime.now(UTC).isoformat()))


def test_regression_an_infinite_budget_already_stored_is_reported_and_skipped(make, store, tmp_path):
    """Issue 10: Infinity was stored as null; from then on listing answered 500 and every tick failed."""
    controller, actuator = make()
    controller.put_policy(policy_data(name="web", predictive_scaling=REACTIVE))
    older = json.loads(ScalingPolicy.model_validate(policy_data(name="infinite")).model_dump_json())
    older["power_based"]["max_power_budget"] = None  # what the old version stored for Infinity
    store_raw(controller.state.path, "infinite", json.dumps(older))
    store_raw(controller.state.path, "garbled", "{not json")
    write_power(store, {"n1": 950, "n2": 950})

    [event] = controller.tick()
    assert event.policy == "web" and event.action is ScaleAction.SCALE_OUT
    stored = controller.state.stored_policies()
    assert [p.name for p in stored.policies] == ["web"]
    assert [(i.name, i.reason.split(":")[0]) for i in stored.invalid] == [
        ("garbled", "(top level)"), ("infinite", "power_based.max_power_budget")]
    assert "Input should be a valid number" in stored.invalid[1].reason
    assert isinstance(stored.invalid[0], InvalidStoredPolicy) and stored.invalid[0].updated_at is not None
    assert controller.state.policy("infinite") is None
    assert controller.state.delete_policy("infinite")  # the operator can clear it by name
    assert [i.name for i in controller.state.invalid_policies()] == ["garbled"]


def web_and_api_with_api_unwritable(make, store, monkeypatch, watts: float, write: str, error: str):
    """Two reactive policies on the nodes at `watts`, the state's `write` method failing with `error` for "api"."""
    controller, actuator = make()
    controller.put_policy(policy_data(name="web", predictive_scaling=REACTIVE))
    controller.put_policy(policy_data(name="api", predictive_scaling=REACTIVE))
    write_power(store, {"n1": watts, "n2": watts})
    written = getattr(controller.state, write)

    def fail_for_api(event, *args, **kwargs):
        if event.policy == "api":
            raise sqlite3.OperationalError(error)
        return written(event, *args, **kwargs)

    monkeypatch.setattr(controller.state, write, fail_for_api)
    return controller, actuator


def test_an_unwritable_state_still_lets_the_other_policies_act(make, store, monkeypatch):
    controller, actuator = web_and_api_with_api_unwritable(make, store, monkeypatch, 950, "record_intent",
                                                           "disk I/O error")
    events = by_policy(controller.tick())
    assert actuator.calls == [("web", 3)]  # api: no intent, so no actuation
    api = events["api"]
    assert api.action is ScaleAction.SCALE_OUT and api.actuation.status is ActuationStatus.FAILED
    assert api.actuation.detail == "not actuated: its intent could not be written: OperationalError: disk I/O error"
    assert api.measured_power_watts == 950 and api.id is not None  # its decision, with its power, is stored
    assert "evaluation failed" not in api.reason


def test_regression_an_event_the_state_cannot_write_is_still_the_ticks(make, store, monkeypatch):
    """A policy whose event, and then its failure's hold, could not be written dropped out of the tick's events, so
    its decision count stopped and its gauges read NaN as if the policy were deleted. Now the hold comes back
    unsaved (id None): the decided hold itself, with its power values and why it was not saved (it was replaced by
    an "evaluation failed" hold without them, whose gauges read NaN for the tick)."""
    controller, _ = web_and_api_with_api_unwritable(make, store, monkeypatch, 500, "record",
                                                    "database or disk is full")
    events = controller.tick()
    assert [event.policy for event in events] == ["api", "web"]
    api, web = events
    assert api.id is None and api.action is ScaleAction.HOLD
    assert api.measured_power_watts == 500 and api.signal == "measured"
    assert "not saved: OperationalError: database or disk is full" in api.reason
    assert "evaluation failed" not in api.reason
    assert web.id is not None and web.action is ScaleAction.HOLD
    assert [event.policy for event in controller.state.events(None, None, 10)] == ["web"]


@pytest.mark.parametrize("kind", ["read", "scale"])
def test_actuation_errors_stay_events_of_their_own(make, store, kind):
    controller, actuator = make()
    controller.put_policy(policy_data(name="web", predictive_scaling=REACTIVE))
    actuator.fail = kind
    write_power(store, {"n1": 950, "n2": 950})
    [event] = controller.tick()
    assert event.actuation.status is ActuationStatus.FAILED


def test_a_stored_state_row_from_another_version_or_broken_does_not_stop_the_ticks(make, store, caplog):
    """An unknown key (a newer version's, after a rollback) or a row edited by hand held its policy for good, and
    failed every tick of the policies sharing its target, since nothing rewrote the row. Now what is known is kept,
    and an unreadable row starts the policy afresh with its cooldown from then (the lost history may hold a change
    just made), logged."""
    controller, _ = make()
    controller.put_policy(policy_data(name="web", predictive_scaling=REACTIVE))
    controller.put_policy(policy_data(name="corrupt", predictive_scaling=REACTIVE))
    write_power(store, {"n1": 500, "n2": 500})
    controller.tick()
    state = controller.state
    with sqlite3.connect(state.path) as db:
        (body,) = db.execute("SELECT body FROM policy_state WHERE name = 'web'").fetchone()
        db.execute("UPDATE policy_state SET body = ? WHERE name = 'web'",
                   (json.dumps({**json.loads(body), "from_a_newer_version": 1}),))
        db.execute("UPDATE policy_state SET body = '{\"last_scale_at\": \"soon\"}' WHERE name = 'corrupt'")
    assert state.policy_state("web").replicas_after == 2  # what it knows is kept
    write_power(store, {"n1": 950, "n2": 950})
    events = by_policy(controller.tick())
    assert events["web"].action is ScaleAction.SCALE_OUT
    assert events["corrupt"].action is ScaleAction.HOLD and "cooldown" in events["corrupt"].reason
    assert "policy corrupt: its stored state cannot be read, so it starts afresh" in caplog.text


def test_a_commit_that_fails_leaves_no_transaction_open(make, monkeypatch):
    """A COMMIT refused (full disk, busy file) kept the transaction open: every later write failed with "cannot
    start a transaction within a transaction" until the actor restarted."""
    controller, _ = make()
    state = controller.state

    class FailingCommit:
        def __init__(self, db):
            self.db, self.failed = db, False

        def execute(self, sql, *args):
            if sql == "COMMIT" and not self.failed:
                self.failed = True
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.db, name)

    monkeypatch.setattr(state, "_db", FailingCommit(state._db))
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        controller.put_policy(policy_data(name="web", predictive_scaling=REACTIVE))
    assert not state._db.in_transaction
    controller.put_policy(policy_data(name="web", predictive_scaling=REACTIVE))  # the next write works
    assert [p.name for p in state.policies()] == ["web"]
