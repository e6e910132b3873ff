"""One collector actor per alive Ray node, kept that way as nodes come and go.

`start_telemetry` starts (or finds) the store actor and the supervisor (on the head node; one started with other
settings, or whose store settings now reach another store, is replaced), `stop_telemetry` stops the supervisor and
its collectors (the store actor stays). The supervisor reconciles every `reconcile_s`: a node without a collector
gets one, pinned to it with node-affinity scheduling, and so does a node whose collector is dead, or left
`UNANSWERED_PINGS` pings in a row unanswered or with its sampling stalled; collectors of nodes that left are
forgotten. A dead collector is logged with the error it died of and started again at once; one that keeps dying (it
cannot start on its node) waits ever longer between starts, up to 5 minutes. All actors are named and detached, so
they outlive the caller (the app's bootstrap, app/bootstrap.py, starts them) and are found again after its restart;
the supervisor the app starts stops them and itself once the app is gone (core/app_watch.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from collectors.collector_actor import collector_actor_class, collector_fingerprint
from collectors.settings import CollectorConfig
from collectors.store_actor import start_store_actor, store_fingerprint, store_identity
from core.actors import find_actor, kill_and_wait, settings_digest, start_head_singleton, wait_until_gone
from core.app_watch import answered_fingerprint, end_with_app
from core.names import NAMESPACE, SUPERVISOR_ACTOR, collector_actor

logger = logging.getLogger(__name__)
HEALTH_TIMEOUT_S = 10.0
UNANSWERED_PINGS = 3  # in a row (one per reconcile) before a collector is taken for wedged and replaced
NODE_KEY = "node-"  # supervisor key of a node's collector: NODE_KEY + Ray node id
REPLAY_KEY = "replay"  # supervisor key of the replay collector
STALL_ROUNDS, MIN_STALL_S = 10, 120.0  # no progress for max(10 intervals, 2 min) (stall_limit_s): sampling stalled
MAX_RESTART_WAIT_S = 300.0  # a collector that keeps dying (a bad node setting) is started again at most this far apart


class CollectorSupervisor:
    """Actor body: keeps one CollectorActor per alive node (plus one replay collector when configured). `store`
    names the store (`store_key`), part of this supervisor's and its collectors' own fingerprints."""

    def __init__(self, config_data: dict[str, Any], selected: list[str] | None = None,
                 replay: dict | None = None, reconcile_s: float = 10.0, app_grace_s: float | None = None,
                 store: str | None = None):
        self.config_data, self.selected, self.replay, self.store = config_data, selected, replay, store
        self._fingerprint = supervisor_fingerprint(config_data, selected, replay, reconcile_s, app_grace_s, store)
        self.collectors: dict[str, Any] = {}
        self._misses: dict[str, int] = {}  # unanswered pings in a row, per collector key
        self._deaths: dict[str, tuple[int, str]] = {}  # per collector key: found dead how often in a row, and why
        self._restart_at: dict[str, float] = {}  # dead collectors started again at this time (monotonic)
        self.reconcile_s = reconcile_s
        telemetry = CollectorConfig.model_validate(config_data).telemetry
        self.stall_after_s = stall_limit_s(float(telemetry.sampling_interval), float(telemetry.read_timeout))
        self._stop = threading.Event()
        self._reconciling = threading.Lock()  # a round, or stop() taking the collectors over
        self._stopping = threading.Lock()  # held for the whole of a stop(): a second one returns after it
        self.reconcile()
        threading.Thread(target=self._loop, args=(reconcile_s,), daemon=True).start()
        self.app_watch = None if app_grace_s is None else end_with_app("collector supervisor", self.stop, app_grace_s)

    def _loop(self, reconcile_s: float) -> None:
        while not self._stop.wait(reconcile_s):
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - try again next round
                logger.exception("collector supervisor: reconcile failed")

    def reconcile(self) -> dict[str, str]:
        """Start missing or unhealthy collectors; forget those of departed nodes. Returns what it did (nothing once
        stopped: a round never starts a collector after stop() took them over)."""
        with self._reconciling:
            return {} if self._stop.is_set() else self._reconcile()

    def _reconcile(self) -> dict[str, str]:
        alive = {node["NodeID"] for node in ray.nodes() if node.get("Alive")}
        wanted = {f"{NODE_KEY}{node_id}": node_id for node_id in alive}
        if self.replay is not None:
            wanted[REPLAY_KEY] = None
        actions = {}
        for key in list(self.collectors):
            if key not in wanted:
                del self.collectors[key]
                self._deaths.pop(key, None)
                self._restart_at.pop(key, None)
                actions[key] = "forgotten (node left)"
        replaced: dict[str, Any] = {}  # key -> the collector it replaces (None: none yet)
        for key in wanted:
            handle = self.collectors.get(key)
            if self._stop.is_set():
                break
            if (restart_at := self._restart_at.get(key)) is not None:  # found dead, started again after a wait
                if time.monotonic() < restart_at:
                    continue
                del self._restart_at[key]
            elif handle is not None and not self._must_replace(key, handle):
                continue
            replaced[key] = handle
        stops = [handle.stop.remote() for handle in replaced.values() if handle is not None]
        if stops:  # a live one flushes (or spills) what it holds first, as at the end: all at once, one deadline
            ray.wait(stops, num_returns=len(stops), timeout=HEALTH_TIMEOUT_S)
        for key, handle in replaced.items():
            if self._stop.is_set():
                break
            # its name freed first, or the start below would find the old actor again (dead): else tried again later
            if handle is not None and not kill_and_wait(collector_actor(key), handle, HEALTH_TIMEOUT_S):
                self._restart_at[key] = time.monotonic() + HEALTH_TIMEOUT_S
                actions[key] = "ended, its name not freed yet: started later"
                continue
            self._misses.pop(key, None)
            self.collectors[key] = self._start(key, wanted[key])
            actions[key] = "started"
        if actions:
            logger.info("collector supervisor: %s", actions)
        return actions

    def _start(self, key: str, node_id: str | None):
        options: dict[str, Any] = {"name": collector_actor(key), "namespace": NAMESPACE, "lifetime": "detached",
                                   "get_if_exists": True, "max_restarts": -1, "num_cpus": 0}
        if node_id is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        return collector_actor_class().options(**options).remote(self.config_data, self.selected,
                                                                 self._replay_of(key), self.store)

    def _replay_of(self, key: str) -> dict | None:
        return self.replay if key == REPLAY_KEY else None

    def _must_replace(self, key: str, handle) -> bool:
        """Whether the collector under `key` is dead, runs with other settings, or is wedged.

        Other settings: a collector left by a supervisor that was replaced before it could stop it, found again by
        name. Wedged: `UNANSWERED_PINGS` pings in a row went unanswered or found its sampling stalled (no progress
        for `stall_after_s`: a sampling thread stuck outside its bounded source reads, in a spill to a hung disk say,
        keeps the actor answering while the node's telemetry has stopped). The ping reads nothing (`status` probes every
        source, and a slow tool may take seconds), and one slow answer is no reason to kill a collector and the
        samples it has not flushed yet."""
        try:
            fingerprint, age_s = ray.get(handle.health.remote(), timeout=HEALTH_TIMEOUT_S)
        except GetTimeoutError:
            return self._missed(key)
        except Exception as exc:  # noqa: BLE001 - dead, or its restart failed (or a collector of an older version)
            return self._died(key, exc)
        self._deaths.pop(key, None)
        if fingerprint != collector_fingerprint(self.config_data, self.selected, self._replay_of(key), self.store):
            logger.warning("collector supervisor: collector %s runs with other settings: replacing it", key)
            return True
        if age_s > self.stall_after_s:
            logger.warning("collector supervisor: collector %s made no progress for %.0f s", key, age_s)
            return self._missed(key)
        self._misses.pop(key, None)
        return False

    def _died(self, key: str, error: Exception) -> bool:
        """Note a collector found dead, logged with why (once for as long as it keeps dying the same way); whether
        to start it again at once. The first death in a row is, later ones wait a time that doubles with each (from
        one round up to `MAX_RESTART_WAIT_S`), so a collector that cannot start on its node (a bad setting in the
        node's environment, say) is not restarted every round forever."""
        count = self._deaths.get(key, (0, ""))[0] + 1
        text = str(error).strip()  # Ray's: the actor's id and address, then the traceback of its creation task
        why = text.splitlines()[-1] if text else type(error).__name__  # the error it died of
        wait_s = 0.0 if count == 1 else min(self.reconcile_s * 2 ** (count - 2), MAX_RESTART_WAIT_S)
        if self._deaths.get(key, (0, ""))[1] != why:
            logger.error("collector supervisor: collector %s is dead (%d time(s) in a row), starting it again%s: %s",
                         key, count, f" in {wait_s:.0f} s" if wait_s else "", text or why)
        self._deaths[key] = (count, why)
        if wait_s:
            self._restart_at[key] = time.monotonic() + wait_s
        return not wait_s

    def _missed(self, key: str) -> bool:
        self._misses[key] = self._misses.get(key, 0) + 1
        return self._misses[key] >= UNANSWERED_PINGS

    def fingerprint(self) -> str:
        """The digest of the settings this supervisor (and so each of its collectors) was started with (ENDING once
        it ends)."""
        return answered_fingerprint(self._fingerprint, self._stop.is_set(), self.app_watch)

    def status(self) -> dict[str, Any]:
        result = {}
        for key, handle in list(self.collectors.items()):
            try:
                result[key] = ray.get(handle.status.remote(), timeout=HEALTH_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001
                result[key] = {"error": f"{type(exc).__name__}"}
        return result

    def node_names(self) -> dict[str, str]:
        """Ray node id -> the telemetry node id its collector stamps on samples (collectors that answer)."""
        asked = {handle.node_id.remote(): key.removeprefix(NODE_KEY)
                 for key, handle in list(self.collectors.items()) if key.startswith(NODE_KEY)}
        if not asked:
            return {}
        ready, _ = ray.wait(list(asked), num_returns=len(asked), timeout=HEALTH_TIMEOUT_S)
        names = {}
        for ref in ready:
            try:
                names[asked[ref]] = ray.get(ref)
            except Exception:  # noqa: BLE001 - a failed collector: its node goes unnamed here
                continue
        return names

    def stop(self) -> None:
        """Stop the reconcile loop (after the round it may be in, which starts no collector once asked to stop),
        then every collector (each flushes what it holds). A second call (the app watch's and a bootstrap's at
        once) returns only when the first has ended the collectors, and finds none left."""
        self._stop.set()
        with self._stopping:
            with self._reconciling:
                collectors, self.collectors = self.collectors, {}
            stops = [handle.stop.remote() for handle in collectors.values()]  # all at once, one deadline
            if stops:
                ray.wait(stops, num_returns=len(stops), timeout=HEALTH_TIMEOUT_S)
            for handle in collectors.values():
                ray.kill(handle, no_restart=True)
            wait_until_gone([collector_actor(key) for key in collectors], HEALTH_TIMEOUT_S)  # names free, one deadline


def stall_limit_s(interval_s: float, read_timeout_s: float) -> float:
    """How long a collector may make no progress before its sampling counts as stalled: `STALL_ROUNDS` intervals
    (at least `MIN_STALL_S`), and never less than a round that waits its whole `read_timeout` for a hung source and
    those intervals after it (a long read timeout must not get the collector replaced, and the samples of the sources
    that answered lost, on every round that meets a hung read)."""
    return max(STALL_ROUNDS * interval_s, MIN_STALL_S, read_timeout_s + STALL_ROUNDS * interval_s)


def start_telemetry(config: CollectorConfig, *, selected: list[str] | None = None, replay: dict | None = None,
                    store_settings: Mapping[str, str] | None = None, config_path: str | None = None,
                    reconcile_s: float = 10.0, app_grace_s: float | None = None):
    """Start (or find) the store actor and the collector supervisor; returns the supervisor's handle. A running
    supervisor started with other settings is stopped with its collectors and replaced (collectors are found by
    name, so they would otherwise keep the old settings). `app_grace_s` (the app's bootstrap sets it): the supervisor
    stops its collectors and ends itself once the API's Serve app has been gone that long (core/app_watch.py).

    `store_settings` (variable names) and `config_path` (the file whose `influx_host` applies) go to the store
    actor, which reads them over its own environment (core/stores/settings.py).
    """
    start_store_actor(store_settings, config_path)
    store = store_key(store_settings, config_path)
    config_data = config.model_dump(mode="json", include=set(CollectorConfig.model_fields))
    return start_head_singleton(CollectorSupervisor, SUPERVISOR_ACTOR,
                                supervisor_fingerprint(config_data, selected, replay, reconcile_s, app_grace_s, store),
                                stop_telemetry, config_data, selected, replay, reconcile_s, app_grace_s, store)


def store_key(store_settings: Mapping[str, str] | None, config_path: str | None) -> str:
    """The `store` the supervisor and its collectors carry (the collectors' `store_key`): the store actor's
    fingerprint and the digest of the store its settings reach (collectors/store_actor.py `store_identity`), so it
    names the resolved store, also one set in the environment or the config file, and a switch of store there
    (PROMETHEUS_URL set in the ConfigMap) replaces them too."""
    return f"{store_fingerprint(store_settings, config_path)}-{store_identity(store_settings, config_path)}"


def supervisor_fingerprint(config_data: dict[str, Any], selected: list[str] | None, replay: dict | None,
                           reconcile_s: float, app_grace_s: float | None, store: str | None) -> str:
    """The digest of the settings a supervisor is started with, the store's among them (a change of store
    replaces the supervisor and its collectors)."""
    return settings_digest(config_data, selected, replay, reconcile_s, app_grace_s, store)


def stop_telemetry(timeout_s: float = 60.0) -> bool:
    """Stop the collector supervisor and its collectors if they run; True when there was one. The store actor
    stays: what it holds remains readable and the API's telemetry pushes keep working."""
    running = find_actor(SUPERVISOR_ACTOR)
    if running is None:
        return False
    try:
        ray.get(running.stop.remote(), timeout=timeout_s)
    except (GetTimeoutError, RayActorError):
        logger.warning("collector supervisor did not stop its collectors in %.0f s", timeout_s)
    kill_and_wait(SUPERVISOR_ACTOR, running, timeout_s)
    return True
