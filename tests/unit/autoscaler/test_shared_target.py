"""Two policies on one target within one tick: each write sets an absolute count, so a later policy decides from
the count an earlier one set (autoscaler/intents.py `TickCounts`), with its power (read before that change)
re-spread over it, and never lowers a count raised in the same tick. A scale-in waits until every policy that
scales the target has asked: the last of them lowers it once, to the most any asks for, and none while one asks
for no fewer or cannot decide, so a target is never lowered and raised again in one tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from autoscaler import intents
from autoscaler.actuators import ActuationError, ActuationOutcomeUnknown
from autoscaler.intents import PolicyTurn, TickCounts
from autoscaler.schema import ActuationStatus, ScaleAction, ScalingPolicy
from tests.unit.autoscaler import doubles
from tests.unit.autoscaler.doubles import write_power

TARGET = {"kind": "deployment", "name": "web"}
MEASURED = {"enabled": False}
NO_WINDOW = {"scale_down": {"stabilization_window": 0}}


def policy_data(name: str, **fields):
    """doubles.policy_data without a scale-down stabilization window: these tests are about the policies of one
    tick, and the window would hold a scale-in at a policy's first tick (it keeps the count the policy found)."""
    return doubles.policy_data(name, **{"behavior": NO_WINDOW, **fields})


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
    assert a.actuation.status in (ActuationStatus.PENDING, ActuationStatus.FAILED, ActuationStatus.DRY_RUN)
    assert (b.action, b.from_replicas) == (ScaleAction.HOLD, seen), b.reason


def test_a_later_policy_s_refusal_names_the_unanswered_write_not_someone_else(pair):
    """a-hot's 4 -> 8 was sent and never answered, and did not land: b-other decided from 8, read 4 before its write,
    and its event blamed "someone else" for what may be this controller's own unlanded write."""
    controller, actuator = pair(b_watts=1800)

    def unanswered(_target: str, replicas: int) -> None:
        if replicas == 8:
            raise ActuationOutcomeUnknown("sent, no answer")

    actuator.on_scale = unanswered
    a, b = controller.tick()
    assert "outcome unknown" in a.actuation.detail and actuator.counts.get("web", 4) == 4
    assert b.action is ScaleAction.SCALE_OUT and b.actuation.status is ActuationStatus.FAILED, b.reason
    assert ("not changed: the target is at 4 replicas, not the 8 this decision was made at (policy a-hot's write "
            "earlier in this tick was never answered: it may not have landed)") in b.actuation.detail
    assert "someone else" not in b.actuation.detail


# --- a scale-in is shared: the target is lowered once a tick, after every policy on it has asked --------------


@pytest.fixture
def at_eight(make, store):
    """a-first (node n1) sorts before b-last (node n2): enforced measured-power policies (80/50 %) on one target at
    8 replicas; `b` overrides b-last's policy fields."""
    def build(a_watts: float, b_watts: float | None, **b):
        controller, actuator = make(replicas=8)
        controller.put_policy(policy_data("a-first", target=TARGET, nodes=["n1"], predictive_scaling=MEASURED))
        controller.put_policy(policy_data("b-last", **{"target": TARGET, "nodes": ["n2"],
                                                       "predictive_scaling": MEASURED, **b}))
        write_power(store, {"n1": a_watts} | ({} if b_watts is None else {"n2": b_watts}))
        return controller, actuator
    return build


LEFT_TO_B = "policy b-last decides on this target later in this tick"


@pytest.mark.parametrize(("b_watts", "b_action", "calls"), [
    pytest.param(700, ScaleAction.HOLD, [], id="b-holds-in-its-band-was-8-2-6"),
    pytest.param(900, ScaleAction.SCALE_OUT, [("web", 9)], id="b-raises-was-8-2-6"),
])
def test_regression_a_scale_in_is_never_undone_by_a_later_policy_in_the_same_tick(at_eight, b_watts, b_action,
                                                                                  calls):
    """a-first lowered 8 -> 2 at once; b-last, deciding from 2 (its power re-spread: 280 % or 360 %), raised the
    target again in the same tick, to 6 (its step limit): two actuations, four replicas stopped and started again,
    and b-last's nodes still over its threshold. Now a-first's scale-in waits for b-last, which asks for 8 or 9: the
    target is not lowered."""
    controller, actuator = at_eight(a_watts=100, b_watts=b_watts)
    a, b = controller.tick()
    assert (a.action, a.from_replicas, a.to_replicas) == (ScaleAction.HOLD, 8, 8), a.reason
    assert LEFT_TO_B in a.reason and "(would go to 2)" in a.reason
    assert (b.action, b.from_replicas) == (b_action, 8), b.reason
    assert "the scale-in asked for earlier in this tick (policy a-first to 2) is not carried out" in b.reason
    assert actuator.calls == calls


