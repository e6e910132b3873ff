"""Intent before actuation (autoscaler/intents.py): the event and the cooldown are durable before the actuator
runs and completed after it, so neither a failed write nor a crash ever scales twice."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from autoscaler.actuators import ActuationError, ActuationOutcomeUnknown
from autoscaler.schema import ActuationStatus, ScaleAction
from autoscaler.state import ControllerState
from tests.unit.autoscaler.doubles import policy_data, write_power

REACTIVE = {"enabled": False}


class Crash(BaseException):
    """The controller process dies here (not an Exception: nothing in the tick may catch it)."""


@pytest.fixture
def clock():
    now = [datetime.now(UTC)]
    return now


def test_the_intent_is_on_disk_before_the_actuator_runs(make, store, clock):
    controller, actuator = make(clock=lambda: clock[0])
    controller.put_policy(policy_data(predictive_scaling=REACTIVE))
    write_power(store, {"n1": 950, "n2": 950})
    seen = {}

    def look(key: str, replicas: int) -> None:
        other = ControllerState(controller.state.path)  # another process's view of the file
        seen["pending"] = other.pending_intent("web")
        seen["cooldown_from"] = other.policy_state("web").last_scale_at
        other.close()

    actuator.on_scale = look
    [event] = controller.tick()
    assert seen["pending"].actuation.status is ActuationStatus.PENDING and seen["pending"].to_replicas == 3
    assert seen["cooldown_from"] == clock[0]
    assert event.id == seen["pending"].id and event.actuation.status is ActuationStatus.APPLIED
    assert controller.state.events()[0] == event and controller.state.pending_intent("web") is None


def test_regression_a_failed_event_write_never_scales_twice(make, store, clock, monkeypatch):
    """Issue 10: the event and cooldown were written after the actuation; when that write failed, the cooldown
    was lost and the next tick scaled again."""
    controller, actuator = make(clock=lambda: clock[0])
    controller.put_policy(policy_data(predictive_scaling=REACTIVE))
    write_power(store, {"n1": 950, "n2": 950})
    actuated = []
    actuator.on_scale = lambda key, replicas: actuated.append(replicas)

    def broken_after_the_actuation(original):
        def write(*args, **kwargs):
            if actuated:
                raise OSError("disk full")
            return original(*args, **kwargs)
        return write

    for method in ("record", "complete"):  # whichever write follows the actuation
        if hasattr(controller.state, method):
            monkeypatch.setattr(controller.state, method, broken_after_the_actuation(getattr(controller.state,
                                                                                             method)))
    with contextlib.suppress(Exception):  # the controller before issue 10 raised here
        controller.tick()
    monkeypatch.undo()
    clock[0] += timedelta(seconds=30)
    [second] = controller.tick()
    assert actuator.calls == [("web", 3)]  # once
    assert second.action is ScaleAction.HOLD and "cooldown" in second.reason
    assert "left pending, completed as applied" in second.reason
    first = controller.state.events(policy="web")[-1]
    assert first.actuation.status is ActuationStatus.APPLIED and "completed later" in \
        first.actuation.detail


def test_a_failed_intent_write_actuates_nothing(make, store, monkeypatch):
    controller, actuator = make()
    controller.put_policy(policy_data(predictive_scaling=REACTIVE))
    write_power(store, {"n1": 950, "n2": 950})

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(controller.state, "record_intent", refuse)
    [event] = controller.tick()
    assert actuator.calls == [] and event.actuation.status is ActuationStatus.FAILED
    assert event.actuation.detail == "not actuated: its intent could not be written: OSError: disk full"
    assert event.action is ScaleAction.SCALE_OUT and event.measured_power_watts == 950  # the decision, stored


def _crash_during_the_actuation(make, store, clock, landed: bool):
    """A controller that dies in its actuator (after its write landed, or before it sent it), and the controller
    restarted on its state file, as the actor's next incarnation is."""
    controller, actuator = make(clock=lambda: clock[0], holder="controller-actor")
    controller.put_policy(policy_data(predictive_scaling=REACTIVE))
    write_power(store, {"n1": 950, "n2": 950})

    def die(key: str, replicas: int) -> None:
        if landed:
            actuator.counts[key] = replicas
        raise Crash

    actuator.on_scale = die
    with pytest.raises(Crash):
        controller.tick()
    return make(replicas=actuator.counts.get("web", 2), clock=lambda: clock[0], holder="controller-actor")


