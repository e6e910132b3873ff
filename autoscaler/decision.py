"""The scaling decision maths (docs/architecture.md): one pure function from a policy and its inputs to a decision.

Power plays the role CPU plays in a Kubernetes HPA. The signal is the target's per-node power (mean or max
over its nodes) as a percent share of `max_power_budget`. With a usable forecast the share is the larger of
the measured share and the forecast's upper-quantile share, so the forecast can scale out early and must
agree before scaling in, and a present overload is never ignored.

- share > scale-out threshold: scale out to ceil(replicas * share / out), so the re-spread share is <= out.
- share < scale-in threshold: consolidate to the fewest replicas n with replicas * share / n < out.
- otherwise hold (hysteresis band) on measured power; on a calibrated forecast's upper quantile the
  confidence level is the margin, so it consolidates whenever the quantile re-spread over n stays < out.
Then clamp to [min_replicas, max_replicas] and cap scale-out by the cluster power budget: that is the
recommendation. The policy's `behavior` (autoscaler/behavior.py) holds a scale-in at the highest recommendation
of its stabilization window and limits how far one change moves the target (the step limit); the cooldown
holds the target between changes, and at least until the last change has taken effect (`actuation_delay`).
Stale or missing telemetry holds, except that a target outside [min_replicas, max_replicas] still goes back inside
(the bounds need no telemetry; the step limits and the cooldown apply as to any change). Replicas never go to zero
on power alone. When another policy on the same target changed it earlier in the tick (`EarlierChange`), the
decision starts from that count, and once any change of the tick raised it, a scale-in holds: two policies never
undo each other within a tick. Every decision's reason says which of these rules shaped it.
"""

from __future__ import annotations

import math
from datetime import datetime
from statistics import fmean

from pydantic import BaseModel, ConfigDict

from autoscaler.behavior import Recommendation, limit_change, remember
from autoscaler.forecast_view import ForecastView
from autoscaler.peak_rule import peak_count
from autoscaler.schema import PowerObservation, ScaleAction, ScalingDecision, ScalingPolicy
from core.durations import format_duration