def test_regression_two_scale_ins_are_one_actuation_to_the_higher_count(at_eight):
    """a-first lowered 8 -> 2, then b-last (120 % once re-spread over 2) raised it to 3. Both ask for fewer: the last
    lowers the target once, to the higher count (b-last's 4)."""
    controller, actuator = at_eight(a_watts=100, b_watts=300)
    a, b = controller.tick()
    assert (a.action, a.to_replicas) == (ScaleAction.HOLD, 8) and LEFT_TO_B in a.reason, a.reason
    assert (b.action, b.from_replicas, b.to_replicas) == (ScaleAction.SCALE_IN, 8, 4), b.reason
    assert "it carries out the scale-in asked for earlier in this tick (policy a-first to 2)" in b.reason
    assert actuator.calls == [("web", 4)]
    a, b = controller.tick()  # b-last's cooldown holds 4, so a-first's next scale-in is not carried out either
    assert "lowered outside" not in a.reason and (b.action, b.to_replicas) == (ScaleAction.HOLD, 4), b.reason
    assert actuator.calls == [("web", 4)]


def test_regression_a_later_scale_in_goes_no_lower_than_an_earlier_policy_asks(at_eight):
    """a-first lowered 8 -> 4, then b-last (its 10 % re-spread over 4: 20 %) lowered again to 2, under a-first's
    load: a-first asks for 4, so the target goes to 4 once."""
    controller, actuator = at_eight(a_watts=300, b_watts=100)
    a, b = controller.tick()
    assert (a.action, a.to_replicas) == (ScaleAction.HOLD, 8) and "(would go to 4)" in a.reason, a.reason
    assert (b.action, b.from_replicas, b.to_replicas) == (ScaleAction.SCALE_IN, 8, 4), b.reason
    assert "policy a-first asks for 4 in this tick" in b.reason and "(would go to 2)" in b.reason
    assert actuator.calls == [("web", 4)]


def test_regression_a_scale_in_holds_while_an_earlier_policy_needs_the_count(at_eight):
    """a-first holds at 8 (70 %, in its band); b-last lowered 8 -> 2, putting a-first's load at 280 % per node."""
    controller, actuator = at_eight(a_watts=700, b_watts=100)
    a, b = controller.tick()
    assert a.action is ScaleAction.HOLD, a.reason
    assert (b.action, b.to_replicas) == (ScaleAction.HOLD, 8), b.reason
    assert "policy a-first asks for 8 in this tick" in b.reason and "(would go to 2)" in b.reason
    assert actuator.calls == []


def test_regression_a_target_is_not_lowered_while_one_of_its_policies_cannot_decide(at_eight):
    """b-last has no telemetry for its node: it cannot tell whether 2 replicas would overload it."""
    controller, actuator = at_eight(a_watts=100, b_watts=None)
    a, b = controller.tick()
    assert a.action is ScaleAction.HOLD and LEFT_TO_B in a.reason, a.reason
    assert b.action is ScaleAction.HOLD and "no power telemetry for node(s) n2" in b.reason, b.reason
    assert "(policy a-first to 2) is not carried out: this policy cannot decide" in b.reason
    assert actuator.calls == []


def test_a_failed_turn_stops_the_scale_in_left_to_it(at_eight, monkeypatch):
    controller, actuator = at_eight(a_watts=100, b_watts=300)

    def decide(policy, *args):
        if policy.name == "b-last":
            raise RuntimeError("a bug")
        return real(policy, *args)

    real = intents.decide
    monkeypatch.setattr(intents, "decide", decide)
    a, b = controller.tick()
    assert b.actuation.status is ActuationStatus.FAILED and "evaluation failed" in b.reason, b.reason
    assert "(policy a-first to 2) is not carried out: this policy cannot decide" in b.reason
    assert actuator.calls == []


