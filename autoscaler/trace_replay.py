"""The simulator's pure core: the demand/power model, the step loop and the metrics (no Ray, no files).

A trace's power is the demand of one workload. Its dynamic power D = K * max(p - W0, 0) is spread evenly
over the replicas, and each replica's node draws `idle_watts` on top: per-node power = idle + D / replicas.
Every step the same `decide()` as the controller runs on the measured per-node power (and, for the
predictive run, on the forecast mapped through the same model). A step's reading is its bin's mean, known only when
the bin ends, so that is when its decision is made (the forecast from that step starts there too), on a reading as
old as the bin (it shows a change only when the whole bin ran after it landed: what the cooldown's early scale-out
over the budget asks); a replica-count change takes effect `actuation_delay_s` later, on the first step that starts
then or after (delay 0: the next step). A change of the target counts as a scale event when it is decided, as the
controller records it, even when the series ends before it lands. No change is made on a bin that started before the
last change took effect by the policy's own `actuation_delay` (the replay's delay, unless the policy states another),
and no cooldown restarts: the controller holds on power read before then (when the hold is the actuation delay, it ends
on such a bin). Past that, while a change is still on its way (a replay delay longer than the policy states), the
decision reads the target's count, as the controller does, beside the power of the replicas running: so the replay
shows what a policy that understates its delay costs, a second change on power that does not show the first one yet.
Changes land in the order decided. The scale-down stabilization window keeps the recommendations of the decisions
within it: at a step longer than the window (10-min bins, a 5-min window) each decision sees only its own bin, as a
controller reading one bin a step would.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from autoscaler.decision import PolicyState, decide
from autoscaler.forecast_view import ForecastView
from autoscaler.peak_tracking import PeakTracker, corrected, learn_window
from autoscaler.schema import PowerObservation, ScalingPolicy


@dataclass(frozen=True)
class LeadForecast:
    """Trace-power forecasts at leads 1..L from one step: median, interval upper end and, when the model has one,
    the calibrated peak bound (training.power.peak_bound)."""

    median: Sequence[float]
    upper: Sequence[float]
    peak: Sequence[float] | None = None


ForecastFn = Callable[[int], LeadForecast | None]
"""The forecast made at step i of a series, or None when there is none."""


@dataclass(frozen=True)
class DemandModel:
    idle_watts: float
    scale: float  # K
    offset: float  # W0

    def dynamic(self, trace_watts: float) -> float:
        """The workload's dynamic power for a trace reading."""
        return self.scale * max(trace_watts - self.offset, 0.0)

    def per_node(self, trace_watts: float, replicas: int) -> float:
        """Power of each of the workload's nodes when `replicas` share the demand."""
        return self.idle_watts + self.dynamic(trace_watts) / max(replicas, 1)


def initial_replicas(policy: ScalingPolicy, model: DemandModel, first_trace_watts: float) -> int:
    """max(min_replicas, the fewest replicas keeping the first step at or under the scale-out threshold, as decide()
    reads it). Every run starts so, sized on a bin it has not read yet."""
    budget, threshold = policy.power_based.max_power_budget, policy.power_based.scale_out_threshold
    for replicas in range(max(policy.min_replicas, 1), policy.max_replicas + 1):
        if model.per_node(first_trace_watts, replicas) / budget * 100.0 <= threshold:  # decision._share's form
            return replicas
    return policy.max_replicas


def reactive(policy: ScalingPolicy) -> ScalingPolicy:
    """The same policy with predictive scaling off."""
    return policy.model_copy(update={"predictive_scaling": policy.predictive_scaling.model_copy(
        update={"enabled": False})})


def with_known_idle(policy: ScalingPolicy, model: DemandModel, margin: float) -> ScalingPolicy:
    """The policy with its nodes' idle draw as the replay's demand model has it (an operator who measured the nodes
    would configure it; a controller told to measure it, `measure_idle_power`, would find it), where the policy
    leaves `idle_power_watts` out or measures it and the draw lies below the scale-out threshold, the reactive_margin
    run's too (and, unless measured, below the scale-in threshold, as the field's own check requires); as it is
    otherwise."""
    power = policy.power_based
    known = power.model_copy(update={"idle_power_watts": model.idle_watts})
    configured = power.idle_power_watts is not None and not power.measure_idle_power
    if configured or known.idle_share >= power.scale_out_threshold - margin:  # as with_margin
        return policy
    if not power.measure_idle_power and 0 < power.scale_in_threshold <= known.idle_share:  # it would be refused
        return policy
    return policy.model_copy(update={"power_based": known})


def with_margin(policy: ScalingPolicy, points: float) -> ScalingPolicy:
    """The reactive policy with both thresholds lowered by a fixed safety margin (percentage points)."""
    base = reactive(policy).power_based
    out = base.scale_out_threshold - points
    if out < 1:  # as a policy's floor
        raise ValueError(f"a {points:g}-point margin leaves a scale-out threshold under 1% "
                         f"(it is {base.scale_out_threshold:g}%)")
    if base.idle_share >= out:
        raise ValueError(f"a {points:g}-point margin puts the scale-out threshold ({out:g}%) at or under the nodes' "
                         f"idle draw (idle_power_watts {base.idle_power_watts:g} W, {base.idle_share:.1f}%)")
    margined = base.model_copy(update={"scale_out_threshold": out,
                                       "scale_in_threshold": max(base.scale_in_threshold - points, 0.0)})
    return reactive(policy).model_copy(update={"power_based": margined})