class PolicyState(BaseModel):
    """What a policy remembers between ticks (the controller persists it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    last_scale_at: datetime | None = None
    recent: tuple[Recommendation, ...] = ()  # what the scale-down stabilization window may need
    # the target's replica count after the last decision as the controller knows it (what it set, else what it
    # saw); None: unknown. A lower count at the next tick was set by someone else (a redeploy resets a Serve
    # deployment to its config's num_replicas): that decision is not held back by the cooldown, once per hold (a
    # writer that keeps lowering it is answered at the cooldown's pace, as before).
    replicas_after: int | None = None
    outside_answered_at: datetime | None = None  # when a decision last skipped the cooldown for such a change

    def after(self, decision: ScalingDecision, *, scaled: bool | None = None, known: bool = True) -> PolicyState:
        """The state after `decision`: its recommendation remembered, and the cooldown clock restarted when the
        replica count changed (`scaled`; default: when the decision is a change). `known` False: the count the
        target has now is not known (an actuation of unknown outcome, a dry run, a replay that observes capacity
        lagging its target)."""
        changed = decision.action is not ScaleAction.HOLD if scaled is None else scaled
        recent = self.recent
        if decision.recommended_replicas is not None:
            recent = remember(recent, Recommendation(at=decision.at, replicas=decision.recommended_replicas))
        count = (decision.to_replicas if changed else decision.from_replicas) if known else None
        answered = decision.at if decision.outside_change else self.outside_answered_at
        return PolicyState(last_scale_at=decision.at if changed else self.last_scale_at, recent=recent,
                           replicas_after=count, outside_answered_at=answered)


class EarlierChange(BaseModel):
    """A change another policy made to the same target earlier in this tick; the observation's count is its result
    (or may be: an outcome unknown counts as landed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str  # the policy that set the count
    raised: bool  # a change of this tick raised the count: no later policy lowers it within the tick


def _stale_reason(policy: ScalingPolicy, observation: PowerObservation) -> str | None:
    if observation.missing_nodes:
        shown = ", ".join(observation.missing_nodes[:5]) + (", ..." if len(observation.missing_nodes) > 5 else "")
        return f"no power telemetry for node(s) {shown}"
    if not observation.measured_per_node_watts:
        return "no power telemetry for the target's nodes"
    if observation.age_s is None:
        return "telemetry age unknown"
    if observation.age_s > policy.stale_after_s:
        return f"telemetry stale ({observation.age_s:.0f} s old > stale_after_s {policy.stale_after_s} s)"
    return None


def _forecast_problem(forecast: ForecastView | None) -> str | None:
    if forecast is None:
        return "no forecast"
    if not forecast.calibrated:
        return forecast.reason or "forecast not calibrated"
    if not forecast.upper_quantile_per_node_watts:
        return "forecast has no nodes"
    return None


def _forecast_label(policy: ScalingPolicy, forecast: ForecastView) -> str:
    level = f"p{policy.predictive_scaling.confidence_threshold * 100:g}"
    window = f" over the next {format_duration(forecast.window_s)}" if forecast.window_s else ""
    return f"forecast {level} {'peak bound' if forecast.peak_bound else 'upper quantile'}{window}"


def _share(values: list[float], policy: ScalingPolicy) -> float:
    power = max(values) if policy.aggregation == "max" else fmean(values)
    return power / policy.power_based.max_power_budget * 100.0


def _proportional(policy: ScalingPolicy, replicas: int, share: float, label: str,
                  confident: bool) -> tuple[int, str]:
    """The HPA-style replica count for `share` and why.

    On measured power the thresholds act as hysteresis: consolidate only below the scale-in threshold. On a
    calibrated forecast's upper quantile (`confident`) the confidence level is the safety margin instead:
    consolidate whenever that quantile, re-spread over fewer replicas, stays under the scale-out threshold.
    """
    out, inn = policy.power_based.scale_out_threshold, policy.power_based.scale_in_threshold
    what = f"{label} {share:.1f}% of the per-node budget"
    if share > out:
        desired = math.ceil(replicas * share / out)
        spread = f", re-spread to {replicas * share / desired:.1f}%" if desired else ""
        return desired, f"{what} > scale-out threshold {out:g}%; proportional count {desired}{spread}"
    if share >= inn and not confident:
        return replicas, f"{what} within the hysteresis band [{inn:g}%, {out:g}%]"
    desired = min(math.floor(replicas * share / out) + 1, replicas)
    while desired < replicas and replicas * share / desired >= out:  # guard against float rounding
        desired += 1
    below = f"< scale-in threshold {inn:g}%" if share < inn else f"<= scale-out threshold {out:g}%"
    if desired >= replicas:
        return replicas, f"{what} {below}, but fewer replicas would not keep nodes under {out:g}%"
    return desired, (f"{what} {below}; consolidating to {desired} keeps nodes at "
                     f"{replicas * share / desired:.1f}% < {out:g}%")


def _cluster_cap(policy: ScalingPolicy, replicas: int, desired: int, values: list[float],
                 source: str) -> tuple[int, str | None]:
    """Admit added replicas only while total + expected draw per added replica stays inside the budget."""
    budget = policy.cluster_power_budget
    if budget is None or desired <= replicas:
        return desired, None
    total = sum(values)
    # the nodes' power spread over the replicas or over the nodes, whichever is more: idle nodes (or the draw of
    # other workloads on them) must not lower it, nor replicas packed on few nodes (one more may need a new node)
    per_replica = total / min(len(values), max(replicas, 1))
    if per_replica <= 0:
        return desired, None
    admitted = replicas + max(math.floor((budget - total) / per_replica + 1e-9), 0)
    if desired <= admitted:
        return desired, None
    capped = max(admitted, policy.min_replicas)
    return capped, (f"capped at {capped} by cluster_power_budget {budget:g} W ({source} total {total:.0f} W "
                    f"+ {per_replica:.0f} W expected per added replica)")


def decide(policy: ScalingPolicy, observation: PowerObservation, forecast: ForecastView | None,
           state: PolicyState, now: datetime, earlier: EarlierChange | None = None) -> ScalingDecision:
    """Decide the replica count for one policy at `now`; every outcome, including hold, carries a reason.

    `now` and `state.last_scale_at` must both be timezone-aware (or both naive). `earlier`: another policy changed
    the target earlier in this tick.
    """
    replicas = observation.replicas

    def result(to: int, reason: str, signal: str = "none", measured: float | None = None,
               predicted: float | None = None, used: bool = False,
               recommended: int | None = None, outside: bool = False) -> ScalingDecision:
        action = (ScaleAction.SCALE_OUT if to > replicas else ScaleAction.SCALE_IN if to < replicas
                  else ScaleAction.HOLD)
        head = f"hold at {replicas}" if to == replicas else f"{action.value} {replicas} -> {to}"
        return ScalingDecision(action=action, from_replicas=replicas, to_replicas=to,
                               recommended_replicas=recommended, reason=f"{head}: {reason}", signal=signal,
                               measured_share=measured, forecast_share=predicted, used_forecast=used, at=now,
                               outside_change=outside)

    if not policy.power_based.enabled:
        return result(replicas, "power-based scaling is disabled for this policy")
    if stale := _stale_reason(policy, observation):
        bounded = min(max(replicas, policy.min_replicas), policy.max_replicas)
        if bounded == replicas:
            return result(replicas, f"{stale}; holding (never scale on missing data)")
        bound = "min_replicas" if bounded > replicas else "max_replicas"
        parts = [f"{stale}, but the target is outside its bounds: back to {bound} {bounded} (needs no telemetry)"]
        target, drifted = _paced(policy, replicas, bounded, state, now, earlier, parts)
        return result(target, "; ".join(parts), outside=drifted and target != replicas)

    measured_values = observation.measured_per_node_watts
    measured = _share(measured_values, policy)
    notes: list[str] = []
    view = None
    if policy.predictive_scaling.enabled:
        if problem := _forecast_problem(forecast):
            notes.append(f"forecast unavailable: {problem}; using measured power")
        else:
            view = forecast
    if view is not None and view.peak_bound and view.expected_per_node_watts:
        values, signal = view.upper_quantile_per_node_watts, "forecast"
        predicted = _share(values, policy)
        expected = max(_share(view.expected_per_node_watts, policy), measured)
        desired, why = peak_count(policy, replicas, expected, predicted, _forecast_label(policy, view))
        # the cap counts what the nodes draw now when that is more than the bound (a present overload)
        cap_values, cap_source = ((values, signal) if sum(values) >= sum(measured_values)
                                  else (measured_values, "measured"))
    else:
        desired, why, signal, values, predicted = _upper_rule(policy, replicas, measured_values, view, notes)
        cap_values, cap_source = values, signal
    if signal == "forecast" and desired < replicas and view is not None:
        desired = _partial_window_floor(policy, replicas, desired, measured, view, notes)
    parts = [why, *notes]
    clamped = min(max(desired, policy.min_replicas), policy.max_replicas)
    if clamped != desired:
        bound = "max_replicas" if clamped < desired else "min_replicas"
        parts.append(f"clamped to {bound} {clamped}")
    recommended, capped = _cluster_cap(policy, replicas, clamped, cap_values, cap_source)
    if capped:
        parts.append(capped)
    target, drifted = _paced(policy, replicas, recommended, state, now, earlier, parts)
    return result(target, "; ".join(parts), signal, measured, predicted, predicted is not None, recommended,
                  outside=drifted and target != replicas)


def _paced(policy: ScalingPolicy, replicas: int, recommended: int, state: PolicyState, now: datetime,
           earlier: EarlierChange | None, parts: list[str]) -> tuple[int, bool]:
    """Where the target goes this change towards `recommended` (step limits, stabilization, cooldown, the tick's
    earlier changes), and whether the cooldown was skipped for a count lowered outside this controller; each rule
    that shaped it is added to `parts`."""
    target, limits = limit_change(policy.behavior, replicas, recommended, state.recent, now,
                                  policy.min_replicas, policy.max_replicas)
    parts += limits

    # only a count lowered by someone else (the harm: more power per node); a count raised by another policy on the
    # same target, or by another autoscaler, is held as before, so two writers never fight every tick. A count set
    # earlier in this tick is this controller's own.
    lowered = earlier is None and state.replicas_after is not None and replicas < state.replicas_after
    answered = state.outside_answered_at
    drifted = lowered and (answered is None or (now - answered).total_seconds() >= policy.hold_s)
    if lowered:
        parts.append(f"replicas lowered outside this controller ({state.replicas_after} -> {replicas}, e.g. a "
                     "redeploy): " + ("not held by the cooldown" if drifted else "answered once within the hold"))
    if target != replicas and state.last_scale_at is not None and not drifted:
        left = policy.hold_s - (now - state.last_scale_at).total_seconds()
        if left > 0:
            cooldown = policy.power_based.cooldown_period
            why = ("cooldown" if cooldown >= policy.actuation_delay else
                   f"the last change is still taking effect (actuation_delay {policy.actuation_delay} s)")
            parts.insert(0, f"{why}, {math.ceil(left)} s left (would go to {target})")
            target = replicas
    if target < replicas and earlier is not None and earlier.raised:
        parts.insert(0, f"policy {earlier.policy} raised the target to {replicas} earlier in this tick, and no "
                        f"policy lowers that within the tick (would go to {target})")
        target = replicas
    return target, drifted


def _partial_window_floor(policy: ScalingPolicy, replicas: int, desired: int, measured: float, view: ForecastView,
                          notes: list[str]) -> int:
    """A scale-in on a forecast that covers only part of the risk window (a served model with a shorter horizon)
    goes no further than measured power alone would take it: the uncovered end is not known to be quiet."""
    if view.window_s is None or view.window_s >= policy.risk_window_s:
        return desired
    floor, _ = _proportional(policy, replicas, measured, "measured power", confident=False)
    if floor <= desired:
        return desired
    notes.append(f"the forecast covers {format_duration(view.window_s)} of the {format_duration(policy.risk_window_s)} "
                 f"risk window, so the scale-in goes only as far as measured power allows ({floor})")
    return floor


def _upper_rule(policy: ScalingPolicy, replicas: int, measured_values: list[float], view: ForecastView | None,
                notes: list[str]) -> tuple[int, str, str, list[float], float | None]:
    """The count on measured power and, without a peak bound, the forecast's highest per-step quantile: the larger
    share drives (desired, why, signal, its per-node values, the forecast's share or None)."""
    measured = _share(measured_values, policy)
    forecast_values = view.upper_quantile_per_node_watts if view is not None else []
    predicted = _share(forecast_values, policy) if forecast_values else None
    if view is not None and predicted is not None and predicted >= measured:
        desired, why = _proportional(policy, replicas, predicted, _forecast_label(policy, view), confident=True)
        return desired, why, "forecast", forecast_values, predicted
    if predicted is not None:
        notes.append(f"measured {measured:.1f}% exceeds the forecast upper quantile {predicted:.1f}%")
    desired, why = _proportional(policy, replicas, measured, "measured power", confident=False)
    return desired, why, "measured", measured_values, predicted