def test_every_earlier_scale_in_waits_for_the_last_policy_and_bounds_it(at_eight, store):
    """a-first asks for 2 and b-last for 4: both hold, naming c-third, which lowers the target once to 4."""
    controller, actuator = at_eight(a_watts=100, b_watts=300)
    controller.put_policy(policy_data("c-third", target=TARGET, nodes=["n3"], predictive_scaling=MEASURED))
    write_power(store, {"n3": 100})
    a, b, c = controller.tick()
    for held in (a, b):
        assert held.action is ScaleAction.HOLD and "policy c-third decides on this target later" in held.reason
    assert (c.action, c.from_replicas, c.to_replicas) == (ScaleAction.SCALE_IN, 8, 4), c.reason
    assert "policy b-last asks for 4 in this tick" in c.reason
    assert actuator.calls == [("web", 4)]


@pytest.mark.parametrize("b_policy", [
    pytest.param({"mode": "dry_run"}, id="dry-run"),
    pytest.param({"power_based": {"enabled": False}}, id="power-based-scaling-disabled"),
])
def test_a_policy_that_never_scales_the_target_has_no_say(at_eight, b_policy):
    controller, actuator = at_eight(a_watts=100, b_watts=700, **b_policy)
    a, b = controller.tick()
    assert (a.action, a.from_replicas, a.to_replicas) == (ScaleAction.SCALE_IN, 8, 2), a.reason
    assert "not carried out" not in b.reason
    assert actuator.calls == [("web", 2)]


@pytest.mark.parametrize("stored_before", [
    pytest.param(None, id="created-during-the-tick"),
    pytest.param("dry_run", id="switched-to-enforce-during-the-tick"),
])
def test_regression_a_policy_stored_during_the_tick_is_not_left_a_scale_in(at_eight, monkeypatch, stored_before):
    """c-late was stored (enforced, on the same target) after the tick had read the policies: b-last's scale-in was
    left to c-late, which does not decide in this tick, so it was lost and its event named c-late falsely."""
    controller, actuator = at_eight(a_watts=100, b_watts=300)
    late = policy_data("c-late", target=TARGET, nodes=["n3"], predictive_scaling=MEASURED)
    if stored_before is not None:
        controller.put_policy({**late, "mode": stored_before})
    read = controller.state.stored_policies

    def read_then_store():
        stored = read()
        controller.put_policy(late)
        return stored

    monkeypatch.setattr(controller.state, "stored_policies", read_then_store)
    a, b, *_ = controller.tick()
    assert (a.action, a.to_replicas) == (ScaleAction.HOLD, 8) and LEFT_TO_B in a.reason, a.reason
    assert (b.action, b.from_replicas, b.to_replicas) == (ScaleAction.SCALE_IN, 8, 4), b.reason
    assert "c-late" not in b.reason
    assert actuator.calls == [("web", 4)]


def test_regression_a_single_policy_scale_in_does_not_read_the_stored_policies(make, store, monkeypatch):
    """Each scale-in re-read every stored policy to find the last on its target: when that read failed, even a
    target only one policy scales got a failed event instead of its scale-in."""
    controller, actuator = make(replicas=8)
    controller.put_policy(policy_data("a-only", target=TARGET, nodes=["n1"], predictive_scaling=MEASURED))
    write_power(store, {"n1": 100})

    def broken():
        raise RuntimeError("database is locked")

    monkeypatch.setattr(controller.state, "policies", broken)
    [event] = controller.tick()
    assert (event.action, event.from_replicas, event.to_replicas) == (ScaleAction.SCALE_IN, 8, 2), event.reason
    assert event.actuation.status is ActuationStatus.APPLIED
    assert actuator.calls == [("web", 2)]


def test_each_turn_is_handed_the_last_later_turn_that_scales_its_target():
    """Only the tick's own turns count, in the order they are acted on; a dry run or another target has no say."""
    def turn(name: str, mode: str = "enforce", target: dict = TARGET) -> PolicyTurn:
        return PolicyTurn(ScalingPolicy.model_validate(policy_data(name, target=target, mode=mode)), [])

    turns = [turn("a"), turn("b", "dry_run"), turn("c"), turn("d", target={"kind": "deployment", "name": "api"}),
             turn("e", "dry_run")]
    counts = TickCounts(turns)
    for each in turns:
        counts.follow(each)
    assert [each.later for each in turns] == ["c", "c", None, None, None]


# --- across ticks: one policy's change holds the others on the target ---------------------------------------------