@dataclass
class RunMetrics:
    """What one policy did over the replay; `add` sums series."""

    budget_violation_seconds: float = 0.0
    over_threshold_seconds: float = 0.0
    replica_hours: float = 0.0
    energy_kwh: float = 0.0
    scale_events: int = 0
    decisions: int = 0
    forecast_decisions: int = 0
    simulated_seconds: float = 0.0
    max_per_node_watts: float = 0.0

    @property
    def forecast_used_fraction(self) -> float:
        return self.forecast_decisions / self.decisions if self.decisions else 0.0

    def add(self, other: RunMetrics) -> RunMetrics:
        merged = {k: v + getattr(other, k) for k, v in asdict(self).items() if k != "max_per_node_watts"}
        return RunMetrics(**merged, max_per_node_watts=max(self.max_per_node_watts, other.max_per_node_watts))

    def report(self) -> dict[str, float | int]:
        result = asdict(self)
        result["forecast_used_fraction"] = self.forecast_used_fraction
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in result.items()}


@dataclass
class StepRecord:
    replicas: int  # running: what the step's power is spread over
    charged_replicas: int  # paid for: the running ones, and those a scale-out on its way has asked for
    per_node_watts: float
    signal: str
    action: str
    forecast_share: float | None


@dataclass
class RunResult:
    metrics: RunMetrics = field(default_factory=RunMetrics)
    steps: list[StepRecord] = field(default_factory=list)


def forecast_view(model: DemandModel, forecast: LeadForecast, replicas: int, *, coverage: float, level: float,
                  step_s: int) -> ForecastView:
    """Trace-power forecasts mapped to per-node power at `replicas` (monotone, so a peak stays a peak), as the
    policy's view."""
    nodes = max(replicas, 1)

    def per_node(values: Sequence[float]) -> list[list[float]]:
        return [[model.per_node(q, nodes) for q in values]] * nodes

    peak = None if forecast.peak is None else per_node(forecast.peak)
    return ForecastView.from_interval(per_node(forecast.median), per_node(forecast.upper), coverage=coverage,
                                      level=level, peak=peak, window_s=len(forecast.median) * step_s)


def delay_problem(step_s: int, actuation_delay_s: int) -> str | None:
    """Why a replay at `step_s` cannot honour `actuation_delay_s`, or None: a change lands on a step, so the delay
    must be a whole number of steps (a shorter or uneven one would silently land later than stated)."""
    if actuation_delay_s % step_s:
        return (f"{actuation_delay_s} s is not a whole number of {step_s} s steps (a replayed change lands on a "
                f"step; use a multiple of the step)")
    return None


@dataclass
class _WaitingBound:
    """A decision's bound (per-node watts at `replicas`) over the steps origin + 1 .. `last` of the series."""

    origin: int
    last: int
    bound: float
    replicas: int
    seen_until: int  # the last step at `replicas` since the origin (a step at another count stops it)
    changed: bool = False


class _BoundOutcomes:
    """The replay's side of the online peak correction (autoscaler.peak_tracking), scored as the controller scores
    it (autoscaler.policy_bounds): once its window's last step has been read, each bound the predictive run decided
    on is compared with the power of the window's steps that ran at the replica count it was made for, up to the
    first step at another count (the run's own change or not); a window cut short that way teaches only a miss."""

    def __init__(self, tracker: PeakTracker):
        self.tracker = tracker
        self._waiting: deque[_WaitingBound] = deque()

    def correct(self, view: ForecastView) -> ForecastView:
        return corrected(view, self.tracker)

    def wait(self, origin: int, view: ForecastView, leads: int, replicas: int) -> None:
        if view.calibrated and view.upper_quantile_per_node_watts:
            self._waiting.append(_WaitingBound(origin, origin + leads, max(view.upper_quantile_per_node_watts),
                                               replicas, seen_until=origin))

    def observe(self, now: int, replicas: int) -> None:
        """Note the count step `now` ran at: windows made for it were carried through `now`."""
        for waiting in self._waiting:
            if waiting.changed:
                continue
            if replicas == waiting.replicas:
                waiting.seen_until = now
            else:
                waiting.changed = True

    def score(self, now: int, model: DemandModel, trace_watts: Sequence[float]) -> None:
        """Learn from every bound whose window ends at step `now` or before (step `now` has been read)."""
        while self._waiting and self._waiting[0].last <= now:
            done = self._waiting.popleft()
            read = trace_watts[done.origin + 1:min(done.seen_until, done.last) + 1]
            if read:
                learn_window(self.tracker, done.bound, model.per_node(max(read), done.replicas),
                             whole=done.seen_until >= done.last)