def test_a_change_that_landed_before_a_crash_is_completed_as_applied_and_never_repeated(make, store, clock):
    restarted, after = _crash_during_the_actuation(make, store, clock, landed=True)
    clock[0] += timedelta(seconds=5)
    pending = restarted.state.pending_intent("web")
    [event] = restarted.tick()
    assert after.calls == [] and event.action is ScaleAction.HOLD and "cooldown" in event.reason
    [interrupted] = [e for e in restarted.state.events(policy="web") if e.id == pending.id]
    assert interrupted.actuation.status is ActuationStatus.APPLIED and restarted.state.pending_intent("web") is None


def test_a_change_a_crash_kept_from_landing_is_tried_again_once_its_write_can_no_longer_land(make, store, clock):
    """Until the actuator's write deadline has passed, the write may still land: the policy holds. Then the target,
    still at the count the change started from, was never changed: the event fails and the cooldown its intent
    started is lifted, so the over-budget target is scaled at once, once."""
    restarted, after = _crash_during_the_actuation(make, store, clock, landed=False)
    deadline = after.write_deadline_s
    clock[0] += timedelta(seconds=deadline - 1)
    [waiting] = restarted.tick()
    assert waiting.action is ScaleAction.HOLD and after.calls == [] and waiting.actuation.status is ActuationStatus.NONE
    assert "may still land (the target is at 2, not 3): it is judged in 1 s" in waiting.reason
    interrupted = restarted.state.pending_intent("web")
    assert interrupted is not None
    clock[0] += timedelta(seconds=1)
    [retried] = restarted.tick()
    assert after.calls == [("web", 3)] and retried.actuation.status is ActuationStatus.APPLIED
    assert f"event {interrupted.id}, left pending, completed as failed" in retried.reason
    failed = next(e for e in restarted.state.events(policy="web") if e.id == interrupted.id)
    assert failed.actuation.status is ActuationStatus.FAILED
    assert "the cooldown it started is lifted" in failed.actuation.detail
    clock[0] += timedelta(seconds=5)
    [held] = restarted.tick()  # the retried change's own cooldown holds: scaled once
    assert after.calls == [("web", 3)] and held.action is ScaleAction.HOLD and "cooldown" in held.reason
    assert restarted.state._read("SELECT COUNT(*) FROM intent_prior") == [(0,)]  # dropped with each intent


def test_the_prior_state_is_restored_whole_when_the_cooldown_is_lifted(make, store, clock):
    """All of it but the recommendations (the decision's own stays): an interrupted answer to an outside change
    may answer it again, as the intent had never been."""
    restarted, after = _crash_during_the_actuation(make, store, clock, landed=False)
    interrupted = restarted.state.pending_intent("web")
    record = restarted.state.intent_record(interrupted)
    stored = restarted.state.policy_state("web")
    assert record is not None and stored.last_scale_at is not None and record.prior.last_scale_at is None
    now = clock[0] + timedelta(seconds=after.write_deadline_s)
    _, restored, _ = restarted.enactor._complete_interrupted(interrupted, record, 2, stored, now, fresh=True)
    assert restored == record.prior.model_copy(update={"recent": stored.recent})
    assert restarted.state.policy_state("web") == restored
    _, kept, _ = restarted.enactor._complete_interrupted(interrupted, record, 2, stored, now, fresh=False)
    assert kept == stored  # a count read before the deadline never lifts it


def test_a_restored_state_stamped_after_now_counts_from_now(make, store, clock):
    """A prior state from a clock ahead of this one would hold the retry for as long as the clock is behind."""
    restarted, after = _crash_during_the_actuation(make, store, clock, landed=False)
    interrupted = restarted.state.pending_intent("web")
    record = restarted.state.intent_record(interrupted)
    ahead = record.prior.model_copy(update={"last_scale_at": clock[0] + timedelta(hours=1)})
    now = clock[0] + timedelta(seconds=after.write_deadline_s)
    _, restored, _ = restarted.enactor._complete_interrupted(
        interrupted, replace(record, prior=ahead), 2, restarted.state.policy_state("web"), now, fresh=True)
    assert restored.last_scale_at == now