def test_a_change_one_policy_made_holds_the_others_on_the_target_at_the_next_ticks(make, store):
    """Both policies see the nodes at 150 %. a-mean scaled 2 -> 4; 30 s later b-max, whose own cooldown had never
    started, scaled 4 -> 8 on power that did not show a-mean's change yet (either policy alone holds at 4)."""
    clock = [datetime.now(UTC)]
    controller, actuator = make(replicas=2, clock=lambda: clock[0])
    for name, aggregation in (("a-mean", "mean"), ("b-max", "max")):
        controller.put_policy(policy_data(name, target=TARGET, aggregation=aggregation, predictive_scaling=MEASURED,
                                          actuation_delay="2min", max_replicas=20,
                                          power_based={"max_power_budget": 1000}))
    write_power(store, {"n1": 1500, "n2": 1500}, end=clock[0])
    first = controller.tick()
    assert [(e.action, e.to_replicas) for e in first] == [(ScaleAction.SCALE_OUT, 4), (ScaleAction.HOLD, 4)]
    clock[0] += timedelta(seconds=30)
    write_power(store, {"n1": 1500, "n2": 1500}, minutes=1, end=clock[0])
    a, b = controller.tick()
    assert (a.action, b.action) == (ScaleAction.HOLD, ScaleAction.HOLD), b.reason
    assert "policy a-mean changed the target 30 s ago: its hold applies to this policy too" in b.reason
    assert "cooldown" in b.reason and "lowered outside" not in b.reason
    assert actuator.calls == [("web", 4)]
    clock[0] += timedelta(seconds=300)  # the hold over: b-max decides on power that shows the change
    write_power(store, {"n1": 1500, "n2": 1500}, minutes=1, end=clock[0])
    assert [e.action for e in controller.tick()] == [ScaleAction.SCALE_OUT, ScaleAction.HOLD]


@pytest.mark.parametrize("replaced", ["renamed", "deleted-and-created-again", "made-a-dry-run", "partner-left",
                                      "created-again-in-a-state-file-started-afresh"])
def test_a_policy_that_takes_a_target_over_holds_for_the_change_its_former_policy_made(make, store, replaced):
    """Regression: the cooldown lived with the policy's name, so renaming a policy (or deleting it and creating it
    again, or making it a dry run beside a new one, or deleting it beside a partner) right after it scaled the target
    let the policy left enforcing scale again on power that did not show the change. In a state file started afresh
    (a damaged one set aside a month before), a policy without a stored state reads a change at that moment: it was
    taken for the policy that made the recorded change, and not held (review)."""
    clock = [datetime.now(UTC)]
    controller, actuator = make(replicas=2, clock=lambda: clock[0])
    if replaced == "created-again-in-a-state-file-started-afresh":
        controller.state._started_afresh = clock[0] - timedelta(days=30)
    policy = dict(target=TARGET, predictive_scaling=MEASURED, actuation_delay="2min", max_replicas=20,
                  power_based={"max_power_budget": 1000})
    controller.put_policy(policy_data("a-old", **policy))
    if replaced == "partner-left":
        controller.put_policy(policy_data("b-new", **policy))
    write_power(store, {"n1": 1500, "n2": 1500}, end=clock[0])
    assert controller.tick()[0].action is ScaleAction.SCALE_OUT and actuator.calls == [("web", 4)]
    if replaced == "made-a-dry-run":
        controller.put_policy(policy_data("a-old", **{**policy, "mode": "dry_run"}))
    else:
        controller.state.delete_policy("a-old")
    if replaced != "partner-left":
        again = replaced in ("deleted-and-created-again", "created-again-in-a-state-file-started-afresh")
        controller.put_policy(policy_data("a-old" if again else "b-new", **policy))
    clock[0] += timedelta(seconds=30)
    write_power(store, {"n1": 1500, "n2": 1500}, minutes=1, end=clock[0])
    [held] = [event for event in controller.tick() if event.mode == "enforce"]
    assert held.action is ScaleAction.HOLD and "changed the target 30 s ago" in held.reason, held.reason
    clock[0] += timedelta(seconds=60)  # the whole hold, not only its first tick (review)
    write_power(store, {"n1": 1500, "n2": 1500}, minutes=1, end=clock[0])
    [still] = [event for event in controller.tick() if event.mode == "enforce"]
    assert still.action is ScaleAction.HOLD and "changed the target 90 s ago" in still.reason, still.reason
    assert actuator.calls == [("web", 4)]
    clock[0] += timedelta(seconds=240)
    write_power(store, {"n1": 1500, "n2": 1500}, minutes=1, end=clock[0])
    [again] = [event for event in controller.tick() if event.mode == "enforce"]
    assert again.action is ScaleAction.SCALE_OUT and actuator.calls == [("web", 4), ("web", 8)]


