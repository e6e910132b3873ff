"""The controller's side of the online peak correction (autoscaler.peak_tracking): each policy's bound, as its decision
used it, scored against the power the policy's nodes drew over the window the bound was for.

The bound is the policy's aggregate (its `aggregation`, max or mean over the nodes) of the per-node bounds, for the
replica count read at that tick. Every later tick inside the window folds its reading (the same aggregate of the
nodes' latest power, when none is missing or stale) into the window's peak, re-spread to that replica count (the
decision's own rule: r replicas' power carried by n nodes is r / n of it each), so the controller's own scaling does
not count as the forecast being right or wrong. One bound per model step waits (ticks within a step forecast from
the same stored window), so the correction learns at the pace the simulator replays it. A window is learned from
when it has ended, once, and only when at least one reading fell inside it. A policy's correction starts afresh when
its confidence level changes; the corrections live in the controller (a restarted controller starts uncorrected).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import fmean

from autoscaler.forecast_view import ForecastView
from autoscaler.peak_tracking import PeakTracker
from autoscaler.schema import PowerObservation, ScalingPolicy


@dataclass
class _Window:
    """A bound waiting for the power of its window (origin, end]."""

    origin: datetime
    end: datetime
    bound: float  # watts per node, the policy's aggregate
    replicas: int  # the count the bound was made for
    peak: float = -math.inf  # the highest reading inside the window so far, re-spread to `replicas`


class PolicyBounds:
    """Per policy: its peak tracker and the bounds waiting for their windows' power."""

    def __init__(self) -> None:
        self._trackers: dict[str, PeakTracker] = {}
        self._waiting: dict[str, deque[_Window]] = {}

    def observe(self, policy: ScalingPolicy, observation: PowerObservation | None, now: datetime) -> None:
        """Fold the tick's reading into the policy's waiting windows, then learn from those that have ended."""
        waiting = self._waiting.get(policy.name)
        if not waiting:
            return
        reading = _reading(policy, observation)
        if reading is not None and observation is not None:
            for window in waiting:
                if window.origin < now <= window.end:
                    window.peak = max(window.peak, reading * observation.replicas / window.replicas)
        tracker = self._tracker(policy)
        while waiting and waiting[0].end <= now:
            done = waiting.popleft()
            if done.peak > -math.inf:
                tracker.learn(done.bound, done.peak)

    def correct(self, policy: ScalingPolicy, view: ForecastView, replicas: int | None, now: datetime,
                step_s: int) -> ForecastView:
        """The policy's view with its bound's spread corrected. The corrected bound then waits for its window, at
        most one per `step_s` (the model's step: ticks within one step forecast from the same window)."""
        if not (policy.predictive_scaling.online_bound and view.calibrated and view.upper_quantile_per_node_watts):
            return view
        corrected = view.spread(self._tracker(policy).factor)
        waiting = self._waiting.setdefault(policy.name, deque())
        if replicas and (not waiting or (now - waiting[-1].origin).total_seconds() >= step_s):
            window_s = corrected.window_s or policy.risk_window_s
            bound = _aggregate(policy, corrected.upper_quantile_per_node_watts)
            waiting.append(_Window(now, now + timedelta(seconds=window_s), bound, replicas))
        return corrected

    def tracker(self, name: str) -> PeakTracker | None:
        """The named policy's tracker, if it has one."""
        return self._trackers.get(name)

    def retain(self, names: Iterable[str]) -> None:
        """Forget the policies not named (deleted ones)."""
        kept = set(names)
        for table in (self._trackers, self._waiting):
            for name in [name for name in table if name not in kept]:
                del table[name]

    def _tracker(self, policy: ScalingPolicy) -> PeakTracker:
        level = policy.predictive_scaling.confidence_threshold
        tracker = self._trackers.get(policy.name)
        if tracker is None or tracker.level != level:
            tracker = self._trackers[policy.name] = PeakTracker(level)
        return tracker


def _aggregate(policy: ScalingPolicy, values: list[float]) -> float:
    return max(values) if policy.aggregation == "max" else fmean(values)


def _reading(policy: ScalingPolicy, observation: PowerObservation | None) -> float | None:
    """The tick's aggregate per-node power, or None when a node is missing, the reading is stale or no replica runs."""
    if (observation is None or observation.missing_nodes or not observation.measured_per_node_watts
            or not observation.replicas or observation.age_s is None or observation.age_s > policy.stale_after_s):
        return None
    return _aggregate(policy, observation.measured_per_node_watts)
