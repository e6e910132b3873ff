"""The telemetry store as one named Ray actor (its client is core/stores/remote.py RemoteStore), on the head node
like the other singletons: the embedded store's file lies on the head's disk, and a restarted actor must find it.

Collectors on every node push batches to the actor; the API reads windows and latest values from it. The
backend behind it is whatever `create_store` picks (embedded SQLite by default, InfluxDB with INFLUX_HOST), each
safe to call from several threads. The actor answers its calls in groups, so that no kind of call waits behind
another: window reads (weeks of a node for a retraining, or a flood of stored-window forecasts), the collectors'
writes and the short calls (the API's latest readings, node lists), CALLS_PER_GROUP at once each; the scaling
controller's own window reads and latest readings (`control_window`, `control_latest`), CONTROL_CALLS at once, which
API traffic never fills (every stored-window forecast reads its node's latest readings too); and
a retraining's reads (`retraining_window`, weeks of each node), RETRAINING_CALLS at once, which neither waits behind
the API's reads nor holds them.
A redeploy with other store settings replaces the actor (`start_store_actor`); `store_identity` names the store
its settings reach, for the collectors (collectors/supervisor.py `store_key`).

Samples stamped more than `telemetry.future_tolerance` ahead of this actor's clock (the head's) are refused for
good (`WriteRefused`; the collector counts them as `refused`): a collector screens against its own node's clock,
which cannot catch that clock itself running ahead, and such rows would land in bins that have not come yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import ray

from collectors.settings import load_collector_config
from core.actors import HEAD, find_actor, keep_unchanged, kill_and_wait, settings_digest
from core.names import NAMESPACE, STORE_ACTOR
from core.settings import ConfigError
from core.stores.base import NodeLatest, WriteRefused
from core.stores.factory import create_store
from core.stores.settings import StoreSettings
from core.telemetry import TelemetrySample

CALL_TIMEOUT_S = 15.0
UNRESOLVED = "unresolved"  # `store_identity` of settings that do not resolve
CALLS_PER_GROUP = 4
CONTROL_CALLS = 2  # the controller reads its nodes' windows one tick at a time
RETRAINING_CALLS = 2  # a retraining reads its nodes one at a time; the scheduler runs one retraining at a time
WINDOWS, WRITES, CONTROL, RETRAINING = "windows", "writes", "control", "retraining"  # concurrency groups; other calls:
# the default group


class TelemetryStoreService:
    """Actor body: owns the backend. Plain class, so it is testable without Ray."""

    def __init__(self, settings: Mapping[str, str] | None = None, config_path: str | None = None):
        """`settings` (variable names) win over this process's environment, which wins over the config file."""
        telemetry = load_collector_config(config_path).telemetry
        self.future_tolerance_s = telemetry.future_tolerance
        # the samples it accepts count as latest readings: an embedded store's window of "now" is as wide; a
        # scraped store's readings above `max_node_watts` are no power (the collectors' screen bounds theirs)
        self.store = create_store(StoreSettings.load(settings, config_path=config_path),
                                  future_tolerance_s=self.future_tolerance_s, max_node_watts=telemetry.max_node_watts)
        self._fingerprint = actor_fingerprint(settings, config_path)

    def fingerprint(self) -> str:
        """The digest of the arguments this actor was started with."""
        return self._fingerprint

    @ray.method(concurrency_group=WRITES)
    def write(self, samples: Sequence[TelemetrySample]) -> int:
        """Write the samples; WriteRefused (after writing the others) for those stamped too far ahead."""
        latest_allowed = datetime.now(UTC) + timedelta(seconds=self.future_tolerance_s)
        timely = [sample for sample in samples if sample.timestamp <= latest_allowed]
        ahead = len(samples) - len(timely)
        why = ""
        if ahead:
            nodes = sorted({sample.node_id for sample in samples if sample.timestamp > latest_allowed})
            why = (f"{ahead} sample(s) of node(s) {', '.join(nodes[:5])} stamped more than {self.future_tolerance_s} s "
                   "ahead of the store's clock: the node's clock runs ahead")
        try:
            written = self.store.write(timely) if timely else 0
        except WriteRefused as refused:  # the backend refused some too: one count of every sample refused
            raise WriteRefused("; ".join(filter(None, [str(refused), why])), refused.refused + ahead,
                               refused.written) from refused
        if ahead:
            raise WriteRefused(why, ahead, written)
        return written

    @ray.method(concurrency_group=WINDOWS)
    def window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        return self.store.window(node_id, start, end, step_s)

    @ray.method(concurrency_group=CONTROL)
    def control_window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        """`window` for the scaling controller, in a group of its own: its forecasts never wait behind the API's."""
        return self.store.window(node_id, start, end, step_s)

    @ray.method(concurrency_group=RETRAINING)
    def retraining_window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        """`window` for a retraining, in a group of its own: weeks of telemetry neither wait behind nor hold the
        API's reads; given the backend's long read timeout (`long_window`)."""
        return self.store.long_window(node_id, start, end, step_s)

    def latest(self, node_id: str | None = None) -> list[NodeLatest]:
        return self.store.latest(node_id)

    @ray.method(concurrency_group=CONTROL)
    def control_latest(self, node_id: str | None = None) -> list[NodeLatest]:
        """`latest` for the scaling controller, in its group: every stored-window forecast of the API reads its node's
        latest too, and a flood of them on a slow backend never holds the tick's read."""
        return self.store.latest(node_id)

    def nodes(self, since: datetime | None = None) -> list[str]:
        return self.store.nodes(since)

    def is_read_only(self) -> bool:
        return self.store.read_only


