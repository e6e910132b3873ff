"""One policy's decision carried out: decide, record the intent, actuate, complete; every outcome is one event.

Intent before actuation, so that neither a crash nor a failed write ever scales twice:

1. A hold or a dry-run change needs no actuation: its event and the policy's new state (a dry-run change
   restarts the cooldown, as an applied one would) are written in one transaction.
2. An enforced change is first written as an *intent*, in one transaction and only while this controller holds
   the lease (renewing it, so a long tick never outlives its own lease): the event with actuation status
   `pending`, the policy's state with the cooldown clock started, and an intent row. If that write fails (or the
   lease is gone, or the policy was deleted), nothing is actuated.
3. Then the actuator runs, and the intent is *completed* in one transaction: the same event (same id) with
   status `applied` or `failed`, the intent row dropped, and, when the actuation failed, the state written with
   the cooldown clock as it was before, because nothing changed and the next tick may try again at once. A
   controller that lost the lease meanwhile completes nothing: the event stays pending (the answer in its detail)
   and the lease holder judges the intent as in 4. A
   change sent and not answered (`ActuationOutcomeUnknown`, a timeout) or an unexpected error is not completed:
   whether it landed cannot be known yet, so its intent stays (its event says why), as in 4.
4. If the write was not answered, the completion write fails, or the controller dies between 2 and 3, the intent
   stays: the cooldown clock
   stays started, so the next ticks hold instead of scaling again. A tick that reads the target at the intended
   count (or moved towards it: a target's bound stops a write short) completes the old event as `applied`.
   Otherwise the policy holds (a `none` hold that says why) until the actuator's `write_deadline_s` has passed
   since the intent was recorded, when no write sent for it can land any more; then the count is read again and
   the event is `failed` (interrupted). A target still at the count the change started from was never changed:
   the policy's state before the intent (kept with it) is restored, its cooldown with it, so an over-budget target
   is scaled again at once rather than a whole cooldown later. The cooldown is kept at any other count (someone
   else changed it), where an earlier policy of the tick changed the target (its count is not the one to judge
   by), and for an intent stored by a version that kept no prior state. Where that completion cannot be written
   either, the intent stays for the next tick and the policy holds, its event still carrying the tick's power and
   what the policy would have done.

An exception anywhere in one policy's turn becomes a `failed` hold event for that policy (logged with its
traceback); the other policies' turns go on. Every write sets an absolute count, so a policy on a target that an
earlier policy of the tick changed (applied, or of unknown outcome) decides from that count, with its power, read
before that change, re-spread over it (`TickCounts`).

The policies that scale one target (enforced, power-based scaling enabled) share it as a Kubernetes HPA shares one
among its metrics: a raise is carried out at once, a scale-in only once every one of them has asked. The tick takes
policies by name: an earlier one's scale-in is a hold that names the last of them among the tick's own turns (the
policies as the tick read them: one stored, deleted or changed during the tick counts from the next tick), and that
last one lowers the target once, to the most any of them asks for (a hold asks for the count it holds at). No
scale-in goes through while one of them asks for no fewer replicas or cannot decide (stale telemetry, a failed turn);
the event of the policy that stops it says which scale-in it stopped. So a target is never lowered and raised again
within a tick. A dry run, or a policy whose power-based scaling is disabled, has no say.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from autoscaler.actuators import ActuationError, Actuators
from autoscaler.behavior import Recommendation, remember
from autoscaler.decision import EarlierChange, PolicyState, decide
from autoscaler.forecast_view import ForecastView
from autoscaler.schema import (
    ActuationResult,
    ActuationStatus,
    PowerObservation,
    ScaleAction,
    ScalingDecision,
    ScalingEvent,
    ScalingPolicy,
    ScalingTarget,
)
from autoscaler.state import ControllerState, IntentRecord, IntentRefused
from core.public_text import error_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ask:
    """What a policy that scales its target asked for in a tick."""

    policy: str
    count: int | None  # None: it could not decide (no telemetry, a failed turn, an interrupted change awaited)
    lower: bool = False  # fewer replicas than the target had


@dataclass
class PolicyTurn:
    """What the reading phase of a tick found for one policy."""

    policy: ScalingPolicy
    nodes: list[str]
    replicas: int | None = None
    target_bounds: tuple[int, int] | None = None  # the counts the target itself takes (a KubeRay worker group's)
    observation: PowerObservation | None = None
    forecast: ForecastView | None = None
    confidence: float | None = None
    note: str | None = None  # said in the event's reason
    discovery_problem: str | None = None  # why the target's nodes could not be found from its replicas
    discovered: bool = False  # `nodes` are where its replicas run now (they move as it scales), not configured
    error: str | None = None  # the turn failed: a hold event says why
    requests: list[int] | None = None  # indexes into the tick's forecast batch, one per node
    forecast_behind_s: float = 0.0  # how long before now its nodes' forecasts start (old telemetry): leads added
    earlier: EarlierChange | None = None  # another policy changed the target earlier in the tick
    set_to: int | None = None  # the count this turn's change set, or may have set (outcome unknown)
    set_unknown: bool = False  # that change was sent and never answered
    asks: tuple[Ask, ...] = ()  # what the tick's earlier policies that scale the target asked for
    later: str | None = None  # the tick's last policy after this one that scales the target, if any
    ask: Ask | None = None  # what this turn asked for; None: the policy has no say (a dry run, ...)
    # the newest change another enforcing policy on the same target made before this tick: (when, which policy)
    target_changed: tuple[datetime, str] | None = None
    idle_watts: float | None = None  # the nodes' idle draw measured from telemetry, in place of the configured one
    idle_note: str | None = None  # what the event says of that measurement


class TickCounts:
    """The tick's turns, by target: the counts their changes set so far (a later policy on the same target decides
    from them, not from the count read at the start of the tick, which its write would otherwise restore), what the
    policies that scale it asked for so far, and the last of those policies (a scale-in is shared: `Enactor`)."""

    def __init__(self, turns: Sequence[PolicyTurn],
                 last_change: Callable[[str], datetime | None] | None = None,
                 recorded: Callable[[ScalingTarget], tuple[datetime, str] | None] | None = None) -> None:
        """`turns`: all the tick's turns, in the order they are acted on (each is then followed in that order);
        `last_change`: when a policy last changed its target (read before the tick acts), for the targets several
        enforcing policies share: a change one of them made holds the others too; `recorded`: a target's last
        change and the policy that made it, which holds the target's enforcing policies where that policy no longer
        enforces on it (deleted, renamed, re-pointed or a dry run now)."""
        self._set: dict[ScalingTarget, tuple[int, EarlierChange]] = {}
        self._asks: dict[ScalingTarget, list[Ask]] = {}
        self._last = {turn.policy.target: turn for turn in turns if _scales(turn.policy)}
        self._changed: dict[ScalingTarget, list[tuple[datetime, str]]] = {}
        sharing: dict[ScalingTarget, list[str]] = {}
        for turn in turns:
            if turn.policy.mode == "enforce":
                sharing.setdefault(turn.policy.target, []).append(turn.policy.name)
        for target, names in sharing.items():
            changes = [] if len(names) < 2 or last_change is None else [
                (at, name) for name in names if (at := last_change(name)) is not None]
            if recorded is not None and (found := recorded(target)) is not None:
                at, by = found
                if by not in names:  # no longer enforcing on the target
                    changes.append(found)
                elif last_change is not None and last_change(by) is None:  # its state gone since (deleted...)
                    changes.append((at, f"{by}, as stored before (deleted or re-pointed since),"))
            if changes:
                self._changed[target] = changes

    def follow(self, turn: PolicyTurn) -> None:
        """Hand the turn what the tick's earlier policies on its target asked for and the last later one that
        scales it, and start it from the count an earlier turn set, if any; the earlier change keeps the count the
        turn's power was read at (the decision re-spreads that power over the new count)."""
        target = turn.policy.target
        turn.asks = tuple(self._asks.get(target, ()))
        last = self._last.get(target)
        if last is turn:  # the turns after it on the target have no later one
            del self._last[target]
        turn.later = None if last is None or last is turn else last.policy.name
        others = [change for change in self._changed.get(target, ()) if change[1] != turn.policy.name]
        turn.target_changed = max(others) if others else None
        found = self._set.get(target)
        if found is not None and turn.observation is not None:
            count, change = found
            turn.earlier = change.model_copy(update={"read_replicas": turn.observation.replicas})
            turn.observation = turn.observation.model_copy(update={"replicas": count})

    def note(self, turn: PolicyTurn) -> None:
        """Remember what the turn asked for and the count its change set; once a change of the tick raised it, it
        stays raised."""
        if turn.ask is not None:
            self._asks.setdefault(turn.policy.target, []).append(turn.ask)
        if turn.set_to is None or turn.observation is None:
            return
        raised = turn.set_to > turn.observation.replicas or (turn.earlier is not None and turn.earlier.raised)
        self._set[turn.policy.target] = (turn.set_to, EarlierChange(policy=turn.policy.name, raised=raised,
                                                                    unknown=turn.set_unknown))


