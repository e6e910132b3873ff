"""The controller's side of the online peak correction (autoscaler.peak_tracking): each policy's bound, as its
decision used it, scored against the power the policy's nodes then drew over the bins the bound was for.

One bound waits per forecast origin (ticks within a model step forecast from the same stored window). Once every
node's newest reading lies past the window's last bin, the window is read from the store at the model's step, as
the bound was calibrated: per bin the policy's aggregate (its `aggregation`, max or mean) over its nodes, in bins
every node measured. The bound was made for the replica count read at its tick, and the nodes carried that load
only as long as the ticks kept reading that count: after the last tick that read it the count may have changed
(the controller's own change, or someone else's), so only the bins that ended by that tick are read, and the
window is whole only when a tick at or after its end still read the count. Then:

- a measured bin above the bound: a miss;
- no bin above it, the window whole and at least half its bins measured: a window under its bound;
- otherwise (cut short by a change of count or a tick not yet come, or too few bins measured, e.g. a stall of the
  ticks) it teaches nothing. A window cut short counts when it was already missed and never when it was not: near
  a change of count the correction errs towards a wider bound, the side of the budget.

A window waits for a tick at or after its end that read the replica count (one that could not read it, or a node
whose clock runs ahead, does not end it); a store read that fails leaves the window for the next tick; a window
still unread `EXPIRE_S` after its end is dropped. A policy starts afresh when what its bound means changes (target,
configured nodes, aggregation, confidence level, risk window); the nodes its replicas were found on (a policy that
names none) move as the target scales, so a change of them keeps the correction, and each window is scored on the
nodes its bound was made for. A policy corrects only at a confidence level above 0.5 (below it the
level's bound lies under the expected peak, and no spread is left to correct). Each policy's correction (not the
windows still waiting) is kept in the controller's state file with what its bound meant (`SavedBound`), so a
restarted controller, or the next lease holder, goes on from it rather than from the calibrated bound.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import fmean

from autoscaler.forecast_view import ForecastView
from autoscaler.peak_tracking import MAX_FACTOR, PeakTracker, corrected, learn_window
from autoscaler.read_order import FailedLast
from autoscaler.schema import PowerObservation, ScalingPolicy
from core.forecasts import PowerForecast
from core.stores.base import NodeLatest, StoreUnavailable, TelemetryStore
from core.stores.window import judged_window

logger = logging.getLogger(__name__)
EXPIRE_S = 3600  # a window whose bins are still unread this long after its end is dropped


@dataclass
class _Window:
    """A bound waiting for the measured power of its bins [start, end)."""

    start: datetime
    end: datetime
    step_s: int
    bound: float  # watts per node, the policy's aggregate
    replicas: int  # the count the bound was made for
    nodes: tuple[str, ...]  # the nodes it was made for (a policy's found ones move as its target scales)
    seen_at: datetime  # the last tick that read that count (until one does: the start of its first bin)
    changed: bool = False  # a tick has read another count since


@dataclass(frozen=True)
class SavedBound:
    """A policy's correction as kept in the state file: what its bound meant (a digest) and its tracker's state."""

    meaning: str
    log_factor: float
    windows: int
    misses: int


@dataclass
class _PolicyBounds:
    """One policy's tracker and its waiting windows, for what its bound means (`meaning`, a digest)."""

    meaning: str
    tracker: PeakTracker
    aggregation: str
    waiting: deque[_Window] = field(default_factory=deque)