def test_an_unreadable_count_leaves_an_interrupted_intent_pending_and_says_why(make, store, clock):
    restarted, after = _crash_during_the_actuation(make, store, clock, landed=False)
    interrupted = restarted.state.pending_intent("web")
    clock[0] += timedelta(seconds=after.write_deadline_s)

    def unreadable(target):
        raise ActuationError("Ray dashboard did not answer: timed out")

    after.replicas_now = unreadable
    [event] = restarted.tick()
    assert after.calls == [] and event.actuation.status is ActuationStatus.FAILED
    assert f"the count to judge event {interrupted.id}, left pending, could not be read" \
        in event.reason
    assert restarted.state.pending_intent("web") == interrupted


def test_an_interrupted_intent_whose_completion_cannot_be_written_holds_with_the_decisions_power(
        make, store, clock, monkeypatch):
    """The old intent stays pending (nothing actuated, nothing scaled twice); the hold still carries the tick's
    measured power and what the policy would have done, and the next tick with a writable state completes it."""
    restarted, after = _crash_during_the_actuation(make, store, clock, landed=False)
    interrupted = restarted.state.pending_intent("web")
    clock[0] += timedelta(hours=1)  # past the write deadline and the cooldown the intent started
    write_power(store, {"n1": 950, "n2": 950})

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(restarted.state, "complete", disk_full)
    [held] = restarted.tick()
    assert after.calls == [] and held.action is ScaleAction.HOLD and held.to_replicas == 2
    assert held.measured_power_watts == 950
    assert f"event {interrupted.id}, left pending, could not be completed as failed: " \
        "OSError: disk full" in held.reason
    assert "the interrupted change is not completed yet (would go to 3)" in held.reason
    assert restarted.state.pending_intent("web") == interrupted
    monkeypatch.undo()
    clock[0] += timedelta(seconds=1)
    [retried] = restarted.tick()
    assert after.calls == [("web", 3)] and retried.actuation.status is ActuationStatus.APPLIED
    assert restarted.state.pending_intent("web") is None


def test_a_write_that_lands_during_the_tick_is_judged_on_a_count_read_after_the_deadline(make, store, clock):
    """The tick's count was read before the deadline passed; the write landed since: applied, never retried."""
    restarted, after = _crash_during_the_actuation(make, store, clock, landed=False)
    clock[0] += timedelta(seconds=after.write_deadline_s)
    interrupted = restarted.state.pending_intent("web")
    after.replicas_now = lambda target: 3  # the count right now, past the tick's read of 2
    [event] = restarted.tick()
    assert after.calls == [] and event.action is not ScaleAction.SCALE_OUT
    [completed] = [e for e in restarted.state.events(policy="web") if e.id == interrupted.id]
    assert completed.actuation.status is ActuationStatus.APPLIED
    assert completed.actuation.detail == "completed later: the target is at 3"


def test_a_write_a_target_bound_stopped_short_is_completed_as_applied_at_once(make, store, clock):
    """A KubeRay worker group's maxReplicas stops a 2 -> 4 write at 3: moved towards its count, it landed."""
    restarted, after = _crash_during_the_actuation(make, store, clock, landed=False)
    interrupted = restarted.state.pending_intent("web")
    with restarted.state._write() as db:  # the change as a two-step one
        db.execute("UPDATE events SET body = json_set(body, '$.to_replicas', 4) WHERE id = ?", (interrupted.id,))
    after.counts["web"] = 3
    clock[0] += timedelta(seconds=1)
    [event] = restarted.tick()
    assert event.action is ScaleAction.HOLD and "cooldown" in event.reason
    [completed] = [e for e in restarted.state.events(policy="web") if e.id == interrupted.id]
    assert completed.actuation.status is ActuationStatus.APPLIED and completed.actuation.replicas == 3