class Enactor:
    """Carries out policy turns against the actuators, writing intents and events to the state."""

    def __init__(self, state: ControllerState, actuators: Actuators, holder: str, lease_ttl_s: float,
                 clock: Callable[[], datetime]):
        """`clock` stamps when an intent is recorded (its write follows at once; the tick's decision may be older)."""
        self.state, self.actuators, self.holder, self.lease_ttl_s = state, actuators, holder, lease_ttl_s
        self.clock = clock
        self._first_seen: dict[int, float] = {}  # pending event id -> monotonic time (a clock behind its decision)

    def act(self, turn: PolicyTurn, now: datetime) -> ScalingEvent:
        """The turn's event as stored; unsaved (id None) where the state could not write it."""
        turn.ask = Ask(turn.policy.name, None) if _scales(turn.policy) else None  # until it decides
        try:
            return self._act(turn, now)
        except Exception as exc:  # noqa: BLE001 - one policy's failure is its event; the tick goes on
            logger.exception("scaling controller: policy %s failed", turn.policy.name)
            return self.hold(turn, now, f"evaluation failed: {error_text(exc)}")

    def hold(self, turn: PolicyTurn, now: datetime, problem: str, status: ActuationStatus = ActuationStatus.FAILED,
             replicas: int | None = None) -> ScalingEvent:
        """A hold event for a policy that could not be evaluated (`failed`; `none` while it waits on an earlier
        change, at the count read, `replicas`), its state left as it was; it names the tick's earlier scale-ins on
        the target that it stops. Where the state is unwritable it comes back unsaved (id None), so the tick still
        reports and publishes the hold."""
        policy = turn.policy
        reason = "; ".join(filter(None, [f"hold: {problem}", _dropped(turn)]))
        event = ScalingEvent(at=now, policy=policy.name, target=policy.target, action=ScaleAction.HOLD,
                             from_replicas=replicas, to_replicas=replicas, reason=reason, mode=policy.mode,
                             actuation=ActuationResult(status=status, detail=problem))
        try:
            return self.state.record(event)
        except Exception:  # noqa: BLE001 - the state is unwritable: logged, and the next tick tries again
            logger.exception("scaling controller: cannot record the event of policy %s", policy.name)
            return event

    def _hold_blind(self, turn: PolicyTurn, now: datetime, problem: str) -> ScalingEvent:
        """A hold of a turn that read no power or no replica count. The count it read, else the one the controller
        last knew, is kept in the stabilization window, as a hold on stale telemetry keeps the count it held
        (PolicyState.after): the first low reading after an outage longer than the window does not consolidate at
        once."""
        event = self.hold(turn, now, problem)
        if event.id is None:
            return event
        try:
            before = self.state.policy_state(turn.policy.name).no_later_than(now)
            held = turn.replicas if turn.replicas is not None else before.replicas_after
            if held is not None:
                kept = before.model_copy(update={"recent": remember(before.recent, Recommendation(at=now,
                                                                                                  replicas=held))})
                self.state.remember(turn.policy, kept, holder=self.holder)
        except Exception:  # noqa: BLE001 - the state is unwritable: logged (the hold is recorded), tried next tick
            logger.exception("scaling controller: cannot keep the held count of policy %s", turn.policy.name)
        return event

    def _act(self, turn: PolicyTurn, now: datetime) -> ScalingEvent:
        policy = turn.policy
        if turn.error is not None:
            return self._hold_blind(turn, now, turn.error)
        if turn.observation is None:  # the replica count could not be read: nothing to decide on
            return self._hold_blind(turn, now, turn.note or "no observation")
        # a policy's first decision (a new policy, or one pointed at another target) keeps the count it found
        before = self.state.policy_state(policy.name).no_later_than(now).first_seen(turn.observation.replicas, now)
        notes = [note for note in (turn.note, turn.idle_note) if note]
        if (pending := self.state.pending_intent(policy.name)) is not None:  # judged on the count read, not one
            read = turn.earlier.read_replicas if turn.earlier is not None else None  # an earlier turn set since
            replicas = turn.observation.replicas if read is None else read
            fresh = False  # whether `replicas` was read after every write sent for the intent could land
            record = self.state.intent_record(pending)
            if not _landed(pending, replicas):
                if (landing := self._may_still_land(pending, record, replicas, policy, now)) is not None:
                    return self.hold(turn, now, landing, ActuationStatus.NONE, replicas=turn.observation.replicas)
                if turn.earlier is None:  # the tick's count may predate the deadline: read again
                    try:
                        replicas, fresh = self.actuators.read_now(policy), True
                    except ActuationError as exc:
                        return self.hold(turn, now, f"the count to judge event {pending.id}, left pending, could not "
                                                    f"be read: {exc}")
            completed, before, unfinished = self._complete_interrupted(pending, record, replicas, before, now,
                                                                       fresh=fresh)
            notes.append(completed)
        else:
            unfinished = False
        seen = before  # what the decision goes on from; `before` is what this policy stores of its own
        shared_hold = None  # said when the decision holds: another policy's change holds this one too
        if turn.target_changed is not None and (before.last_scale_at is None
                                                or turn.target_changed[0] > before.last_scale_at):
            at, other = turn.target_changed
            # its change may not be in the measured power yet: it holds this policy as its own would, and the count
            # this policy last knew is no longer the target's (a lower one now is no outside change)
            seen = before.model_copy(update={"last_scale_at": at, "replicas_after": None})
            if (now - at).total_seconds() < policy.hold_s:
                shared_hold = (f"policy {other} changed the target {round((now - at).total_seconds())} s ago: its "
                               "hold applies to this policy too")
        within, narrowed = _within_target_bounds(policy, turn.target_bounds, turn.observation.replicas)
        if turn.idle_watts is not None:  # measured (the controller checked it lies under the scale-out threshold)
            within = within.model_copy(update={"power_based": within.power_based.model_copy(
                update={"idle_power_watts": turn.idle_watts})})
        decision = _short_of_own_bounds(decide(within, turn.observation, turn.forecast, seen, now, turn.earlier),
                                        turn.target_bounds)
        stopped_by = {within.min_replicas} - {policy.min_replicas} | {within.max_replicas} - {policy.max_replicas}
        if narrowed is not None and decision.to_replicas in stopped_by:
            notes.append(narrowed)  # a bound of the target's stopped it
        if shared_hold is not None and decision.action is ScaleAction.HOLD:
            notes.append(shared_hold)
        left = False
        if unfinished:  # the old intent still stands: no new change, and the policy has no count to ask for
            if decision.action is not ScaleAction.HOLD:
                decision = _redirect(decision, decision.from_replicas, "the interrupted change is not completed yet")
            decision = _noted(decision, _dropped(turn))
        elif turn.ask is not None:
            turn.ask = _asked(policy, decision)
            decision, left = self._share(turn, decision)
        reason = "; ".join([decision.reason, *notes])
        if decision.action is ScaleAction.HOLD or policy.mode == "dry_run":
            actuation = self.actuators.apply(policy, decision.from_replicas, decision.to_replicas)
            # a scale-in left to a later policy may lower the target in this tick: the count is not known
            return self._recorded(_event(policy, decision, actuation, reason, turn.confidence),
                                  before.after(decision, known=policy.mode != "dry_run" and not left))
        pending_result = ActuationResult(status=ActuationStatus.PENDING, detail="recorded before the actuation")
        try:
            changing = before.after(decision, known=False).model_copy(update={"changed_target_at": decision.at})
            intent = self.state.record_intent(_event(policy, decision, pending_result, reason, turn.confidence),
                                              changing,  # the count unknown until it lands
                                              policy, self.holder, self.clock(), self.lease_ttl_s, prior=before)
        except IntentRefused as exc:
            refused = ActuationResult(status=ActuationStatus.FAILED, detail=f"not actuated: {exc}")
            return self._recorded(_event(policy, decision, refused, reason, turn.confidence))
        except Exception as exc:  # noqa: BLE001 - an unwritable state: no intent, so no write is sent
            logger.exception("scaling controller: cannot record the intent of policy %s", policy.name)
            unwritten = ActuationResult(status=ActuationStatus.FAILED,
                                        detail=f"not actuated: its intent could not be written: {error_text(exc)}")
            return self._recorded(_event(policy, decision, unwritten, reason, turn.confidence))
        return self._actuate(turn, decision, intent, before)

    def _recorded(self, event: ScalingEvent, after: PolicyState | None = None) -> ScalingEvent:
        """A decided event as stored, with the policy's state after it; where the state is unwritable, the event
        unsaved (id None) with its power values and why, the policy's state left as it was (the next tick decides
        again)."""
        try:
            return self.state.record(event, after, holder=self.holder)
        except Exception as exc:  # noqa: BLE001 - logged; the tick still reports and publishes the decision
            logger.exception("scaling controller: cannot record the event of policy %s", event.policy)
            return event.model_copy(update={"reason": f"{event.reason}; not saved: {error_text(exc)}"})

    def _share(self, turn: PolicyTurn, decision: ScalingDecision) -> tuple[ScalingDecision, bool]:
        """The decision of a policy that scales its target, as the tick's policies on the target share it: a
        scale-in goes no lower than any of them asks for, and is left (True) to the last of them."""
        if decision.action is not ScaleAction.SCALE_IN:
            return _noted(decision, _dropped(turn)), False
        if (stop := _stopped(turn.asks)) is not None:
            return _redirect(decision, decision.from_replicas, stop), False
        if turn.later is not None:
            return _redirect(decision, decision.from_replicas,
                             f"policy {turn.later} decides on this target later in this tick, and {ONCE}"), True
        return _floored(decision, turn.asks), False

    def _actuate(self, turn: PolicyTurn, decision: ScalingDecision, intent: ScalingEvent,
                 before: PolicyState) -> ScalingEvent:
        policy = turn.policy
        earlier = turn.earlier
        try:
            actuation = self.actuators.apply(policy, decision.from_replicas, decision.to_replicas,
                                             unanswered=earlier.policy if earlier is not None and earlier.unknown
                                             else None)
            scaled, known = actuation.status is not ActuationStatus.FAILED, True
        except Exception as exc:  # noqa: BLE001 - unknown whether it landed: the intent stays pending
            logger.exception("scaling controller: actuator of policy %s failed", policy.name)
            unanswered = error_text(exc)
            actuation = ActuationResult(status=ActuationStatus.PENDING, detail=(
                f"{unanswered} (outcome unknown: the policy holds, and the change is judged from the target's "
                "count once no write sent for it can land any more: applied, or failed with its cooldown lifted)"))
            scaled, known = True, False
        landed = decision.to_replicas if actuation.replicas is None else actuation.replicas
        if scaled:
            turn.set_to, turn.set_unknown = landed, not known
        outcome = intent.model_copy(update={"actuation": actuation})
        if not known:  # left pending, as an interrupted tick leaves it: a later tick judges it (`_may_still_land`)
            try:
                if not self.state.note_pending(outcome):  # completed meanwhile (abandoned): its record says how
                    return outcome.model_copy(update={"actuation": actuation.model_copy(update={
                        "status": ActuationStatus.FAILED,
                        "detail": f"{unanswered} (outcome unknown): no longer pending (its policy was deleted or "
                                  "re-pointed, or another controller completed it, meanwhile)"})})
            except Exception:  # noqa: BLE001 - the intent stands all the same, with its first detail
                logger.exception("scaling controller: cannot note event %s of policy %s", intent.id, policy.name)
            return outcome
        try:
            after = before.after(decision, scaled=scaled, known=known)
            if known and scaled:  # the count it set (a target's own bound may have stopped it short)
                after = after.model_copy(update={"replicas_after": landed})
            if scaled:  # landed, or may have: it holds the other policies on the target
                after = after.model_copy(update={"changed_target_at": decision.at})
            return self.state.complete(outcome, after, holder=self.holder)
        except Exception:  # noqa: BLE001 - the intent stays; the cooldown it started holds the next ticks
            logger.exception("scaling controller: cannot complete event %s of policy %s", intent.id, policy.name)
            return outcome

    def _may_still_land(self, pending: ScalingEvent, record: IntentRecord | None, replicas: int,
                        policy: ScalingPolicy, now: datetime) -> str | None:
        """What holds the policy while a write of an intent an earlier tick left pending may still land (the
        actuator's write deadline has not passed since the intent was recorded, or since the decision where that is
        not known); None once it cannot. Where the clock is behind that time, the deadline counts from when this
        controller first saw the intent."""
        deadline = self.actuators.write_deadline_s(policy)
        age = (now - (pending.at if record is None else record.recorded_at)).total_seconds()
        if age < 0:
            age = time.monotonic() - self._first_seen.setdefault(pending.id, time.monotonic())
        if age >= deadline:
            return None
        return (f"event {pending.id}, left pending, may still land (the target is at "
                f"{replicas}, not {pending.to_replicas}): it is judged in {math.ceil(deadline - age)} s, when no write "
                "it sent can land any more")

    def _complete_interrupted(self, pending: ScalingEvent, record: IntentRecord | None, replicas: int,
                              state: PolicyState, now: datetime, *, fresh: bool) -> tuple[str, PolicyState, bool]:
        """Complete an intent an earlier tick left pending; returns what the new event's reason says of it, the
        policy's state after it, and whether it is still pending (its completion could not be written: the policy
        then decides, for its event's power values, but changes nothing while the intent stands). A target still at
        the count the change started from, on a count read (`fresh`) once no write sent for it could land, was never
        changed: the policy's state before the intent (`record`) is restored, its cooldown with it (else an
        over-budget target would wait a whole cooldown after a controller crash before the change is tried
        again)."""
        after = state
        self._first_seen.pop(pending.id, None)
        if _landed(pending, replicas):
            result = ActuationResult(status=ActuationStatus.APPLIED,
                                     replicas=None if replicas == pending.to_replicas else replicas,
                                     detail=f"completed later: the target is at {replicas}")
        elif fresh and replicas == pending.from_replicas and record is not None:
            waited = round((now - pending.at).total_seconds())
            result = ActuationResult(status=ActuationStatus.FAILED, detail=(
                f"interrupted before its write landed: the target is still at {replicas} {waited} s after the "
                "decision, when no write sent for it can land any more; the cooldown it started is lifted"))
            after = record.prior.no_later_than(now).model_copy(update={"recent": state.recent})
        else:
            result = ActuationResult(status=ActuationStatus.FAILED,
                                     detail=f"interrupted before completion: the target is at {replicas}")
        try:
            self.state.complete(pending.model_copy(update={"actuation": result}), after, holder=self.holder)
        except Exception as exc:  # noqa: BLE001 - the intent stays for the next tick, which judges it again
            logger.exception("scaling controller: cannot complete event %s of policy %s", pending.id, pending.policy)
            return (f"event {pending.id}, left pending, could not be completed as "
                    f"{result.status.value}: {error_text(exc)}"), state, True
        return f"event {pending.id}, left pending, completed as {result.status.value}", after, \
            False