class PolicyBounds:
    """Per policy: its peak tracker and the bounds waiting for their windows' power."""

    def __init__(self, reach_s: float = 0.0) -> None:
        """`reach_s`: how far past each policy's risk window its forecasts reach (the controller's tick)."""
        self.reach_s = reach_s
        self._policies: dict[str, _PolicyBounds] = {}
        self._restored: dict[str, SavedBound] = {}  # saved corrections of policies not corrected since
        self._failed = FailedLast()  # policies whose power the store failed to give at the last try

    def restore(self, saved: Mapping[str, SavedBound], under_own: bool = False) -> None:
        """Go on from the saved corrections (those of a controller that held the lease before): each resumes when
        its policy is next corrected, if what its bound means is unchanged. Forgets this controller's own, or
        (`under_own`: read late, this controller having learned while it held the lease) fills in only the
        policies it has not corrected itself."""
        if under_own:
            self._restored.update((name, bound) for name, bound in saved.items() if name not in self._policies)
            return
        self._policies.clear()
        self._restored = dict(saved)

    def saved(self) -> dict[str, SavedBound]:
        """Every policy's correction that has learned something, for the state file."""
        return {**self._restored, **{
            name: SavedBound(entry.meaning, entry.tracker.log_factor, entry.tracker.windows, entry.tracker.misses)
            for name, entry in self._policies.items() if entry.tracker.windows}}

    def correct(self, policy: ScalingPolicy, view: ForecastView, nodes: Sequence[str], replicas: int | None,
                forecasts: Sequence[PowerForecast], *, discovered: bool = False) -> ForecastView:
        """The policy's view with its bound's spread corrected (once its tracker has learned); the bound then
        waits for its window's power, once per forecast origin. `discovered`: the nodes are where the target's
        replicas run now, not the policy's or the config's."""
        level = policy.predictive_scaling.confidence_threshold
        if not (policy.predictive_scaling.online_bound and level > 0.5 and view.calibrated
                and view.upper_quantile_per_node_watts and forecasts and forecasts[0].timestamps):
            return view
        entry = self._entry(policy, nodes, discovered)
        view = corrected(view, entry.tracker)
        first = forecasts[0]
        start, step = first.timestamps[0], first.step_s
        if replicas and (not entry.waiting or entry.waiting[-1].start != start):
            bound = _aggregate(policy, view.upper_quantile_per_node_watts)
            end = first.timestamps[-1] + timedelta(seconds=step)
            entry.waiting.append(_Window(start, end, step, bound, replicas, tuple(nodes), seen_at=start))
        return view

    def observe(self, policy: ScalingPolicy, observation: PowerObservation | None, now: datetime) -> None:
        """Note the tick's replica count: a window made for it was carried up to `now`; one made for another count
        stays cut at the last tick that read its own (the change came after it, when exactly is not known)."""
        entry = self._policies.get(policy.name)
        if entry is None or observation is None:
            return
        for window in entry.waiting:
            if window.changed:
                continue
            if observation.replicas == window.replicas:
                window.seen_at = now
            else:
                window.changed = True

    def score(self, store: TelemetryStore, latest: Mapping[str, NodeLatest], now: datetime) -> None:
        """Learn from every window whose bins every node has measured past; never raises. A store that fails a read
        (StoreUnavailable) is read no more this tick, for any policy: the windows wait for the next one, where the
        policies it failed on are read last (one the store always fails never keeps the others unscored)."""
        for name, entry in self._failed.ordered(self._policies.items(), lambda item: (item[0],)):
            while entry.waiting:
                window = entry.waiting[0]
                if (now - window.end).total_seconds() > EXPIRE_S:
                    entry.waiting.popleft()
                    continue
                if not all(node in latest and latest[node].timestamp >= window.end for node in window.nodes):
                    break  # later windows end later still
                if not window.changed and window.seen_at < window.end:
                    break  # no tick has read the replica count since its end (unread this tick, or a node ahead)
                try:
                    bins = _measured_bins(store, window.nodes, window)
                except Exception as exc:  # noqa: BLE001 - scoring never stops a tick; the window waits
                    logger.warning("scaling controller: power of policy %s's nodes unreadable, its peak bound is "
                                   "scored later: %s", name, exc)
                    self._failed.failed(name)
                    if isinstance(exc, StoreUnavailable):
                        return
                    break
                self._failed.read(name)
                entry.waiting.popleft()
                try:
                    _learn(entry, window, bins)
                except Exception:  # noqa: BLE001 - as above; this window goes unscored
                    logger.exception("scaling controller: peak bound of policy %s not scored", name)

    def tracker(self, name: str) -> PeakTracker | None:
        """The named policy's tracker, if it has one."""
        entry = self._policies.get(name)
        return entry.tracker if entry is not None else None

    def retain(self, names: Iterable[str]) -> None:
        """Forget the policies not named (deleted ones)."""
        kept = set(names)
        for held in (self._policies, self._restored):
            for name in [name for name in held if name not in kept]:
                del held[name]
        self._failed.retain(kept)

    def _entry(self, policy: ScalingPolicy, nodes: Sequence[str], discovered: bool) -> _PolicyBounds:
        meaning = _meaning(policy, None if discovered else nodes, self.reach_s)
        entry = self._policies.get(policy.name)
        if entry is None or entry.meaning != meaning:
            saved = self._restored.pop(policy.name, None)
            level = policy.predictive_scaling.confidence_threshold
            tracker = _resumed(level, saved) if saved is not None and saved.meaning == meaning else PeakTracker(level)
            entry = self._policies[policy.name] = _PolicyBounds(meaning, tracker, policy.aggregation)
        return entry


def _meaning(policy: ScalingPolicy, nodes: Sequence[str] | None, reach_s: float) -> str:
    """A digest of what the policy's bound means: its target, configured nodes (None: found from its replicas),
    aggregation, confidence level and the window it covers (the risk window and the reach past it)."""
    parts = [policy.target.model_dump(mode="json"), None if nodes is None else list(nodes), policy.aggregation,
             policy.predictive_scaling.confidence_threshold, policy.risk_window_s, reach_s]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _resumed(level: float, saved: SavedBound) -> PeakTracker:
    """A tracker going on from a saved correction (a value out of range, from an edited file, starts afresh)."""
    limit = math.log(MAX_FACTOR)
    if not (math.isfinite(saved.log_factor) and abs(saved.log_factor) <= limit and 0 <= saved.misses <= saved.windows):
        return PeakTracker(level)
    return PeakTracker(level, saved.log_factor, saved.windows, saved.misses)


def _aggregate(policy: ScalingPolicy, values: Sequence[float]) -> float:
    return max(values) if policy.aggregation == "max" else fmean(values)


def _measured_bins(store: TelemetryStore, nodes: Sequence[str], window: _Window) -> list[tuple[datetime, list[float]]]:
    """The window's bins that every node measured, with each node's mean power, oldest first."""
    per_bin: dict[datetime, list[float]] = {}
    for node in nodes:
        frame = judged_window(store, node, window.start, window.end, window.step_s).dropna(subset=["power_watts"])
        for at, watts in zip(frame["timestamp"], frame["power_watts"], strict=True):
            per_bin.setdefault(at.to_pydatetime(), []).append(float(watts))
    return sorted((at, values) for at, values in per_bin.items() if len(values) == len(nodes))


def _learn(entry: _PolicyBounds, window: _Window, bins: list[tuple[datetime, list[float]]]) -> None:
    """Teach the policy's tracker the window's outcome, if it has one (see the module docstring)."""
    step = timedelta(seconds=window.step_s)
    read = [values for at, values in bins if at + step <= window.seen_at]
    if not read:
        return
    aggregate = max if entry.aggregation == "max" else fmean
    peak = max(aggregate(values) for values in read)
    full = (window.end - window.start) // step
    learn_window(entry.tracker, window.bound, peak, window.seen_at >= window.end and 2 * len(read) >= full)