def test_an_interrupted_change_seen_with_the_clock_behind_waits_its_deadline_from_then(make, store, clock,
                                                                                      monkeypatch):
    restarted, after = _crash_during_the_actuation(make, store, clock, landed=False)
    monotonic = [1000.0]
    monkeypatch.setattr("autoscaler.intents.time.monotonic", lambda: monotonic[0])
    clock[0] -= timedelta(hours=1)  # the restarted controller's clock is an hour behind the decision's
    [waiting] = restarted.tick()
    assert after.calls == [] and "may still land" in waiting.reason
    assert waiting.actuation.status is ActuationStatus.NONE
    monotonic[0] += after.write_deadline_s
    [retried] = restarted.tick()
    assert after.calls == [("web", 3)] and retried.actuation.status is ActuationStatus.APPLIED


def test_deleting_a_policy_drops_the_prior_state_of_its_pending_intent(make, store, clock):
    restarted, _ = _crash_during_the_actuation(make, store, clock, landed=False)
    assert restarted.state._read("SELECT COUNT(*) FROM intent_prior") == [(1,)]
    assert restarted.state.delete_policy("web")
    assert restarted.state._read("SELECT COUNT(*) FROM intent_prior") == [(0,)]


@pytest.mark.parametrize("case", ["moved by someone else", "intent without its prior state"])
def test_an_interrupted_change_keeps_the_cooldown_where_it_cannot_tell_it_never_landed(make, store, clock, case):
    """A count someone else moved (an operator's change meanwhile), or an intent recorded by a version that kept no
    prior state (whether the cooldown ran before it is not known): the cooldown is kept."""
    restarted, after = _crash_during_the_actuation(make, store, clock, landed=False)
    if case == "moved by someone else":
        after.counts["web"] = 5
    else:
        restarted.state._db.execute("DELETE FROM intent_prior")
    clock[0] += timedelta(seconds=after.write_deadline_s)
    interrupted = restarted.state.pending_intent("web")
    [event] = restarted.tick()
    assert after.calls == [] and event.action is ScaleAction.HOLD and "cooldown" in event.reason
    [completed] = [e for e in restarted.state.events(policy="web") if e.id == interrupted.id]
    assert completed.actuation.detail == f"interrupted before completion: the target is at {after.counts.get('web', 2)}"


def test_a_failed_actuation_completes_the_intent_without_the_cooldown(make, store):
    controller, actuator = make()
    controller.put_policy(policy_data(predictive_scaling=REACTIVE))
    write_power(store, {"n1": 950, "n2": 950})
    actuator.fail = "scale"
    [failed] = controller.tick()
    assert failed.actuation.status is ActuationStatus.FAILED
    assert controller.state.policy_state("web").last_scale_at is None and controller.state.pending_intent("web") is None
    assert [e.actuation.status for e in controller.state.events()] == [ActuationStatus.FAILED]  # one event, completed


@pytest.mark.parametrize("lands", [True, False], ids=["landed", "never-landed"])
def test_a_change_sent_and_not_answered_stays_pending_and_is_judged_as_an_interrupted_one(make, store, clock, lands):
    """A timeout after the write was sent: it may have landed, so the next ticks must not scale again until it is
    judged. Regression: it was failed for good at once with its cooldown kept, though it landed (the event and the
    metric said failed), or though it never did (a full cooldown on an over-budget target, where a crash at the same
    point lifted it once no write could land)."""
    controller, actuator = make(clock=lambda: clock[0])
    controller.put_policy(policy_data(predictive_scaling=REACTIVE))
    write_power(store, {"n1": 950, "n2": 950}, end=clock[0])

    def without_an_answer(key: str, replicas: int) -> None:
        if lands:
            actuator.counts[key] = replicas
        raise ActuationOutcomeUnknown("Ray dashboard POST /x: sent, no answer (timed out): the change may have landed")

    actuator.on_scale = without_an_answer
    [unknown] = controller.tick()
    assert unknown.actuation.status is ActuationStatus.PENDING and "outcome unknown" in unknown.actuation.detail
    [stored] = controller.state.events(policy="web")
    assert stored.actuation == unknown.actuation and controller.state.pending_intent("web") is not None
    actuator.on_scale, actuator.calls = None, []
    clock[0] += timedelta(seconds=5)
    write_power(store, {"n1": 950, "n2": 950}, end=clock[0])
    [held] = controller.tick()  # the power is still high: without the hold it would scale again
    assert held.action is ScaleAction.HOLD and actuator.calls == [], held.reason
    if lands:  # judged at once from the count: applied, and its own cooldown holds
        assert f"event {unknown.id}, left pending, completed as applied" in held.reason and "cooldown" in held.reason
        return
    assert "may still land (the target is at 2, not 3)" in held.reason
    clock[0] += timedelta(seconds=actuator.write_deadline_s)
    write_power(store, {"n1": 950, "n2": 950}, end=clock[0])
    [retried] = controller.tick()  # no write can land any more: failed, its cooldown lifted, the change tried again
    assert f"event {unknown.id}, left pending, completed as failed" in retried.reason
    assert actuator.calls == [("web", 3)] and retried.actuation.status is ActuationStatus.APPLIED


