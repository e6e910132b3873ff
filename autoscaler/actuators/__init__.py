"""The one place that changes replica counts: an actuator per target kind, and dry-run handling."""

from __future__ import annotations

from collections.abc import Iterable

from autoscaler.actuators.base import (
    ActuationError,
    ActuationOutcomeUnknown,
    Actuator,
    CountMoved,
    OutsideBounds,
    Scaled,
    TargetCount,
    read_before_write,
)
from autoscaler.schema import ActuationResult, ActuationStatus, ScalingPolicy


class Actuators:
    """Routes each target to the actuator of its kind; `apply` honours the policy's mode."""

    def __init__(self, actuators: Iterable[Actuator]):
        self.by_kind = {kind: actuator for actuator in actuators for kind in actuator.kinds}

    def _for(self, policy: ScalingPolicy) -> Actuator:
        actuator = self.by_kind.get(policy.target.kind)
        if actuator is None:
            raise ActuationError(f"no actuator configured for {policy.target.kind} targets")
        return actuator

    def read(self, policy: ScalingPolicy) -> TargetCount:
        """The target's replica count now, with its own bounds where it has them; ActuationError when unreadable."""
        return self._for(policy).read(policy.target)

    def read_now(self, policy: ScalingPolicy) -> int:
        """The target's count read afresh, past any cache; ActuationError when unreadable."""
        return read_before_write(self._for(policy), policy.target)

    def write_deadline_s(self, policy: ScalingPolicy) -> float:
        """How long after an actuation of the policy's target starts a write it sent may still land."""
        return self._for(policy).write_deadline_s

    def ray_nodes(self, policy: ScalingPolicy) -> list[str] | None:
        """Ray node ids of the target's replicas where its actuator can tell; ActuationError when unreadable."""
        return self._for(policy).ray_nodes(policy.target)

    def apply(self, policy: ScalingPolicy, current: int, desired: int, *,
              unanswered: str | None = None) -> ActuationResult:
        """Carry out `current -> desired` (enforce) or only describe it (dry_run). Raises only
        `ActuationOutcomeUnknown` (a change sent and not answered); any other failure is a `failed` result.

        The write goes ahead only while the target is still at `current` (`Actuator.scale_from`), as it sets an
        absolute count: a target someone else changed since the tick read it (the tick's forecasts can take a
        minute) is left as it is, and the next tick decides from its new count; a write on the old count would undo
        their change (a scale-out written over an operator's larger count lowers it, past every scale-in rule).
        `unanswered`: the policy whose write earlier in the tick set `current`, if that write was never answered (it
        may not have landed)."""
        if desired == current:
            return ActuationResult(status=ActuationStatus.NONE, detail="no change")
        if policy.mode == "dry_run":
            return ActuationResult(status=ActuationStatus.DRY_RUN,
                                   detail=f"would scale {policy.target.kind} from {current} to {desired} replicas")
        try:
            actuator = self._for(policy)
            try:
                return _applied(actuator.scale_from(policy.target, current, desired), desired)
            except OutsideBounds as exc:
                return _within_bounds(actuator, policy, current, desired, exc)
        except CountMoved as moved:
            why = ("changed meanwhile by someone else" if unanswered is None else
                   f"policy {unanswered}'s write earlier in this tick was never answered: it may not have landed")
            return ActuationResult(status=ActuationStatus.FAILED, detail=(
                f"not changed: the target is at {moved.replicas} replicas, not the {current} this decision was made "
                f"at ({why}); the next tick decides from its new count"))
        except ActuationOutcomeUnknown:
            raise
        except ActuationError as exc:
            return ActuationResult(status=ActuationStatus.FAILED, detail=str(exc))


def _within_bounds(actuator: Actuator, policy: ScalingPolicy, current: int, desired: int,
                   refused: OutsideBounds) -> ActuationResult:
    """`current -> desired` as far as the target's own bounds allow: a scale-out past a worker group's maxReplicas
    to that bound (refusing it left the group short of the bound while the budget was blown), a scale-in to its
    minReplicas; never the other way (a count already outside them, lowered later, is not this decision's), never
    past the decision (a scale-out to a minReplicas raised above it), and never outside the policy's own bounds."""
    if desired > current and desired > refused.high:
        bounded, bound = refused.high, "maxReplicas"
    elif desired < current and desired < refused.low:
        bounded, bound = refused.low, "minReplicas"
    else:  # the bound lies beyond the decision: taking it would scale further than decided
        raise refused
    bounded = min(max(bounded, policy.min_replicas), policy.max_replicas)
    if (bounded - current) * (desired - current) <= 0:  # no move, or against the decision's direction
        raise refused
    scaled = actuator.scale_from(policy.target, current, bounded)
    return ActuationResult(status=ActuationStatus.APPLIED, replicas=scaled.replicas,
                           detail=f"{scaled.detail} (the target's {bound} {bounded}; the decision asked for {desired})")


def _applied(scaled: Scaled, desired: int) -> ActuationResult:
    """A write that landed; its count where the target stored another than the decision's (admission changed it)."""
    return ActuationResult(status=ActuationStatus.APPLIED, detail=scaled.detail,
                           replicas=None if scaled.replicas == desired else scaled.replicas)


__all__ = ["ActuationError", "ActuationOutcomeUnknown", "Actuator", "Actuators", "CountMoved", "OutsideBounds",
           "Scaled", "TargetCount"]