def start_store_actor(settings: Mapping[str, str] | None = None,
                      config_path: str | None = None) -> ray.actor.ActorHandle:
    """The cluster's store actor, created (detached, restarted on failure) if it does not exist yet; one started
    with other arguments (a redeploy that moved the store) is ended first. Collectors keep what they could not
    write meanwhile in their buffers."""
    running = keep_unchanged(STORE_ACTOR, actor_fingerprint(settings, config_path), stop_store_actor, CALL_TIMEOUT_S)
    if running is not None:
        return running
    return store_actor_class().options(
        name=STORE_ACTOR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=-1,
        max_task_retries=0, num_cpus=0, resources=HEAD,  # the embedded store's file is on the head's disk
        max_concurrency=CALLS_PER_GROUP,  # the default group's
    ).remote(dict(settings) if settings is not None else None, config_path)


def store_actor_class(service: type = TelemetryStoreService) -> Any:
    """`service` as a Ray actor class with the store's concurrency groups (set on the class: `.options` cannot)."""
    return ray.remote(concurrency_groups={WINDOWS: CALLS_PER_GROUP, WRITES: CALLS_PER_GROUP,
                                          CONTROL: CONTROL_CALLS, RETRAINING: RETRAINING_CALLS})(service)


def stop_store_actor(timeout_s: float = CALL_TIMEOUT_S) -> None:
    """End the store actor if it runs (what it stored stays in its backend)."""
    running = find_actor(STORE_ACTOR)
    if running is not None:
        kill_and_wait(STORE_ACTOR, running, timeout_s)


def store_fingerprint(settings: Mapping[str, str] | None, config_path: str | None) -> str:
    """The digest of the actor's arguments and of how it runs (an actor that answered one call at a time, started
    by an earlier version, is replaced). It names the arguments, not the store they reach (None: the environment):
    the collector supervisor and its collectors carry it with `store_identity` (collectors/supervisor.py
    `store_key`), so a change of either replaces them too (whether a collector writes is decided once, against the
    store it started with)."""
    return settings_digest(dict(settings) if settings is not None else None, config_path,
                           CALLS_PER_GROUP, WINDOWS, WRITES, CONTROL, CONTROL_CALLS, RETRAINING, RETRAINING_CALLS)


def actor_fingerprint(settings: Mapping[str, str] | None, config_path: str | None) -> str:
    """The running actor's fingerprint: `store_fingerprint` and the config file's `telemetry.future_tolerance` and
    `telemetry.max_node_watts`, which the actor reads once (a change replaces the actor; the collectors' store key
    stays, so their spilled segments keep their store)."""
    try:
        telemetry = load_collector_config(config_path).telemetry
        read_once = [telemetry.future_tolerance, telemetry.max_node_watts]
    except ConfigError:  # the actor cannot start with this file either
        read_once = None
    return settings_digest(store_fingerprint(settings, config_path), read_once)


def store_identity(settings: Mapping[str, str] | None, config_path: str | None) -> str:
    """A short digest of the store the actor's arguments reach (`StoreSettings.identity`: the backend and where it
    is, over this process's environment and the config file's contents), resolved here as the actor resolves it:
    the app that starts the actor runs on the head, with its environment. UNRESOLVED when they do not resolve
    (ConfigError): a store actor cannot start with them either."""
    try:
        resolved = StoreSettings.load(settings, config_path=config_path)
    except ConfigError:
        return UNRESOLVED
    return settings_digest(resolved.identity())[:16]