def test_an_unanswered_write_whose_policy_was_deleted_meanwhile_stays_abandoned_not_pending_for_good(make, store):
    """Regression (review): the unanswered write's note wrote "pending" back over the event the delete had completed
    as abandoned, with no intent left for any tick to judge it."""
    controller, actuator = make()
    controller.put_policy(policy_data(predictive_scaling=REACTIVE))
    write_power(store, {"n1": 950, "n2": 950})

    def deleted_while_it_hangs(key: str, replicas: int) -> None:
        controller.state.delete_policy("web")
        raise ActuationOutcomeUnknown("sent, no answer (timed out)")

    actuator.on_scale = deleted_while_it_hangs
    [event] = controller.tick()
    assert event.actuation.status is ActuationStatus.FAILED and "no longer pending" in event.actuation.detail
    [stored] = controller.state.events()
    assert stored.actuation.status is ActuationStatus.FAILED and stored.actuation.detail.startswith("abandoned")


def test_holds_and_dry_runs_need_no_intent(make, store, monkeypatch):
    controller, _ = make()
    controller.put_policy(policy_data(name="dry", mode="dry_run", predictive_scaling=REACTIVE))
    controller.put_policy(policy_data(name="calm", nodes=["n3"], predictive_scaling=REACTIVE))
    write_power(store, {"n1": 950, "n2": 950, "n3": 650})

    def no_intent(*args, **kwargs):
        raise AssertionError("no intent expected")

    monkeypatch.setattr(controller.state, "record_intent", no_intent)
    statuses = {e.policy: e.actuation.status for e in controller.tick()}
    assert statuses == {"dry": ActuationStatus.DRY_RUN, "calm": ActuationStatus.NONE}


def test_the_state_file_syncs_every_commit(tmp_path):
    """An intent recorded before actuating must survive a power loss, not only a process crash (WAL with
    synchronous=NORMAL may roll the last commits back)."""
    state = ControllerState(tmp_path / "state.sqlite")
    try:
        assert state._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        state.close()


def test_a_policy_replaced_during_the_tick_is_not_actuated(make, store, monkeypatch):
    """An operator who switches a policy to dry_run (or to another target) while a tick runs gets no more enforced
    change from the old one: the intent checks the stored policy is still the one decided on."""
    controller, actuator = make()
    controller.put_policy(policy_data(predictive_scaling=REACTIVE))
    write_power(store, {"n1": 950, "n2": 950})
    record = controller.state.record_intent

    def replaced_first(*args, **kwargs):
        controller.put_policy(policy_data(mode="dry_run", predictive_scaling=REACTIVE))
        return record(*args, **kwargs)

    monkeypatch.setattr(controller.state, "record_intent", replaced_first)
    [event] = controller.tick()
    assert actuator.calls == []
    assert event.actuation.status is ActuationStatus.FAILED and "replaced during the tick" in event.actuation.detail
    assert controller.state.policy_state("web").last_scale_at is None  # the new policy's cooldown not started
    monkeypatch.setattr(controller.state, "record_intent", record)
    [dry] = controller.tick()  # the next tick decides on the new policy
    assert dry.actuation.status is ActuationStatus.DRY_RUN and actuator.calls == []