def _landed(pending: ScalingEvent, replicas: int) -> bool:
    """Whether the pending change's write landed: the target at its count, or moved towards it (a target's own
    bound, a KubeRay worker group's maxReplicas, stops a write short of it)."""
    if pending.from_replicas is None or pending.to_replicas is None:  # not a change's event: nothing to land
        return False
    low, high = sorted((pending.from_replicas, pending.to_replicas))
    return replicas == pending.to_replicas or low < replicas < high


NO_LOWER = "a target that several policies scale goes no lower than any of them asks for"
ONCE = "a target that several policies scale is lowered once a tick, by the last of them, to the most any asks for"


def _within_target_bounds(policy: ScalingPolicy, bounds: tuple[int, int] | None,
                          replicas: int) -> tuple[ScalingPolicy, str | None]:
    """The policy as it decides on a target with bounds of its own: [min_replicas, max_replicas] narrowed to them,
    so a group at its maxReplicas holds instead of asking every tick for a count its actuator refuses; and what the
    event says of it (None: they narrow nothing, or they and the policy's share no count, and the actuator says
    so). Never past the count `replicas` it is at: a group already above a lowered maxReplicas is not scaled in for
    it (KubeRay runs the bound's count meanwhile; its spec keeps the count set, which a raised bound restores)."""
    if bounds is None:
        return policy, None
    low = min(max(policy.min_replicas, bounds[0]), max(replicas, policy.min_replicas))
    high = max(min(policy.max_replicas, bounds[1]), min(replicas, policy.max_replicas))
    if low > high or (low, high) == (policy.min_replicas, policy.max_replicas):
        return policy, None
    beyond = "" if bounds[0] <= replicas <= bounds[1] else f", not past its count {replicas}"
    note = (f"the target's own bounds [{bounds[0]}, {bounds[1]}] narrow the policy's [{policy.min_replicas}, "
            f"{policy.max_replicas}] to [{low}, {high}]{beyond}")
    return policy.model_copy(update={"min_replicas": low, "max_replicas": high}), note


