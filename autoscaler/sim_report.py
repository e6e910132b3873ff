"""One replay of a trained forecaster's test part under a policy, a demand model and an actuation delay: the three
runs (`predictive`, `reactive`, `reactive_margin`) and the simulator's report (docs/architecture.md).
"""

from __future__ import annotations

import math
from typing import Any

from autoscaler.peak_tracking import PeakTracker
from autoscaler.schema import ScalingPolicy
from autoscaler.sim_forecast import ReplayData
from autoscaler.trace_replay import (
    DemandModel,
    RunMetrics,
    RunResult,
    as_replayed,
    reactive,
    simulate_series,
    with_margin,
)

RUNS = ("predictive", "reactive", "reactive_margin")


def planned(policy: ScalingPolicy, actuation_delay_s: int, step_s: int) -> ScalingPolicy:
    """The policy as it runs in a world whose changes take `actuation_delay_s`: its own `actuation_delay` when the
    file sets one, else that delay; as replayed at `step_s` (`trace_replay.as_replayed`), so its report shows the
    `stale_after_s` the replay ran with."""
    if "actuation_delay" not in policy.model_fields_set:
        policy = policy.model_copy(update={"actuation_delay": actuation_delay_s})
    return as_replayed(policy, step_s)


def window_steps(policy: ScalingPolicy, step_s: int, actuation_delay_s: int) -> int:
    """The leads a replayed decision must see, in whole steps rounded up (at least one): the policy's risk window,
    and until the next change could take effect. A replay decides once a bin is read in full and holds on a bin that
    started before the last change took effect by the policy's `actuation_delay`, so the next change is decided at
    the earliest the hold or that delay plus one step after this one (whichever is longer: the step is the replay's
    tick), and lands the replay's `actuation_delay_s` after that (a policy file may state a shorter delay)."""
    next_change_s = max(policy.hold_s, policy.actuation_delay + step_s) + actuation_delay_s
    return max(math.ceil(max(policy.risk_window_s, next_change_s) / step_s), 1)


def replay(data: ReplayData, policy: ScalingPolicy, model: DemandModel, *, step_s: int, actuation_delay_s: int,
           margin: float) -> dict[str, Any]:
    """The three runs over every test series, summed, and every replayed step (`steps`). The predictive run replays
    the series in time order, its online peak correction (autoscaler.peak_tracking) going on from one series to the
    next as a controller's would; a series that starts before the last one it would follow has ended starts its own
    (so no bound learns from an outcome later than itself).

    Raises:
        ValueError: the margin leaves no scale-out threshold, or the forecaster does not reach the risk window.
    """
    margined = with_margin(policy, margin)
    leads = window_steps(policy, step_s, actuation_delay_s)
    totals = {name: RunMetrics() for name in RUNS}
    steps: list[dict[str, Any]] = []
    predicted: dict[int, RunResult] = {}
    level = policy.predictive_scaling.confidence_threshold
    shared, shared_until = PeakTracker(level), None
    for index in sorted(range(len(data.series)), key=lambda n: data.series[n].times[0]):
        series = data.series[index]
        follows = shared_until is None or series.times[0] >= shared_until  # nothing it learns from lies ahead
        predicted[index] = simulate_series(
            policy, model, series.times, series.trace_watts, step_s=step_s, actuation_delay_s=actuation_delay_s,
            forecast=data.forecast_fn(series, leads), coverage=data.coverage,
            peak_tracker=shared if follows else PeakTracker(level))
        if follows:
            shared_until = series.times[-1]
    for index, series in enumerate(data.series):
        common = {"model": model, "times": series.times, "trace_watts": series.trace_watts, "step_s": step_s,
                  "actuation_delay_s": actuation_delay_s,
                  "threshold_pct": policy.power_based.scale_out_threshold}  # the margin run's time above it too
        runs = {"predictive": predicted[index],
                "reactive": simulate_series(reactive(policy), **common),
                "reactive_margin": simulate_series(margined, **common)}
        for name, run in runs.items():
            totals[name] = totals[name].add(run.metrics)
        for i, (when, watts) in enumerate(zip(series.times, series.trace_watts, strict=True)):
            steps.append({"series": series.node_id, "time": when.isoformat(), "trace_watts": round(watts, 3),
                          "demand_watts": round(model.dynamic(watts), 3),
                          **{name: vars(runs[name].steps[i]) for name in RUNS}})
    report: dict[str, Any] = {name: totals[name].report() for name in RUNS}
    report["steps"] = steps
    return report


def settings(data: ReplayData, policy: ScalingPolicy, model: DemandModel, *, trace: str, policy_file: str,
             step_s: int, actuation_delay_s: int, train_fraction: float, margin: float, sequence_length: int,
             epochs: int, split: str = "series") -> dict[str, Any]:
    """The report's `settings`: the inputs of one replay and how its forecaster was trained."""
    return {
        "trace": trace, "policy_file": policy_file, "policy": policy.model_dump(mode="json"),
        "step_seconds": step_s, "idle_watts": model.idle_watts, "demand_scale": model.scale,
        "demand_offset": model.offset, "actuation_delay_seconds": actuation_delay_s,
        "train_fraction": train_fraction, "split": split,
        "horizon_steps": window_steps(policy, step_s, actuation_delay_s),
        "trained_horizon_steps": data.horizon,  # a suite trains once for its longest delay's window
        "risk_window_seconds": policy.risk_window_s, "margin_points": margin,
        "sequence_length": sequence_length, "epochs": epochs, "interval_coverage": data.coverage,
        "model": data.facts,
    }