def test_pruning_old_events_keeps_the_event_an_intent_waits_on(tmp_path):
    """Events are pruned to the newest max_events; an intent's event pruned with them left the intent an orphan
    that the next tick could no longer complete."""
    from autoscaler.schema import ActuationResult, ScalingEvent
    from tests.factories import make_policy

    state = ControllerState(tmp_path / "s.sqlite", max_events=10)
    now = datetime.now(UTC)
    policy = make_policy(name="web")
    state.put_policy(policy, now)
    state.acquire_lease("me", now, 60)

    def event(status: ActuationStatus) -> ScalingEvent:
        return ScalingEvent(at=now, policy="web", target=policy.target, action=ScaleAction.SCALE_OUT,
                            from_replicas=2, to_replicas=3, reason="scale_out 2 -> 3", mode="enforce",
                            actuation=ActuationResult(status=status))

    pending = state.record_intent(event(ActuationStatus.PENDING), state.policy_state("web"), policy, "me", now, 60,
                                   prior=state.policy_state("web"))
    with state._write() as db:
        db.execute("UPDATE sqlite_sequence SET seq = 998 WHERE name = 'events'")
    state.record(event(ActuationStatus.NONE))
    state.record(event(ActuationStatus.NONE))  # id 1000: the pruning runs
    assert state.pending_intent("web").id == pending.id
    assert [e.id for e in state.events()] == [1000, 999, pending.id]


def test_an_outcome_written_after_the_lease_changed_hands_leaves_the_intent_for_the_new_holder(tmp_path):
    """Regression (review): completing without the lease dropped the intent and its prior state, so a refused write
    left the cooldown (and the target change every policy on the target holds for) that its intent had started."""
    from autoscaler.schema import ActuationResult, ScalingEvent
    from tests.factories import make_policy

    state = ControllerState(tmp_path / "s.sqlite")
    now = datetime.now(UTC)
    policy = make_policy(name="web")
    state.put_policy(policy, now)
    state.acquire_lease("me", now, 60)
    prior = state.policy_state("web")
    pending = ScalingEvent(at=now, policy="web", target=policy.target, action=ScaleAction.SCALE_OUT, from_replicas=2,
                           to_replicas=3, reason="scale_out 2 -> 3", mode="enforce",
                           actuation=ActuationResult(status=ActuationStatus.PENDING))
    changing = prior.model_copy(update={"last_scale_at": now, "changed_target_at": now})
    stored = state.record_intent(pending, changing, policy, "me", now, 60, prior=prior)
    later = now + timedelta(seconds=61)
    assert state.acquire_lease("other", later, 60).holder == "other"  # the tick outlived its lease
    failed = stored.model_copy(update={"actuation": ActuationResult(status=ActuationStatus.FAILED, detail="409")})
    assert state.complete(failed, prior, holder="me").actuation.status is ActuationStatus.PENDING
    kept = state.pending_intent("web")
    assert kept is not None and kept.id == stored.id and kept.actuation.status is ActuationStatus.PENDING
    assert kept.actuation.detail.startswith("answered failed: 409 after the lease passed to another controller")
    assert state.intent_record(kept).prior == prior  # for the holder to restore once it finds the count unchanged


def test_regression_a_pending_event_that_no_longer_validates_neither_sticks_nor_blocks_deletion(tmp_path):
    """A pending event stored by another version (a field it no longer has) raised at every read: each tick of the
    policy was an "evaluation failed" hold, and deleting the policy failed too."""
    from autoscaler.schema import ActuationResult, ScalingEvent
    from tests.factories import make_policy

    state = ControllerState(tmp_path / "s.sqlite")
    now = datetime.now(UTC)
    policy = make_policy(name="web")
    state.put_policy(policy, now)
    state.acquire_lease("me", now, 60)
    pending = ScalingEvent(at=now, policy="web", target=policy.target, action=ScaleAction.SCALE_OUT, from_replicas=2,
                           to_replicas=3, reason="scale_out 2 -> 3", mode="enforce",
                           actuation=ActuationResult(status=ActuationStatus.PENDING))
    changing = state.policy_state("web").model_copy(update={"last_scale_at": now})
    stored = state.record_intent(pending, changing, policy, "me", now, 60, prior=state.policy_state("web"))
    with state._write() as db:
        db.execute("UPDATE events SET body = json_set(body, '$.from_a_later_version', 1) WHERE id = ?", (stored.id,))
    assert state.pending_intent("web") is None and state.pending_intent("web") is None
    [(body,)] = state._read("SELECT body FROM events WHERE id = ?", (stored.id,))
    assert '"status":"failed"' in body and "another version" in body  # no longer pending, for a version that reads it
    assert state.policy_state("web").last_scale_at == now  # the cooldown it started holds
    assert state.delete_policy("web")