def _short_of_own_bounds(decision: ScalingDecision, bounds: tuple[int, int] | None) -> ScalingDecision:
    """A hold for a change that leaves a target beyond its own bounds as read (a maxReplicas lowered, or a
    minReplicas raised, since its count was set) still beyond them: its actuator refuses every count outside them,
    and a refused change restarts no cooldown, so the same change failed at every tick."""
    if bounds is None or decision.action is ScaleAction.HOLD:
        return decision
    low, high = bounds
    start, to = decision.from_replicas, decision.to_replicas
    if not (high < to < start or start < to < low):
        return decision
    bound = f"maxReplicas {high}" if to > high else f"minReplicas {low}"
    return _redirect(decision, start, f"the target's count {start} lies beyond its own {bound} (changed since the "
                                      f"count was set), and {to} would too: the target refuses it")


def _scales(policy: ScalingPolicy) -> bool:
    """Whether the policy's decisions move its target (a dry run's, or a disabled power-based scaling's, do not)."""
    return policy.mode == "enforce" and policy.power_based.enabled


def _asked(policy: ScalingPolicy, decision: ScalingDecision) -> Ask:
    """What a decision asks for: its count, or nothing when it holds on no reading (no telemetry); a hold on power
    read before its last change took effect asks for the count it holds."""
    blind = decision.action is ScaleAction.HOLD and decision.measured_share is None
    return Ask(policy.name, None if blind else decision.to_replicas, decision.to_replicas < decision.from_replicas)