def as_replayed(policy: ScalingPolicy, step_s: int) -> ScalingPolicy:
    """The policy with its `stale_after_s` at least a step: a replayed reading is a whole bin's mean, as old as the
    bin when it is decided on."""
    return policy.model_copy(update={"stale_after_s": max(policy.stale_after_s, step_s)})


def simulate_series(policy: ScalingPolicy, model: DemandModel, times: Sequence[datetime],
                    trace_watts: Sequence[float], *, step_s: int, actuation_delay_s: int,
                    forecast: ForecastFn | None = None, coverage: float = 0.8,
                    peak_tracker: PeakTracker | None = None, threshold_pct: float | None = None) -> RunResult:
    """Replay one gap-free series step by step; each step holds its power for `step_s` seconds.

    At each step pending changes due by now take effect, the step is accounted, then the policy decides at the
    step's end on the measured per-node power (as old as the step: the policy's `stale_after_s` is taken as at least
    that) and, when `forecast` gives one, the forecast view. With the policy's
    `online_bound` the view's bound is corrected online by the outcomes of the earlier bounds (autoscaler.peak_tracking)
    that `peak_tracker` learned from (series replayed one after another in time share one; default: a new one).
    `threshold_pct`: the scale-out threshold `over_threshold_seconds` counts time above (default the policy's own;
    runs compared with each other take one, whatever threshold each acts on). `replica_hours` count what is paid for:
    a scale-out from its decision, while its replicas start, and a scale-in until it lands; `energy_kwh` counts the
    running replicas' nodes.
    """
    if problem := delay_problem(step_s, actuation_delay_s):
        raise ValueError(f"actuation delay {problem}")
    if not times:
        return RunResult()
    policy = as_replayed(policy, step_s)
    budget = policy.power_based.max_power_budget
    threshold = budget * (threshold_pct or policy.power_based.scale_out_threshold) / 100.0
    level = policy.predictive_scaling.confidence_threshold
    replicas = initial_replicas(policy, model, trace_watts[0])
    pending: list[tuple[datetime, int]] = []
    state = PolicyState()
    online = policy.predictive_scaling.enabled and policy.predictive_scaling.online_bound and level > 0.5
    outcomes = _BoundOutcomes(peak_tracker or PeakTracker(level)) if online else None
    result = RunResult()
    metrics = result.metrics
    for i, (now, watts) in enumerate(zip(times, trace_watts, strict=True)):
        while pending and pending[0][0] <= now:
            _, replicas = pending.pop(0)
        per_node = model.per_node(watts, replicas)
        # a scale-out is paid for from its decision (its replicas are asked for, and held, while they start); a
        # scale-in until it lands (the replicas it removes run until then)
        charged = max([replicas, *(count for _, count in pending)])
        metrics.budget_violation_seconds += step_s if per_node > budget else 0
        metrics.over_threshold_seconds += step_s if per_node > threshold else 0
        metrics.replica_hours += charged * step_s / 3600.0
        metrics.energy_kwh += replicas * per_node * step_s / 3.6e6
        metrics.simulated_seconds += step_s
        metrics.max_per_node_watts = max(metrics.max_per_node_watts, per_node)

        view = None
        if policy.predictive_scaling.enabled:
            interval = forecast(i) if forecast is not None else None
            view = (forecast_view(model, interval, replicas, coverage=coverage, level=level, step_s=step_s)
                    if interval is not None else ForecastView.unavailable("no forecast window at this step"))
            if outcomes is not None:
                outcomes.observe(i, replicas)
                outcomes.score(i, model, trace_watts)
                view = outcomes.correct(view)
                if interval is not None:
                    outcomes.wait(i, view, len(interval.median), replicas)
        # the controller reads the target's count, which a change on its way (a replay delay longer than the policy
        # states) has already set, beside the power of the replicas running
        target = pending[-1][1] if pending else replicas
        observation = PowerObservation(measured_per_node_watts=[per_node] * replicas, age_s=float(step_s),
                                       replicas=target)
        decided_at = now + timedelta(seconds=step_s)  # when this step's bin has been read in full
        state = state.first_seen(target, decided_at)  # as the controller starts a policy
        decision = decide(policy, observation, view, state, decided_at)
        # power read before the last change took effect by the policy's own actuation_delay: the controller holds
        # on it (decision._paced), and starts no cooldown
        stated = state.last_scale_at + timedelta(seconds=policy.actuation_delay) if state.last_scale_at else None
        read_before_effect = stated is not None and now < stated
        changes = not read_before_effect and decision.to_replicas != target
        state = state.after(decision, scaled=changes)
        metrics.decisions += 1
        metrics.forecast_decisions += decision.signal == "forecast"
        if changes:
            metrics.scale_events += 1
            pending.append((decided_at + timedelta(seconds=actuation_delay_s), decision.to_replicas))
        action = decision.action.value if changes else "hold"  # a repeated target is no change
        result.steps.append(StepRecord(replicas, charged, round(per_node, 3), decision.signal, action,
                                       decision.forecast_share))
    return result
