"""The scaling controller's tick: lease -> telemetry window -> forecast -> decide -> actuate -> scaling event.

`ScalingController` is plain Python (the Ray actor in autoscaler/actor.py wraps it), so the tick is tested and
benchmarked without a cluster. A tick first takes or renews the lease in the state file: only the holder acts
(another controller on the same file logs who holds it and waits; the lease expires after `lease_ttl_s`, a few tick
intervals, so a successor takes over when the holder stops renewing). It then reads the latest power of every node
once, builds the forecast inputs of every predictive policy and sends them to the forecaster as one batch (a node
several policies list is read and forecast once per tick for each reach they ask of it), then
decides and actuates policy by policy (autoscaler/intents.py: the intent is recorded before the actuation; a policy
decides from the count an earlier policy of the tick set on the same target, its power, read before that change,
re-spread over that count; a raise is carried out at once, and a target several policies scale is lowered only by
the last of them, once, to the most any of them asks for). Every policy gets an event every tick, holds included.
One policy's failure is an event for that policy and never stops the others; a stored policy that no longer
validates is logged and skipped. Each tick also scores earlier forecasts against the power stored since
(autoscaler/live_tracker.py); a node whose live interval coverage collapsed falls back to measured power, the event
saying why. A policy's peak bound is corrected online by how often its earlier bounds were exceeded
(autoscaler/policy_bounds.py).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from statistics import fmean
from typing import Any, Protocol

from autoscaler.actuators import ActuationError, Actuators, TargetCount
from autoscaler.forecast_view import ForecastView
from autoscaler.idle_measure import MeasuredIdleDraws
from autoscaler.intents import Enactor, PolicyTurn, TickCounts
from autoscaler.live_accuracy import LiveAccuracyReport
from autoscaler.live_tracker import LiveTracker
from autoscaler.policy_bounds import PolicyBounds
from autoscaler.policy_config import policy_from, target_nodes
from autoscaler.read_order import FailedLast
from autoscaler.replica_reads import ReadLate, ReplicaReads
from autoscaler.schema import InvalidStoredPolicy, PowerObservation, ScalingEvent, ScalingPolicy, ScalingTarget
from autoscaler.settings import AutoScalingConfig
from autoscaler.state import ControllerState, Lease
from core.forecasts import PowerForecast
from core.public_text import error_text
from core.stores.base import NodeLatest, StoreUnavailable, TelemetryStore
from training.power.stored_history import NoStoredTelemetry, StoredHistory, stored_history

logger = logging.getLogger(__name__)
LEASE_TICKS = 3  # the lease lasts this many tick intervals


def controller_id() -> str:
    """A lease holder id naming this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ModelShape:
    """What the controller must know of the served forecaster to build its inputs."""

    model_version: str
    step_s: int
    sequence_length: int
    horizon_steps: int
    max_gap_s: int | None = None  # how long a missing reading is held (ServedModel.max_gap_seconds)


class Forecaster(Protocol):
    """The served power forecaster (the PowerPredictor deployment, or a local one in benchmarks)."""

    def shape(self) -> ModelShape:
        """The served model's step, window and horizon; raises when no model is served."""

    def forecast(self, nodes: Sequence[str], windows: Sequence[StoredHistory]) -> list[PowerForecast | Exception]:
        """One forecast per node's own stored window, in order; a failed one is its exception."""


def _failed(item: PolicyTurn, stage: str, exc: Exception) -> None:
    logger.exception("scaling controller: %s failed for policy %s", stage, item.policy.name)
    item.error = f"{stage} failed: {error_text(exc)}"


@dataclass(frozen=True)
class _TargetRead:
    """What a replica read found: the count, and the target's nodes where they were looked for (or why not)."""

    count: TargetCount
    nodes: list[str] | None = None
    discovery_problem: str | None = None