def test_a_change_that_failed_holds_no_policy_that_takes_the_target_over(make, store):
    """A refused write changed nothing: the policy's cooldown is lifted, and the target's recorded change with it."""
    clock = [datetime.now(UTC)]
    controller, actuator = make(replicas=2, clock=lambda: clock[0])
    policy = dict(target=TARGET, predictive_scaling=MEASURED, max_replicas=20, power_based={"max_power_budget": 1000})
    controller.put_policy(policy_data("a-old", **policy))
    write_power(store, {"n1": 1500, "n2": 1500}, end=clock[0])
    actuator.fail = "scale"
    assert controller.tick()[0].actuation.status is ActuationStatus.FAILED
    actuator.fail = None
    controller.state.delete_policy("a-old")
    controller.put_policy(policy_data("b-new", **policy))
    clock[0] += timedelta(seconds=30)
    write_power(store, {"n1": 1500, "n2": 1500}, minutes=1, end=clock[0])
    [event] = controller.tick()
    assert event.action is ScaleAction.SCALE_OUT and actuator.calls == [("web", 4)], event.reason


def test_a_failed_change_gives_the_target_back_the_change_it_replaced_not_none(tmp_path):
    """Regression (review): taking a failed change back deleted the row, losing an earlier real change by another
    policy, which then held nobody once that policy was deleted."""
    from autoscaler import state as state_module
    from autoscaler.schema import ActuationResult, ScalingEvent

    state = state_module.ControllerState(tmp_path / "state.sqlite")
    target = ScalingPolicy.model_validate(policy_data("x", target=TARGET)).target
    first, second = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
    failed = ScalingEvent(at=second, policy="y", target=target, action=ScaleAction.SCALE_OUT, from_replicas=2,
                          to_replicas=4, reason="r", mode="enforce",
                          actuation=ActuationResult(status=ActuationStatus.FAILED, detail="forbidden (403)"))
    try:
        with state._write() as db:
            state_module._note_target_change(db, target, "x", first)
            state_module._note_target_change(db, target, "y", second)
        assert state.target_change(target) == (second, "y")
        with state._write() as db:
            state_module._take_back_target_change(db, failed)
        assert state.target_change(target) == (first, "x")
    finally:
        state.close()


def test_a_dry_run_policy_s_would_be_change_holds_no_other(make, store):
    clock = [datetime.now(UTC)]
    controller, actuator = make(replicas=2, clock=lambda: clock[0])
    controller.put_policy(policy_data("a-dry", target=TARGET, mode="dry_run", predictive_scaling=MEASURED))
    controller.put_policy(policy_data("b-real", target=TARGET, predictive_scaling=MEASURED, max_replicas=20))
    write_power(store, {"n1": 500, "n2": 500}, end=clock[0])
    controller.tick()  # both at 50 %: a-dry would hold too; nothing changes
    clock[0] += timedelta(seconds=30)
    write_power(store, {"n1": 15000, "n2": 15000}, minutes=1, end=clock[0])
    a, b = controller.tick()
    assert a.actuation.status is ActuationStatus.DRY_RUN and b.action is ScaleAction.SCALE_OUT, b.reason
    clock[0] += timedelta(seconds=30)
    write_power(store, {"n1": 40000, "n2": 40000}, minutes=1, end=clock[0])
    _, b = controller.tick()  # a-dry "scaled" at the tick before: no hold on b-real from that
    assert "a-dry changed the target" not in b.reason


# --- the count is read again right before the write --------------------------------------------------------------


def on_the_read_before_the_write(actuator, act) -> None:
    """`act()` runs at the tick's second read of the target's count: the one right before the write."""
    read, reads = actuator.replicas, []

    def replicas(target):
        reads.append(target)
        if len(reads) == 2:
            act()
        return read(target)

    actuator.replicas = replicas


