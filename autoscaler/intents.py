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
   change sent and not answered (`ActuationOutcomeUnknown`, a timeout) or an unexpected error is `failed` with
   the cooldown kept: whether it landed cannot be known.
4. If the completion write fails, or the controller dies between 2 and 3, the intent stays: the cooldown clock
   stays started, so the next ticks hold instead of scaling again. The next tick that reads the target's
   replicas completes the old event: `applied` when the target is at the intended count, else `failed`
   (interrupted); the cooldown is kept either way, since whether the write landed cannot be known.

An exception anywhere in one policy's turn becomes a `failed` hold event for that policy (logged with its
traceback); the other policies' turns go on. Every write sets an absolute count, so a policy on a target that an
earlier policy of the tick changed (applied, or of unknown outcome) decides from that count, with its power, read
before that change, re-spread over it (`TickCounts`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from autoscaler.actuators import Actuators
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
from autoscaler.state import ControllerState, IntentRefused
from core.public_text import error_text

logger = logging.getLogger(__name__)


@dataclass
class PolicyTurn:
    """What the reading phase of a tick found for one policy."""

    policy: ScalingPolicy
    nodes: list[str]
    replicas: int | None = None
    observation: PowerObservation | None = None
    forecast: ForecastView | None = None
    confidence: float | None = None
    note: str | None = None  # said in the event's reason
    error: str | None = None  # the turn failed: a hold event says why
    requests: list[int] | None = None  # indexes into the tick's forecast batch, one per node
    earlier: EarlierChange | None = None  # another policy changed the target earlier in the tick
    set_to: int | None = None  # the count this turn's change set, or may have set (outcome unknown)


class TickCounts:
    """The counts set by the tick's changes so far, by target: a later policy on the same target decides from them,
    not from the count read at the start of the tick (which its write would otherwise restore)."""

    def __init__(self) -> None:
        self._set: dict[ScalingTarget, tuple[int, EarlierChange]] = {}

    def follow(self, turn: PolicyTurn) -> None:
        """Start the turn from the count an earlier turn of this tick set on its target, if any; the earlier change
        keeps the count the turn's power was read at (the decision re-spreads that power over the new count)."""
        found = self._set.get(turn.policy.target)
        if found is not None and turn.observation is not None:
            count, change = found
            turn.earlier = change.model_copy(update={"read_replicas": turn.observation.replicas})
            turn.observation = turn.observation.model_copy(update={"replicas": count})

    def note(self, turn: PolicyTurn) -> None:
        """Remember the count the turn's change set; once a change of the tick raised it, it stays raised."""
        if turn.set_to is None or turn.observation is None:
            return
        raised = turn.set_to > turn.observation.replicas or (turn.earlier is not None and turn.earlier.raised)
        self._set[turn.policy.target] = (turn.set_to, EarlierChange(policy=turn.policy.name, raised=raised))


class Enactor:
    """Carries out policy turns against the actuators, writing intents and events to the state."""

    def __init__(self, state: ControllerState, actuators: Actuators, holder: str, lease_ttl_s: float):
        self.state, self.actuators, self.holder, self.lease_ttl_s = state, actuators, holder, lease_ttl_s

    def act(self, turn: PolicyTurn, now: datetime) -> ScalingEvent | None:
        """The turn's event as stored; None only when even the failure event could not be written."""
        try:
            return self._act(turn, now)
        except Exception as exc:  # noqa: BLE001 - one policy's failure is its event; the tick goes on
            logger.exception("scaling controller: policy %s failed", turn.policy.name)
            return self.hold(turn.policy, now, f"evaluation failed: {error_text(exc)}")

    def hold(self, policy: ScalingPolicy, now: datetime, problem: str) -> ScalingEvent | None:
        """A `failed` hold event for a policy that could not be evaluated (its state is left as it was)."""
        event = ScalingEvent(at=now, policy=policy.name, target=policy.target, action=ScaleAction.HOLD,
                             from_replicas=None, to_replicas=None, reason=f"hold: {problem}", mode=policy.mode,
                             actuation=ActuationResult(status=ActuationStatus.FAILED, detail=problem))
        try:
            return self.state.record(event)
        except Exception:  # noqa: BLE001 - the state is unwritable: logged, and the next tick tries again
            logger.exception("scaling controller: cannot record the event of policy %s", policy.name)
            return None

    def _act(self, turn: PolicyTurn, now: datetime) -> ScalingEvent | None:
        policy = turn.policy
        if turn.error is not None:
            return self.hold(policy, now, turn.error)
        if turn.observation is None:  # the replica count could not be read: nothing to decide on
            return self.hold(policy, now, turn.note or "no observation")
        before = self.state.policy_state(policy.name)
        notes = [turn.note] if turn.note else []
        if (pending := self.state.pending_intent(policy.name)) is not None:
            notes.append(self._complete_interrupted(pending, turn.observation.replicas, before))
        decision = decide(policy, turn.observation, turn.forecast, before, now, turn.earlier)
        reason = "; ".join([decision.reason, *notes])
        if decision.action is ScaleAction.HOLD or policy.mode == "dry_run":
            actuation = self.actuators.apply(policy, decision.from_replicas, decision.to_replicas)
            return self.state.record(_event(policy, decision, actuation, reason, turn.confidence),
                                     before.after(decision, known=policy.mode != "dry_run"))
        pending_result = ActuationResult(status=ActuationStatus.PENDING, detail="recorded before the actuation")
        try:
            intent = self.state.record_intent(_event(policy, decision, pending_result, reason, turn.confidence),
                                              before.after(decision, known=False),  # until it lands
                                              policy, self.holder, now, self.lease_ttl_s)
        except IntentRefused as exc:
            refused = ActuationResult(status=ActuationStatus.FAILED, detail=f"not actuated: {exc}")
            return self.state.record(_event(policy, decision, refused, reason, turn.confidence))
        return self._actuate(turn, decision, intent, before)

    def _actuate(self, turn: PolicyTurn, decision: ScalingDecision, intent: ScalingEvent,
                 before: PolicyState) -> ScalingEvent:
        policy = turn.policy
        try:
            actuation = self.actuators.apply(policy, decision.from_replicas, decision.to_replicas)
            scaled, known = actuation.status is not ActuationStatus.FAILED, True
        except Exception as exc:  # noqa: BLE001 - unknown whether it landed: fail the event, keep the cooldown
            logger.exception("scaling controller: actuator of policy %s failed", policy.name)
            actuation = ActuationResult(status=ActuationStatus.FAILED,
                                        detail=f"{error_text(exc)} (outcome unknown: cooldown kept)")
            scaled, known = True, False
        if scaled:
            turn.set_to = decision.to_replicas
        outcome = intent.model_copy(update={"actuation": actuation})
        try:
            return self.state.complete(outcome, before.after(decision, scaled=scaled, known=known))
        except Exception:  # noqa: BLE001 - the intent stays; the cooldown it started holds the next ticks
            logger.exception("scaling controller: cannot complete event %s of policy %s", intent.id, policy.name)
            return outcome

    def _complete_interrupted(self, pending: ScalingEvent, replicas: int, state: PolicyState) -> str:
        """Complete an intent an earlier tick left pending; returns what the new event's reason says of it."""
        if replicas == pending.to_replicas:
            result = ActuationResult(status=ActuationStatus.APPLIED,
                                     detail=f"completed after an interrupted tick: the target is at {replicas}")
        else:
            result = ActuationResult(status=ActuationStatus.FAILED,
                                     detail=f"interrupted before completion: the target is at {replicas}")
        self.state.complete(pending.model_copy(update={"actuation": result}), state)
        return f"event {pending.id} left pending by an interrupted tick completed as {result.status.value}"


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