def _stopped(asks: tuple[Ask, ...]) -> str | None:
    """Why the tick's earlier asks keep a scale-in from going through, if they do: one of their policies could not
    decide, or asks for no fewer replicas."""
    if (blind := next((ask for ask in asks if ask.count is None), None)) is not None:
        return (f"policy {blind.policy} cannot decide in this tick, and a target that several policies scale is "
                "not lowered while one of them cannot")
    kept = [ask for ask in asks if not ask.lower]
    return f"policy {_most(kept).policy} asks for {_most(kept).count} in this tick, and {NO_LOWER}" if kept else None


def _floored(decision: ScalingDecision, asks: tuple[Ask, ...]) -> ScalingDecision:
    """The tick's last scale-in on its target, no lower than the earlier scale-ins asked for."""
    if not asks:
        return decision
    top = _most(asks)
    if top.count is None or top.count <= decision.to_replicas:
        return _noted(decision, f"it carries out the scale-in asked for earlier in this tick ({_listed(asks)}) as "
                                f"far as every policy allows")
    return _redirect(decision, top.count, f"policy {top.policy} asks for {top.count} in this tick, and {NO_LOWER}")


def _dropped(turn: PolicyTurn) -> str | None:
    """What the turn's event says of the tick's earlier scale-ins on its target that it stops, if it stops any (it
    asks for no fewer replicas, or cannot decide)."""
    if turn.ask is None or turn.ask.lower or not turn.asks or not all(ask.lower for ask in turn.asks):
        return None
    asked = "this policy cannot decide" if turn.ask.count is None else f"this policy asks for {turn.ask.count}"
    return f"the scale-in asked for earlier in this tick ({_listed(turn.asks)}) is not carried out: {asked}"


