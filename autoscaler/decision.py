"""The scaling decision maths (docs/architecture.md): one pure function from a policy and its inputs to a decision.

Power plays the role CPU plays in a Kubernetes HPA. The signal is the target's per-node power (mean or max
over its nodes) as a percent share of `max_power_budget`. With a usable forecast the share is the larger of
the measured share and the forecast's upper-quantile share, so the forecast can scale out early and must
agree before scaling in, and a present overload is never ignored.

- share > scale-out threshold: scale out to ceil(replicas * share / out), so the re-spread share is <= out.
- share < scale-in threshold: consolidate to the fewest replicas n with replicas * share / n < out.
  A scale-out of a policy that gives its nodes' `idle_power_watts` (share i) counts only the rest as re-spreading
  (i + replicas * (share - i) / n per node), so it lands under the threshold in one change; a scale-in counts every
  watt, which overstates the fewer nodes' draw: the headroom that keeps it from landing at the threshold.
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
undo each other within a tick. Its power, measured and forecast at the count read at the tick's start (r), is then
the load of r replicas: re-spread over the count set earlier (n), each node carries r / n of it (of the part above
the nodes' `idle_power_watts`, where the policy gives it), and the cluster
budget counts the replicas added beyond r as drawing too; so a later policy never adds a replica for load that an
earlier raise already spread. Every decision's reason says which of these rules shaped it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import fmean

from pydantic import BaseModel, ConfigDict, Field

from autoscaler.behavior import Recommendation, limit_change, remember
from autoscaler.forecast_view import ForecastView
from autoscaler.peak_rule import peak_count
from autoscaler.schema import PowerObservation, ScaleAction, ScalingDecision, ScalingPolicy
from autoscaler.settings import REPLICAS_LIMIT
from core.durations import format_duration


class PolicyState(BaseModel):
    """What a policy remembers between ticks (the controller persists it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    last_scale_at: datetime | None = None
    recent: tuple[Recommendation, ...] = ()  # what the scale-down stabilization window may need
    # the target's replica count after the last decision as the controller knows it (what it set, else what it
    # saw); None: unknown. A lower count at the next tick was set by someone else (a redeploy resets a Serve
    # deployment to its config's num_replicas): a scale-out answering it is not held back by the cooldown, once per
    # hold (a writer that keeps lowering it is answered at the cooldown's pace, as before).
    replicas_after: int | None = None
    outside_answered_at: datetime | None = None  # when a decision last skipped the cooldown for such a change
    # when this policy last changed its target for real (an enforced change's intent; a dry run's never counts):
    # what holds the other policies on the target (autoscaler/intents.py TickCounts)
    changed_target_at: datetime | None = None

    def no_later_than(self, now: datetime) -> PolicyState:
        """The state with every time after `now` taken as `now`: after the clock stepped back (or a state file from a
        host whose clock ran ahead), a change stamped in the future would hold the cooldown, the urgent scale-out
        and the stabilization window for as long as the clock is behind; stored again so, they last from now."""
        def clamped(at: datetime | None) -> datetime | None:
            return None if at is None else min(at, now)

        if all(at is None or at <= now for at in (self.last_scale_at, self.outside_answered_at,
                                                   self.changed_target_at, *(r.at for r in self.recent))):
            return self
        return self.model_copy(update={
            "last_scale_at": clamped(self.last_scale_at), "outside_answered_at": clamped(self.outside_answered_at),
            "changed_target_at": clamped(self.changed_target_at),
            "recent": tuple(r.model_copy(update={"at": min(r.at, now)}) for r in self.recent)})

    def first_seen(self, replicas: int, now: datetime) -> PolicyState:
        """The state a policy's first decision starts from (a new policy, or one pointed at another target): the
        target's count then is remembered as recommended at `now`, as the HPA records its initial recommendation, so
        the stabilization window holds a first low reading's scale-in as it holds one after any decision."""
        if self.recent or self.replicas_after is not None:  # (a cooldown stamp alone: a row set aside or unreadable)
            return self
        return self.model_copy(update={"recent": (Recommendation(at=now, replicas=replicas),)})

    def after(self, decision: ScalingDecision, *, scaled: bool | None = None, known: bool = True) -> PolicyState:
        """The state after `decision`: its recommendation remembered, and the cooldown clock restarted when the
        replica count changed (`scaled`; default: when the decision is a change). `known` False: the count the
        target has now is not known (an actuation of unknown outcome, a dry run)."""
        changed = decision.action is not ScaleAction.HOLD if scaled is None else scaled
        recent = self.recent
        if decision.recommended_replicas is not None:
            recent = remember(recent, Recommendation(at=decision.at, replicas=decision.recommended_replicas))
        elif decision.action is ScaleAction.HOLD and decision.measured_share is None:  # a blind hold (stale
            # telemetry) keeps the count it held: the stabilization window counts it, so the first reading after an
            # outage does not consolidate at once. A hold on power read before the last change took effect keeps
            # nothing: the change's own recommendation is in the window, and the old count's power says nothing.
            recent = remember(recent, Recommendation(at=decision.at, replicas=decision.from_replicas))
        count = (decision.to_replicas if changed else decision.from_replicas) if known else None
        answered = decision.at if decision.outside_change else self.outside_answered_at
        if known and not changed and decision.action is not ScaleAction.HOLD and decision.outside_change:
            # a change refused (nothing written): the outside lowering it answered is still unanswered, and the
            # next tick may answer it again rather than wait out the cooldown of the change before it
            count, answered = self.replicas_after, self.outside_answered_at
        return PolicyState(last_scale_at=decision.at if changed else self.last_scale_at, recent=recent,
                           replicas_after=count, outside_answered_at=answered,
                           changed_target_at=self.changed_target_at)


class EarlierChange(BaseModel):
    """A change another policy made to the same target earlier in this tick; the observation's count is its result
    (or may be: an outcome unknown counts as landed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str  # the policy that set the count
    raised: bool  # a change of this tick raised the count: no later policy lowers it within the tick
    unknown: bool = False  # that change was sent and never answered: the count may not be what it set
    # the count the target had when this policy's power was measured and forecast (the tick's start): that power is
    # the load of that many replicas, re-spread over the count set earlier to decide; None: taken as it is
    read_replicas: int | None = Field(None, ge=0)


@dataclass(frozen=True)
class _Respread:
    """Power read at `read` replicas, decided on at the `count` an earlier policy of the tick set: each node's
    share of the same load is read / count of what was read above its idle draw (the re-spread the count rules
    assume)."""

    read: int
    count: int
    policy: str
    idle_watts: float  # what stays on every node (`power_based.idle_power_watts`)

    @classmethod
    def of(cls, policy: ScalingPolicy, observation: PowerObservation,
           earlier: EarlierChange | None) -> _Respread | None:
        """None when nothing is to re-spread: no earlier change, the count read unknown or unchanged, or either at
        zero (no replicas to spread over)."""
        if earlier is None or earlier.read_replicas is None:
            return None
        read, count = earlier.read_replicas, observation.replicas
        if read == count or read == 0 or count == 0:
            return None
        return cls(read, count, earlier.policy, policy.power_based.idle_power_watts or 0.0)

    def watts(self, values: list[float]) -> list[float]:
        """Each reading re-spread: only its part above the idle draw moves (a reading at or under it stays)."""
        idle = self.idle_watts
        return [idle + (value - idle) * self.read / self.count if value > idle else value for value in values]

    def view(self, view: ForecastView | None) -> ForecastView | None:
        if view is None:
            return None
        return view.model_copy(update={"upper_quantile_per_node_watts": self.watts(view.upper_quantile_per_node_watts),
                                       "expected_per_node_watts": self.watts(view.expected_per_node_watts)})

    def note(self) -> str:
        moved = "raised" if self.count > self.read else "lowered"
        above = f" above the nodes' idle {self.idle_watts:g} W" if self.idle_watts else ""
        return (f"policy {self.policy} {moved} the target to {self.count} earlier in this tick: the power read at "
                f"{self.read} replicas is counted re-spread over {self.count} (x{self.read / self.count:.3g}{above})")


@dataclass(frozen=True)
class _Signal:
    """The count the power asks for, why, which signal drove it, the forecast's share, and whose values the cluster
    budget counts ("forecast": the forecast's upper quantile, else measured power)."""

    desired: int
    why: str
    signal: str
    predicted: float | None
    cap_source: str


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
    online = f" (its spread x{forecast.spread_factor:.2f}, corrected online)" if forecast.spread_factor else ""
    beyond = (f" ({forecast.extrapolated_nodes} node(s) beyond the model's training range: an extrapolation, "
              "its bound widened)" if forecast.extrapolated_nodes else "")
    return f"forecast {level} {'peak bound' if forecast.peak_bound else 'upper quantile'}{window}{online}{beyond}"


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
    power = policy.power_based
    out, inn = power.scale_out_threshold, power.scale_in_threshold
    what = f"{label} {share:.1f}% of the per-node budget"
    if share > out:
        desired = power.fewest(share, replicas, out, guard=False)
        if desired > REPLICAS_LIMIT:  # `fewest` found none within what any target may have
            return desired, (f"{what} > scale-out threshold {out:g}%; no count up to {REPLICAS_LIMIT:,} replicas "
                             f"brings it under")
        spread = f", re-spread to {power.spread(share, replicas, desired):.1f}%{_idle_note(policy)}" if desired else ""
        return desired, f"{what} > scale-out threshold {out:g}%; proportional count {desired}{spread}"
    if share >= inn and not confident:
        return replicas, f"{what} within the hysteresis band [{inn:g}%, {out:g}%]"
    # counted as if every watt re-spread: it overstates what the fewer nodes will draw where they idle high, a
    # headroom that keeps a consolidation from landing at the threshold and back out at the next reading
    desired = min(power.fewest(share, replicas, out, below=True, idle=False), replicas)
    below = f"< scale-in threshold {inn:g}%" if share < inn else f"<= scale-out threshold {out:g}%"
    if desired >= replicas:
        return replicas, f"{what} {below}, but fewer replicas would not keep nodes under {out:g}%"
    return desired, (f"{what} {below}; consolidating to {desired} keeps nodes at "
                     f"{power.spread(share, replicas, desired, idle=False):.1f}% < {out:g}%")


def _idle_note(policy: ScalingPolicy) -> str:
    """Said where a count counted each node's idle draw as staying put."""
    idle = policy.power_based.idle_power_watts
    return f" (each node's idle {idle:g} W stays put)" if idle else ""


def _cluster_cap(policy: ScalingPolicy, replicas: int, desired: int, values: list[float],
                 source: str, read: int) -> tuple[int, str | None]:
    """Admit added replicas only while total + expected draw per added replica stays inside the budget.

    `values` were read at `read` replicas (`replicas` unless an earlier policy of the tick changed the count): the
    replicas it added beyond them are not in the total yet, so they count as added replicas too.
    """
    budget = policy.cluster_power_budget
    if budget is None or desired <= replicas:
        return desired, None
    total = sum(values)
    # the nodes' power spread over the replicas or over the nodes, whichever is more: idle nodes (or the draw of
    # other workloads on them) must not lower it, nor replicas packed on few nodes (one more may need a new node)
    per_replica = total / min(len(values), max(read, 1))
    if per_replica <= 0:
        return desired, None
    admitted = read + max(math.floor((budget - total) / per_replica + 1e-9), 0)
    if desired <= admitted:
        return desired, None
    capped = max(admitted, policy.min_replicas, replicas)  # never below the count set earlier in the tick
    earlier = f", {replicas - read} of them added earlier in this tick" if replicas > read else ""
    return capped, (f"capped at {capped} by cluster_power_budget {budget:g} W ({source} total {total:.0f} W "
                    f"+ {per_replica:.0f} W expected per added replica{earlier})")


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
    notes: list[str] = []
    view = None
    if policy.predictive_scaling.enabled:
        if problem := _forecast_problem(forecast):
            notes.append(f"forecast unavailable: {problem}; using measured power")
        else:
            view = forecast
    respread = _Respread.of(policy, observation, earlier)
    if respread is None:
        asked = _signal(policy, replicas, measured_values, view, notes)
    else:  # decide on the load read at the tick's start, spread over the count an earlier policy set
        notes.insert(0, respread.note())
        asked = _signal(policy, replicas, respread.watts(measured_values), respread.view(view), notes)
    parts = [asked.why, *notes]
    clamped = min(max(asked.desired, policy.min_replicas), policy.max_replicas)
    if clamped != asked.desired:
        bound = "max_replicas" if clamped < asked.desired else "min_replicas"
        parts.append(f"clamped to {bound} {clamped}")
    forecast_values = view.upper_quantile_per_node_watts if view is not None else []
    cap_values = forecast_values if asked.cap_source == "forecast" else measured_values
    recommended, capped = _cluster_cap(policy, replicas, clamped, cap_values, asked.cap_source,
                                       replicas if respread is None else respread.read)
    if capped:
        parts.append(capped)
    # the decision reports the power as read (the reason gives the re-spread shares it decided on)
    measured = _share(measured_values, policy)
    load = measured_values if respread is None else respread.watts(measured_values)
    read_at = None if observation.age_s is None else now - timedelta(seconds=observation.age_s)
    overload = read_at if _share(load, policy) > 100.0 else None  # over the budget now: when it was read
    target, drifted = _paced(policy, replicas, recommended, state, now, earlier, parts, overload_read_at=overload,
                             read_at=read_at)
    predicted = None if asked.predicted is None else _share(forecast_values, policy)
    kept = recommended if not _read_before_effect(policy, replicas, state, read_at) else _held_count(policy, replicas,
                                                                                                        state, now)
    return result(target, "; ".join(parts), asked.signal, measured, predicted, predicted is not None, kept,
                  outside=drifted and target != replicas)


def _held_count(policy: ScalingPolicy, replicas: int, state: PolicyState, now: datetime) -> int | None:
    """What a decision on power read before the last change took effect leaves the stabilization window: nothing
    while the change's own recommendation is still in it (the old count's power asks for nothing), the count the
    change set once that has aged out (a delay longer than the window), so the first reading after the change does
    not consolidate at once."""
    since = state.last_scale_at or now  # set wherever _read_before_effect holds
    return replicas if (now - since).total_seconds() > policy.behavior.scale_down.stabilization_window else None


def _read_before_effect(policy: ScalingPolicy, replicas: int, state: PolicyState, read_at: datetime | None) -> bool:
    """Whether the power decided on was read before the last change took effect, while the count is the one that
    change set: it is the power of the count before (`_paced` makes no change on it)."""
    if read_at is None or state.last_scale_at is None or state.replicas_after != replicas:
        return False
    return read_at < state.last_scale_at + timedelta(seconds=policy.actuation_delay)


def _signal(policy: ScalingPolicy, replicas: int, measured_values: list[float], view: ForecastView | None,
            notes: list[str]) -> _Signal:
    """The count the measured power and the usable forecast `view` ask for at `replicas` (a peak bound when the
    forecast has one, else the larger of measured power and the forecast's upper quantile)."""
    measured = _share(measured_values, policy)
    if view is not None and view.peak_bound and view.expected_per_node_watts:
        values = view.upper_quantile_per_node_watts
        predicted = _share(values, policy)
        label = _forecast_label(policy, view)
        forecast_peak = _share(view.expected_per_node_watts, policy)
        desired, why = peak_count(policy, replicas, max(forecast_peak, measured), predicted, label)
        signal = "forecast"
        if measured > forecast_peak:
            notes.append(f"the expected peak is the measured {measured:.1f}%, above the forecast's "
                         f"{forecast_peak:.1f}%")
            if peak_count(policy, replicas, forecast_peak, predicted, label)[0] != desired:
                signal = "measured"  # the present draw, not the forecast, set the count
        # the cap counts what the nodes draw now when that is more than the bound (a present overload)
        cap_source = "forecast" if sum(values) >= sum(measured_values) else "measured"
    else:
        desired, why, signal, predicted = _upper_rule(policy, replicas, measured_values, view, notes)
        cap_source = signal  # and, as under a peak bound, what the nodes draw now where that is more in total
        if signal == "forecast" and sum(view.upper_quantile_per_node_watts) < sum(measured_values):
            cap_source = "measured"
    if desired < replicas and view is not None:  # whichever power set the count, a forecast was weighed
        desired = _partial_window_floor(policy, replicas, desired, measured, view, notes)
    return _Signal(desired, why, signal, predicted, cap_source)


def _paced(policy: ScalingPolicy, replicas: int, recommended: int, state: PolicyState, now: datetime,
           earlier: EarlierChange | None, parts: list[str], *,
           overload_read_at: datetime | None = None, read_at: datetime | None = None) -> tuple[int, bool]:
    """Where the target goes this change towards `recommended` (step limits, stabilization, cooldown, the tick's
    earlier changes), and whether the cooldown was skipped for a count lowered outside this controller; each rule
    that shaped it is added to `parts`. `overload_read_at`: when the reading that puts the nodes over the budget
    was taken (None: they are not over it). A scale-out then does not wait for the rest of the cooldown once that
    reading was taken after the last change took effect: it shows the change did not suffice. Only a policy that
    says how long a change takes (`actuation_delay` > 0) can tell; without one the cooldown is that measure.
    `read_at`: when the power decided on was read. Read before the last change took effect while the count is the
    one that change set, it is the power of the count before: no change is made on it (a scale-in on it would
    spread the old count's load over the new one's nodes, past the budget)."""
    target, limits = limit_change(policy.behavior, replicas, recommended, state.recent, now,
                                  policy.min_replicas, policy.max_replicas)
    parts += limits

    # only a count lowered by someone else (the harm: more power per node); a count raised by another policy on the
    # same target, or by another autoscaler, is held as before, so two writers never fight every tick. A count set
    # earlier in this tick is this controller's own.
    lowered = earlier is None and state.replicas_after is not None and replicas < state.replicas_after
    answered = state.outside_answered_at
    unanswered = lowered and (answered is None or (now - answered).total_seconds() >= policy.hold_s)
    drifted = unanswered and target > replicas  # the answer to it is more replicas; a further scale-in waits as any
    left = policy.hold_s - (now - state.last_scale_at).total_seconds() if state.last_scale_at is not None else 0.0
    if lowered:
        how = ("not held by the cooldown" if drifted else "answered once within the hold" if not unanswered else
               "no more replicas needed" if target >= replicas else
               "a further scale-in is held as any" if left > 0 else "a further scale-in as any")
        parts.append(f"replicas lowered outside this controller ({state.replicas_after} -> {replicas}, e.g. a "
                     f"redeploy): {how}")
    took_effect = (None if state.last_scale_at is None else
                   state.last_scale_at + timedelta(seconds=policy.actuation_delay))
    if target != replicas and state.last_scale_at is not None and not drifted:
        urgent = overload_read_at is not None and target > replicas and policy.actuation_delay > 0
        if left > 0 and urgent and overload_read_at >= took_effect:
            parts.append(f"over the budget in a reading taken after the last change took effect (actuation_delay "
                         f"{policy.actuation_delay} s): the scale-out does not wait for the cooldown "
                         f"({math.ceil(left)} s left)")
        elif left > 0:
            cooldown = policy.power_based.cooldown_period
            why = ("cooldown" if cooldown >= policy.actuation_delay else
                   f"the last change is still taking effect (actuation_delay {policy.actuation_delay} s)")
            sooner = ("; over the budget, it goes sooner once a reading taken after the last change took effect "
                      "still shows it" if urgent else "")
            parts.insert(0, f"{why}, {math.ceil(left)} s left (would go to {target}{sooner})")
            target = replicas
    if target != replicas and not drifted and _read_before_effect(policy, replicas, state, read_at):
        bounded = min(max(replicas, policy.min_replicas), policy.max_replicas)  # back to them needs no reading
        back = f"; back to its bounds, {bounded}" if bounded != replicas else ""
        parts.insert(0, f"the power was read {math.ceil((took_effect - read_at).total_seconds())} s before the last "
                        f"change to {replicas} took effect: it is the power of the count before; waiting for a "
                        f"reading taken after it (would go to {target}){back}")
        target = bounded
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
                notes: list[str]) -> tuple[int, str, str, float | None]:
    """The count on measured power and, without a peak bound, the forecast's highest per-step quantile: the larger
    share drives (desired, why, signal, the forecast's share or None)."""
    measured = _share(measured_values, policy)
    forecast_values = view.upper_quantile_per_node_watts if view is not None else []
    predicted = _share(forecast_values, policy) if forecast_values else None
    if view is not None and predicted is not None and predicted >= measured:
        desired, why = _proportional(policy, replicas, predicted, _forecast_label(policy, view), confident=True)
        return desired, why, "forecast", predicted
    if predicted is not None:
        notes.append(f"measured {measured:.1f}% exceeds the forecast upper quantile {predicted:.1f}%")
    desired, why = _proportional(policy, replicas, measured, "measured power", confident=False)
    return desired, why, "measured", predicted