def test_an_interrupted_intent_is_judged_on_the_count_read_not_one_an_earlier_policy_set_since(make, store, clock):
    """b-web's 2 -> 4 landed before the crash; after the restart a-web (earlier by name) raised the target to 8 in
    the same tick, and b-web's intent was completed as failed: "the target is at 8"."""
    controller, actuator = make(clock=lambda: clock[0], holder="controller-actor")
    target, quick = {"kind": "deployment", "name": "web"}, {"cooldown_period": "30s"}
    for name, node in (("a-web", "n1"), ("b-web", "n2")):
        controller.put_policy(policy_data(name, target=target, nodes=[node], predictive_scaling=REACTIVE,
                                          max_replicas=20, power_based=quick))
    write_power(store, {"n1": 500, "n2": 950}, end=clock[0])

    def die(key: str, replicas: int) -> None:
        actuator.counts[key] = replicas
        raise Crash

    actuator.on_scale = die
    with pytest.raises(Crash):
        controller.tick()
    assert actuator.counts["web"] == 3 and controller.state.pending_intent("b-web") is not None
    restarted, _ = make(replicas=3, clock=lambda: clock[0], holder="controller-actor")
    clock[0] += timedelta(seconds=60)  # past b-web's hold: a-web may raise the target at once
    write_power(store, {"n1": 1500, "n2": 500}, minutes=1, end=clock[0])
    a, b = restarted.tick()
    assert a.action is ScaleAction.SCALE_OUT and a.to_replicas > 3, a.reason
    assert "completed as applied" in b.reason, b.reason
    [interrupted] = [e for e in restarted.state.events(policy="b-web") if e.action is ScaleAction.SCALE_OUT]
    assert interrupted.actuation.status is ActuationStatus.APPLIED
    assert "the target is at 3" in interrupted.actuation.detail


def test_a_state_file_whose_intent_table_lacks_a_later_column_is_upgraded_at_open(tmp_path):
    """Regression: versions of 2026-12-05 created intent_prior without recorded_at; CREATE TABLE IF NOT EXISTS never
    added it, so every intent write failed ("3 columns but 4 values") and no enforced change was actuated again."""
    import sqlite3

    path = tmp_path / "autoscaler.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE intent_prior (name TEXT PRIMARY KEY, event_id INTEGER NOT NULL, body TEXT NOT NULL)")
        db.execute("INSERT INTO intent_prior VALUES ('web', 7, '{}')")
        db.commit()
    state = ControllerState(path)
    columns = [row[1] for row in state._db.execute("PRAGMA table_info(intent_prior)")]
    assert columns == ["name", "event_id", "body", "recorded_at"]
    state.close()
    ControllerState(path).close()  # opened again: nothing to add, no error


def test_a_hold_on_power_read_before_the_last_change_asks_for_its_count_and_only_a_hold_on_no_reading_is_blind():
    """Review: such a hold has no recommendation (the stabilization window keeps nothing of it) but did read power;
    taken for blind, it would stop another policy's scale-in on the shared target as "cannot decide"."""
    from autoscaler.intents import _asked
    from autoscaler.schema import ScalingDecision
    from tests.factories import make_policy

    policy = make_policy(name="a")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    before = ScalingDecision(action=ScaleAction.HOLD, from_replicas=8, to_replicas=8, recommended_replicas=None,
                             reason="hold at 8: the power was read 30 s before ...", measured_share=45.0, at=at,
                             signal="measured")
    assert (_asked(policy, before).count, _asked(policy, before).lower) == (8, False)
    blind = before.model_copy(update={"measured_share": None, "reason": "hold at 8: telemetry stale"})
    assert _asked(policy, blind).count is None