def _most(asks: list[Ask] | tuple[Ask, ...]) -> Ask:
    """The ask for the most replicas (one that could not decide counts as none)."""
    return max(asks, key=lambda ask: ask.count or 0)


def _listed(asks: tuple[Ask, ...]) -> str:
    return ", ".join(f"policy {ask.policy} to {ask.count}" for ask in asks)


def _noted(decision: ScalingDecision, note: str | None) -> ScalingDecision:
    return decision if note is None else decision.model_copy(update={"reason": f"{decision.reason}; {note}"})


def _redirect(decision: ScalingDecision, to: int, why: str) -> ScalingDecision:
    """A scale-in sent to `to` instead (a hold at its count, or a smaller scale-in), `why` leading the reason."""
    moved = to != decision.from_replicas
    head = f"{ScaleAction.SCALE_IN.value} {decision.from_replicas} -> {to}" if moved else \
        f"hold at {decision.from_replicas}"
    own = decision.reason.partition(": ")[2]
    return decision.model_copy(update={
        "action": ScaleAction.SCALE_IN if moved else ScaleAction.HOLD, "to_replicas": to,
        "outside_change": decision.outside_change and moved,
        "reason": f"{head}: {why} (would go to {decision.to_replicas}); {own}"})


def _event(policy: ScalingPolicy, decision: ScalingDecision, actuation: ActuationResult, reason: str,
           confidence: float | None) -> ScalingEvent:
    budget = policy.power_based.max_power_budget

    def watts(share: float | None) -> float | None:
        return None if share is None else round(share * budget / 100.0, 2)

    return ScalingEvent(at=decision.at, policy=policy.name, target=policy.target, action=decision.action,
                        from_replicas=decision.from_replicas, to_replicas=decision.to_replicas,
                        measured_power_watts=watts(decision.measured_share),
                        forecast_power_watts=watts(decision.forecast_share),
                        confidence=confidence if decision.used_forecast else None, signal=decision.signal,
                        reason=reason, mode=policy.mode, actuation=actuation)