@dataclass(frozen=True)
class _Kept:
    """A part of the controller that the lease holder keeps in the state file, so that the next holder (or itself
    restarted) goes on from it: all mappings."""

    what: str
    read: Callable[[], Mapping]  # from the state file
    resume: Callable[[Mapping, bool], None]  # into this controller (True: under what it learned itself)
    current: Callable[[], Mapping]  # what it is now
    write: Callable[[Mapping], bool]  # into the state file, while the lease names this controller: whether it did


class ScalingController:
    """Holds the policies and runs ticks over them; state lives in `ControllerState`."""

    def __init__(self, state: ControllerState, store: TelemetryStore, forecaster: Forecaster | None,
                 actuators: Actuators, *, defaults: AutoScalingConfig | None = None,
                 workloads: Mapping[str, tuple[str, ...]] | None = None,
                 node_names: Callable[[list[str]], Mapping[str, str]] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 holder: str | None = None, tick_s: float | None = None, lease_ttl_s: float | None = None):
        """`node_names` maps Ray node ids to telemetry node ids; with it, a policy that names no nodes (and has
        no `workloads` entry) uses the nodes its target's replicas run on, where the actuator can tell.
        `holder` names this controller in the lease (default: `controller_id()`); `tick_s` is how often ticks run
        (default: the evaluation interval); `lease_ttl_s` defaults to LEASE_TICKS of them. Every forecast is scored
        once its actuals are stored (`live_accuracy`)."""
        self.state = state
        self.store = store
        self.forecaster = forecaster
        self.actuators = actuators
        self.defaults = defaults or AutoScalingConfig()
        self.workloads = dict(workloads or {})
        self.node_names = node_names
        self.clock = clock
        self.holder = holder or controller_id()
        self.tick_s = tick_s or float(self.defaults.evaluation_interval)
        self.lease_ttl_s = lease_ttl_s or LEASE_TICKS * self.tick_s
        self.enactor = Enactor(state, actuators, self.holder, self.lease_ttl_s, clock)
        self.live = LiveTracker(store, self.defaults.live_accuracy)
        self.bounds = PolicyBounds(reach_s=self.tick_s)
        self.idle_draws = MeasuredIdleDraws(store)
        self.replica_reads = ReplicaReads()
        self._window_reads = FailedLast()  # nodes whose forecast window the store failed to give: read last
        self._kept = (
            _Kept("nodes in live-accuracy fallback", state.fallen, self.live.restore, self.live.fallen,
                  lambda fallen: state.save_fallen(fallen, self.holder)),
            _Kept("policies' peak bound corrections", state.bound_trackers, self.bounds.restore, self.bounds.saved,
                  lambda saved: state.save_bound_trackers(saved, self.holder)))
        self._saved: dict[str, Any] = {}  # per kept part, what the state file holds
        self._unread: set[str] = set()  # kept parts the state file could not give at the last try
        self._not_resumed: set[str] = set()  # kept parts not resumed since this controller took the lease
        self._lease_holder: str | None = None
        self._reported: set[tuple[str, str]] = set()

    # --- policies ----------------------------------------------------------------------------------------

    def put_policy(self, data: ScalingPolicy | Mapping[str, Any],
                   expected: str | None = None) -> tuple[ScalingPolicy, bool]:
        """Store a policy (a mapping is validated with the config's defaults); returns it and whether it is new;
        `expected`: the stored one's tag it replaces (ControllerState.put_policy).

        Raises pydantic's ValidationError, with locations relative to the policy, TooManyPolicies when a new policy
        would exceed the state's `max_policies`, and OverReplicasCap when its `max_replicas` exceeds the state's cap.
        """
        policy = data if isinstance(data, ScalingPolicy) else policy_from(data, self.defaults)
        return policy, self.state.put_policy(policy, self.clock(), expected=expected)

    # --- the tick ----------------------------------------------------------------------------------------

    def tick(self) -> list[ScalingEvent]:
        """Evaluate every policy once when holding the lease; returns the events in policy-name order (none when
        another controller holds the lease; one an unwritable state left unsaved has id None)."""
        now = self.clock()
        self._follow_state_file(now)
        lease = self.state.acquire_lease(self.holder, now, self.lease_ttl_s)
        if not self._leads(lease, now):
            return []
        if self._unread:  # what the controller before it distrusted and corrected, as it left them
            self._restore([part for part in self._kept if part.what in self._unread])
        stored = self.state.stored_policies()
        self._report(stored.invalid)
        turns = [PolicyTurn(policy, target_nodes(policy, self.workloads)) for policy in stored.policies]
        latest, store_problem = self._latest()
        read_at = self.clock()
        self.live.score(latest, now)
        self._read_replicas(turns)
        self.bounds.retain(item.policy.name for item in turns)
        for item in turns:
            try:
                self._observe(item, latest, store_problem)
                self.bounds.observe(item.policy, item.observation, now)
            except Exception as exc:  # noqa: BLE001 - isolation: this policy's event says why
                _failed(item, "reading its telemetry", exc)
        self.bounds.score(self.store, latest, now)  # after the tick's replica counts: windows they carried are whole
        self._measure_idle(turns, now, store_problem)
        self._forecast([item for item in turns if self._wants_forecast(item)], latest, now)
        self._save()
        events, counts = [], TickCounts(turns, lambda name: self.state.policy_state(name).no_later_than(now)
                                        .changed_target_at, self._recorded_change(now))
        for item in turns:  # each decided at its own time, on telemetry aged by the tick so far
            at = self.clock()
            _age(item, (at - read_at).total_seconds())
            counts.follow(item)
            events.append(self.enactor.act(item, at))
            counts.note(item)
        return events

    def _follow_state_file(self, now: datetime) -> None:
        """A state file SQLite reported damaged, or another controller set aside, is opened again (a damaged one set
        aside for a new one: ControllerState.follow_file); a new file holds none of the kept parts yet, so each is
        written again at this tick's save."""
        try:
            if self.state.follow_file(now):
                self._saved.clear()
        except Exception:  # noqa: BLE001 - the tick fails on the state as it would have; tried again at the next
            logger.exception("scaling controller: the state file could not be opened again")

    def _restore(self, parts: Sequence[_Kept]) -> None:
        """Go on from what the controller before this one left (read at the first tick holding the lease). A part
        that cannot be read is tried again at each tick, and never saved until it has been read (it would overwrite
        what it could not read); meanwhile this controller goes on from nothing but what it learns itself, and the
        late read fills in only what it has not learned."""
        for part in parts:
            fresh = part.what in self._not_resumed
            self._not_resumed.discard(part.what)
            try:
                saved = part.read()
            except Exception:  # noqa: BLE001 - tried again at the next tick
                logger.exception("scaling controller: the %s could not be read", part.what)
                self._unread.add(part.what)
                if fresh:  # what it held from an earlier lease is no one's latest
                    part.resume({}, False)
                continue
            self._unread.discard(part.what)
            self._saved[part.what] = saved
            part.resume(saved, not fresh)

    def _recorded_change(self, now: datetime) -> Callable[[ScalingTarget], tuple[datetime, str] | None]:
        """A target's last change as the state file keeps it (no later than `now`: a clock stepped back)."""
        def change(target: ScalingTarget) -> tuple[datetime, str] | None:
            found = self.state.target_change(target)
            return None if found is None else (min(found[0], now), found[1])
        return change

    def _save(self) -> None:
        """Keep each part read from the state file there when it changed (while the lease names this controller);
        never fails the tick."""
        for part in self._kept:
            now = part.current()
            if part.what in self._unread or now == self._saved.get(part.what, {}):
                continue
            try:
                if part.write(now):
                    self._saved[part.what] = now
            except Exception:  # noqa: BLE001 - tried again at the next tick
                logger.exception("scaling controller: the %s could not be saved", part.what)

    def live_accuracy(self) -> LiveAccuracyReport:
        """Live scores of the forecasts this controller made, per model version and node."""
        return self.live.report(self.clock())

    def stop(self) -> None:
        """Give the lease up, so that another controller takes over without waiting for it to expire."""
        self.state.release_lease(self.holder)

    def _leads(self, lease: Lease, now: datetime) -> bool:
        """Whether this controller holds the lease; each change of holder is logged once."""
        if lease.holder != self._lease_holder:
            if lease.holder == self.holder:
                logger.info("scaling controller %s: holds the lease, acting on targets", self.holder)
                self._unread = {part.what for part in self._kept}  # read below: what the one before it left
                self._not_resumed = set(self._unread)
            else:
                logger.info("scaling controller %s: %s holds the lease until %s; holding (no actuation)",
                            self.holder, lease.holder, lease.expires_at.isoformat())
            self._lease_holder = lease.holder
        return lease.held_by(self.holder, now)

    def _report(self, invalid: list[InvalidStoredPolicy]) -> None:
        """Log each stored policy that no longer validates, once per reason (the API lists them); a change it left
        pending is completed as abandoned, since no tick decides on the policy to confirm it."""
        for entry in invalid:
            if (entry.name, entry.reason) not in self._reported:
                logger.warning("scaling controller: stored policy %s no longer validates and is skipped: %s",
                               entry.name, entry.reason.replace("\n", "; "))
                self._reported.add((entry.name, entry.reason))
            try:
                event = self.state.abandon_intent(entry.name, "the stored policy no longer validates")
            except Exception:  # noqa: BLE001 - the other policies act all the same; tried again next tick
                logger.exception("scaling controller: cannot abandon the pending change of policy %s", entry.name)
                continue
            if event is not None:
                logger.warning("scaling controller: event %s of policy %s completed as abandoned: the stored policy "
                               "no longer validates", event.id, entry.name)

    def _latest(self) -> tuple[dict[str, NodeLatest], str | None]:
        try:
            return {n.node_id: n for n in self.store.latest()}, None
        except StoreUnavailable as exc:
            return {}, f"telemetry store unavailable: {exc}"
        except Exception as exc:  # noqa: BLE001 - every policy holds on missing data and says why
            logger.exception("scaling controller: reading the latest telemetry failed")
            return {}, f"telemetry store failed: {error_text(exc)}"

    def _read_replicas(self, items: list[PolicyTurn]) -> None:
        """Every target's replica count (and, for a policy that names no nodes, the nodes its replicas run on),
        read concurrently and waited for at most the tick's read deadline (autoscaler/replica_reads.py)."""
        outcomes = self.replica_reads.run({
            item.policy.name: partial(self._read_target, item.policy, not item.nodes) for item in items})
        for item in items:
            outcome = outcomes[item.policy.name]
            if isinstance(outcome, ActuationError | ReadLate):
                item.note = f"cannot read the target's replicas: {outcome}"
            elif isinstance(outcome, BaseException):  # isolation: this policy's event says why
                _failed(item, "reading the target's replicas", outcome)
            else:
                item.replicas, item.target_bounds = outcome.count.replicas, outcome.count.bounds
                if outcome.nodes is not None:
                    item.nodes, item.discovered = outcome.nodes, True
                item.discovery_problem = outcome.discovery_problem

    def _read_target(self, policy: ScalingPolicy, find_nodes: bool) -> _TargetRead:
        """One target's count and, when `find_nodes`, the nodes found from its replicas (on a read thread)."""
        count = self.actuators.read(policy)
        if not find_nodes or self.node_names is None:
            return _TargetRead(count)
        try:  # the count stands without them: a target outside [min, max] still goes back inside
            return _TargetRead(count, nodes=self._discover_nodes(policy))
        except Exception as exc:  # noqa: BLE001 - the observation's note says why no node is known
            return _TargetRead(count, discovery_problem=f"finding the target's nodes failed: {error_text(exc)}")

    def _discover_nodes(self, policy: ScalingPolicy) -> list[str]:
        ray_nodes = self.actuators.ray_nodes(policy)
        if not ray_nodes or self.node_names is None:
            return []
        names = self.node_names(ray_nodes)
        return sorted({names.get(node, node) for node in ray_nodes})

    def _observe(self, item: PolicyTurn, latest: Mapping[str, NodeLatest], store_problem: str | None) -> None:
        if item.replicas is None:  # unreadable: the note says why
            return
        seen = [latest[node] for node in item.nodes if node in latest]
        item.observation = PowerObservation(
            measured_per_node_watts=[n.power_watts for n in seen],
            age_s=max((n.age_s for n in seen), default=None),
            replicas=item.replicas,
            missing_nodes=[node for node in item.nodes if node not in latest],
        )
        if store_problem:
            item.note = store_problem
        elif not item.nodes:
            item.note = item.discovery_problem or (f"no nodes known for the target: set the policy's nodes or "
                                                   f"workloads.{item.policy.workload_id or item.policy.name} in the "
                                                   "config")
        elif not target_nodes(item.policy, self.workloads):
            item.note = f"nodes found from the target's replicas: {', '.join(item.nodes)}"

    def _measure_idle(self, items: list[PolicyTurn], now: datetime, store_problem: str | None) -> None:
        """The measured idle draw of each policy that asks for it (`power_based.measure_idle_power`), on nodes whose
        power the tick read (a tick whose store failed to give that power reads no week of telemetry either)."""
        measuring = [item for item in items if item.policy.power_based.enabled
                     and item.policy.power_based.measure_idle_power and item.nodes]
        self.idle_draws.start_tick(node for item in measuring for node in item.nodes)
        for item in measuring:
            observation = item.observation
            if store_problem or observation is None or not observation.measured_per_node_watts:
                continue  # it holds on that anyway; the values measured before are kept
            try:
                item.idle_watts, item.idle_note = self.idle_draws.for_policy(item.policy, item.nodes, now)
            except Exception as exc:  # noqa: BLE001 - isolation: its configured idle draw stands, the event says why
                logger.exception("scaling controller: the idle draw of policy %s failed", item.policy.name)
                item.idle_watts, item.idle_note = None, f"measuring the idle draw failed: {error_text(exc)}"

    @staticmethod
    def _wants_forecast(item: PolicyTurn) -> bool:
        policy, observation = item.policy, item.observation
        return (policy.power_based.enabled and policy.predictive_scaling.enabled and observation is not None
                and bool(observation.measured_per_node_watts) and not observation.missing_nodes)

    def _forecast(self, items: list[PolicyTurn], latest: Mapping[str, NodeLatest], now: datetime) -> None:
        """Fill each item's forecast view: one batched forecaster call for every node of every item."""
        if not items:
            return
        if self.forecaster is None:
            for item in items:
                item.forecast = ForecastView.unavailable("no forecaster configured")
            return
        try:
            shape = self.forecaster.shape()
        except Exception as exc:  # noqa: BLE001 - no model, app not running: fall back to measured power
            for item in items:
                item.forecast = ForecastView.unavailable(f"forecaster not available: {error_text(exc)}")
            return
        batch = _WindowBatch(self._window_reads)
        self._window_reads.retain({node for item in items for node in item.nodes})
        for item in self._window_reads.ordered(items, lambda item: item.nodes):  # the policies' events keep their order
            try:
                item.forecast = self._collect_windows(item, shape, batch, latest, now)
            except Exception as exc:  # noqa: BLE001 - this policy falls back to measured power and says why
                logger.exception("scaling controller: forecast window of policy %s failed", item.policy.name)
                item.forecast = ForecastView.unavailable(f"no forecast window: {error_text(exc)}")
        try:
            results = self.forecaster.forecast(batch.nodes, batch.windows) if batch.windows else []
        except Exception as exc:  # noqa: BLE001 - every policy of the batch falls back to measured power
            logger.exception("scaling controller: the forecast batch failed")
            results = [exc] * len(batch.windows)
        self.live.record(batch.nodes, results)  # each window once, however many policies read it (never raises)
        try:
            collapses = self.live.collapses(batch.nodes, results, now)
        except Exception as exc:  # noqa: BLE001 - untrusted then: every policy of the batch falls back to measured power
            logger.exception("scaling controller: the forecasts' live accuracy could not be judged")
            collapses = [f"forecast unusable: judging its live accuracy failed: {error_text(exc)}"] * len(results)
        for item in items:
            if item.requests is not None:
                found = [results[i] for i in item.requests]
                try:
                    item.forecast, item.confidence = _view(item.policy, found, item.forecast_behind_s)
                    collapsed = next((why for why in (collapses[i] for i in item.requests) if why is not None), None)
                    if collapsed is not None:  # its first node whose live coverage collapsed
                        item.forecast, item.confidence = ForecastView.unavailable(collapsed), None
                    else:
                        item.forecast = self.bounds.correct(item.policy, item.forecast, item.nodes, item.replicas,
                                                            [r for r in found if isinstance(r, PowerForecast)],
                                                            discovered=item.discovered)
                except Exception as exc:  # noqa: BLE001 - this policy falls back to measured power
                    item.forecast = ForecastView.unavailable(f"forecast unusable: {error_text(exc)}")

    def _collect_windows(self, item: PolicyTurn, shape: ModelShape, batch: _WindowBatch,
                         latest: Mapping[str, NodeLatest], now: datetime) -> ForecastView | None:
        """Add the item's nodes' stored windows to the batch (set `item.requests`); a view only when the forecast
        cannot be made. The leads start at the end of a node's newest stored bin, which may lie behind the decision (old
        telemetry): they reach that much further, so the forecast covers the whole risk window from now. The window
        reaches one tick past the policy's risk window: the next change may be decided up to a tick after the hold
        ends, and lands its actuation delay after that. With a cooldown shorter than the actuation delay plus the
        readings' age, the next change also waits for a reading taken after this one took effect, as old then as the
        newest is now: the window reaches that much further too."""
        policy = item.policy
        item.forecast_behind_s = max((_behind(latest[node].timestamp, shape.step_s, now) for node in item.nodes
                                      if node in latest), default=0.0)
        behind_steps = -(-math.ceil(item.forecast_behind_s) // shape.step_s)
        window_steps = -(-policy.risk_window_s // shape.step_s) + behind_steps
        next_change_s = max(policy.hold_s, policy.actuation_delay + item.forecast_behind_s) + policy.actuation_delay
        reach_s = max(policy.risk_window_s, next_change_s) + self.tick_s
        lead_steps = min(-(-math.ceil(reach_s) // shape.step_s) + behind_steps, shape.horizon_steps)
        if window_steps > lead_steps and item.note is None:  # the tick's reach beyond it goes as far as the model
            item.note = (f"risk window cut to the served model's horizon of {lead_steps * shape.step_s // 60} min "
                         f"({shape.model_version})")
        for node in item.nodes:
            try:
                stored = batch.read(node, lead_steps, lambda node=node: stored_history(
                    self.store, node, step_s=shape.step_s, sequence_length=shape.sequence_length,
                    horizon_s=lead_steps * shape.step_s, latest=latest.get(node), max_gap_s=shape.max_gap_s))
            except (NoStoredTelemetry, StoreUnavailable) as exc:
                return ForecastView.unavailable(f"no forecast window: {exc}")
            if stored.age_s > policy.stale_after_s:
                return ForecastView.unavailable(f"forecast window of node {node} is stale ({stored.age_s:.0f} s old)")
        item.requests = [batch.request(node, lead_steps) for node in item.nodes]
        return None


class _WindowBatch:
    """A tick's forecast batch: each (node, leads) window read and forecast once, however many policies list the
    node. A read that failed is remembered too, so no other policy of the tick reads it again; after a store that
    failed one (StoreUnavailable: down, or past its timeout) no other window is read this tick: each read would cost
    the tick that timeout again, and a tick that takes past the telemetry's `stale_after_s` holds every policy. The
    nodes it failed on are noted in `reads`, and the policies listing them read last at the next tick."""

    def __init__(self, reads: FailedLast) -> None:
        self.reads = reads
        self.nodes: list[str] = []
        self.windows: list[StoredHistory] = []
        self._read: dict[tuple[str, int], StoredHistory | Exception] = {}
        self._index: dict[tuple[str, int], int] = {}
        self._store_failed: StoreUnavailable | None = None

    def read(self, node: str, lead_steps: int, read: Callable[[], StoredHistory]) -> StoredHistory:
        """The node's window, read the first time it is asked for; raises what its read raised."""
        key = (node, lead_steps)
        if key not in self._read:
            try:
                if self._store_failed is not None:
                    raise StoreUnavailable(f"not read: the store failed this tick's read before ({self._store_failed})")
                self._read[key] = read()
                self.reads.read(node)
            except StoreUnavailable as exc:
                self._read[key] = exc
                if self._store_failed is None:  # an actual read failed (not one skipped after it)
                    self.reads.failed(node)
                    self._store_failed = exc
            except NoStoredTelemetry as exc:
                self._read[key] = exc
        found = self._read[key]
        if isinstance(found, Exception):
            raise found
        return found

    def request(self, node: str, lead_steps: int) -> int:
        """The index in the batch of the node's window (read before), added the first time a policy asks for it."""
        key = (node, lead_steps)
        if key not in self._index:
            self._index[key] = len(self.windows)
            self.nodes.append(node)
            self.windows.append(self._read[key])  # type: ignore[arg-type]  # requested only once read well
        return self._index[key]


def _age(item: PolicyTurn, elapsed_s: float) -> None:
    """Age the item's telemetry by the time the tick took since it was read (store reads, forecasts and earlier
    actuations can take minutes), so the stale check in `decide` sees its age at the decision."""
    observation = item.observation
    if observation is not None and observation.age_s is not None and elapsed_s > 0:
        item.observation = observation.model_copy(update={"age_s": observation.age_s + elapsed_s})


def _view(policy: ScalingPolicy, results: list[PowerForecast | Exception],
          behind_s: float = 0.0) -> tuple[ForecastView, float | None]:
    """The policy's forecast view from its nodes' forecasts, and their mean calibrated confidence; `behind_s`: how
    far the forecasts' first lead starts before now (their window counts from now)."""
    failed = next((r for r in results if isinstance(r, Exception)), None)
    if failed is not None:
        return ForecastView.unavailable(f"forecast failed: {error_text(failed)}"), None
    forecasts = [r for r in results if isinstance(r, PowerForecast)]
    coverage = forecasts[0].interval_coverage
    if not 0 < coverage < 1:
        return ForecastView.unavailable("the served model's calibration has not been measured"), None
    peaks = [f.peak_upper for f in forecasts]
    view = ForecastView.from_interval([f.point for f in forecasts], [f.upper for f in forecasts],
                                      coverage=coverage, level=policy.predictive_scaling.confidence_threshold,
                                      peak=None if None in peaks else peaks,
                                      window_s=_steps_from_now(forecasts[0], behind_s))
    view = view.model_copy(update={"extrapolated_nodes": sum(1 for f in forecasts if f.outside_training_range)})
    return view, round(fmean(c for f in forecasts for c in f.confidence), 4)


def _behind(newest: datetime, step_s: int, now: datetime) -> float:
    """How long before `now` the first lead of a forecast from a window whose newest reading is `newest` starts (the
    end of that reading's bin, as training.power.stored_history cuts it); 0 when it starts at or after now."""
    reading = newest.timestamp()
    return max(0.0, now.timestamp() - (reading - reading % step_s + step_s))


def _steps_from_now(forecast: PowerForecast, behind_s: float) -> int:
    """The whole steps of the forecast's leads that lie ahead of now, in seconds."""
    step = forecast.step_s
    return step * max(0, (len(forecast.point) * step - math.ceil(behind_s)) // step)