def test_a_count_someone_else_changed_during_the_tick_is_not_written_over(make, store):
    """An operator scaled the target to 10 while the tick forecast: the tick's write of 4 (decided at 2) lowered it
    to 4 under a "scale_out" event, past every scale-in rule."""
    controller, actuator = make(replicas=2)
    controller.put_policy(policy_data("web", target=TARGET, predictive_scaling=MEASURED, max_replicas=20))
    write_power(store, {"n1": 1500, "n2": 1500})
    on_the_read_before_the_write(actuator, lambda: actuator.counts.update(web=10))  # an operator scales meanwhile
    (event,) = controller.tick()
    assert event.action is ScaleAction.SCALE_OUT and event.actuation.status is ActuationStatus.FAILED
    assert "not changed: the target is at 10 replicas, not the 2 this decision was made at" in event.actuation.detail
    assert actuator.calls == [] and actuator.counts["web"] == 10
    assert controller.state.policy_state("web").last_scale_at is None  # refused: no cooldown


def test_a_failed_read_before_the_write_is_a_plain_failure_with_no_cooldown(make, store):
    """Nothing is sent when the read right before the write fails, whatever its error type: it was taken for a
    write of unknown outcome, which kept the cooldown for a change never made."""
    controller, actuator = make(replicas=2)
    controller.put_policy(policy_data("web", target=TARGET, predictive_scaling=MEASURED, max_replicas=20))
    write_power(store, {"n1": 1500, "n2": 1500})

    def fails():
        raise KeyError("status")  # a client library's own error, not an ActuationError

    on_the_read_before_the_write(actuator, fails)
    (event,) = controller.tick()
    assert event.action is ScaleAction.SCALE_OUT and event.actuation.status is ActuationStatus.FAILED
    assert "reading the count before the write failed" in event.actuation.detail
    assert "outcome unknown" not in event.actuation.detail
    assert actuator.calls == [] and controller.state.policy_state("web").last_scale_at is None


def test_a_hold_borrowed_from_another_policy_is_not_stored_as_this_one_s_change(make, store):
    """With three policies, c named b as the one that changed the target: b had stored a-first's change time as its
    own while it held."""
    clock = [datetime.now(UTC)]
    controller, _ = make(replicas=2, clock=lambda: clock[0])
    for name in ("a-first", "b-second", "c-third"):
        controller.put_policy(policy_data(name, target=TARGET, predictive_scaling=MEASURED, max_replicas=20,
                                          power_based={"max_power_budget": 1000}))
    write_power(store, {"n1": 1500, "n2": 1500}, end=clock[0])
    controller.tick()  # a-first scales out, the others hold in the same tick
    assert controller.state.policy_state("b-second").last_scale_at is None
    clock[0] += timedelta(seconds=30)
    write_power(store, {"n1": 1500, "n2": 1500}, minutes=1, end=clock[0])
    _, b, c = controller.tick()
    assert "policy a-first changed the target 30 s ago" in b.reason and "policy a-first changed" in c.reason
    assert controller.state.policy_state("c-third").last_scale_at is None


def test_a_would_be_change_of_a_dry_run_holds_no_one_after_the_policy_is_enforced(make, store):
    """A dry run's would-be change restarts its own cooldown clock, which a mode change keeps: read as the time it
    changed the target, it held the other policies for a change that never happened."""
    clock = [datetime.now(UTC)]
    controller, actuator = make(replicas=2, clock=lambda: clock[0])
    controller.put_policy(policy_data("a-trial", target=TARGET, mode="dry_run", predictive_scaling=MEASURED,
                                      max_replicas=20, power_based={"max_power_budget": 1000}))
    controller.put_policy(policy_data("b-live", target=TARGET, predictive_scaling=MEASURED, max_replicas=20,
                                      power_based={"max_power_budget": 1000, "scale_out_threshold": 95}))
    write_power(store, {"n1": 900, "n2": 900}, end=clock[0])
    a, _ = controller.tick()  # 90 %: a-trial would scale out, b-live (95 %) holds
    assert a.actuation.status is ActuationStatus.DRY_RUN and a.action is ScaleAction.SCALE_OUT
    controller.put_policy(policy_data("a-trial", target=TARGET, predictive_scaling=MEASURED, max_replicas=20,
                                      power_based={"max_power_budget": 1000, "scale_out_threshold": 99}))
    clock[0] += timedelta(seconds=30)
    write_power(store, {"n1": 970, "n2": 970}, minutes=1, end=clock[0])
    a, b = controller.tick()  # a-trial (99 %) holds; b-live (95 %) is held by nobody
    assert "changed the target" not in b.reason and b.action is ScaleAction.SCALE_OUT, b.reason
