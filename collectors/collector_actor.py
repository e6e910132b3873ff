"""CollectorActor: one node's collector as a Ray actor (the collector supervisor starts one per node)."""

from __future__ import annotations

import socket
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field

from collectors.collector import Collector
from collectors.replay import ReplaySource
from collectors.settings import CollectorConfig, NodeSettings, on_this_node
from collectors.sources import build_sources
from core.actors import settings_digest
from core.stores.remote import RemoteStore


class ReplaySettings(BaseModel):
    """Play a canonical telemetry CSV as live telemetry (demos, tests)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096)
    speed: float = Field(1.0, gt=0, le=1e6, description="seconds of the trace played per wall-clock second (no "
                                                         "more than the trace's shortest step over 1 ms)")
    loop: bool = True
    backfill: bool = Field(False, description="first store one cycle of the trace as the recent past, so a fresh "
                                              "store has the history forecasts and scheduled retrains need")
    align_nodes: bool = Field(False, description="start every node's series with the replay, so runs recorded on "
                                                 "different days play as nodes running together")


PINGS = "pings"  # the concurrency group of the supervisor's pings: never queued behind a status probing a hung driver
STOPS = "stops"  # stop's own: it starts at once, never after the status calls queued before it


def collector_fingerprint(config_data: dict[str, Any], selected: list[str] | None, replay: dict | None,
                          store: str | None = None) -> str:
    """The digest of the settings a collector is started with; `store` names the resolved store
    (collectors/supervisor.py `store_key`): a collector outlives no change of store."""
    return settings_digest(config_data, selected, replay, store, PINGS, STOPS)  # an actor without them is replaced


class CollectorActor:
    """Actor body: builds this node's sources (or a replay) and runs a Collector over them into the store actor.

    `config_data` is the head's collector config; this node's own GPU_MONITORING_ENABLED and IPMI_HOSTS win over
    it, and its NodeSettings (NODE_NAME, IPMI_BMC_MAP_FILE, ...) are read here, on the node. `store` names the store
    the store actor's settings reach (collectors/supervisor.py `store_key`), part of this collector's own fingerprint.
    """

    def __init__(self, config_data: dict[str, Any], selected: list[str] | None, replay: dict | None,
                 store: str | None = None):
        config = on_this_node(CollectorConfig.model_validate(config_data))
        if replay is not None:
            settings = ReplaySettings.model_validate(replay)
            node_name = "replay"
            sources = [ReplaySource(settings.path, speed=settings.speed, loop=settings.loop,
                                    backfill=settings.backfill, align_nodes=settings.align_nodes)]
        else:
            node = NodeSettings.from_env()  # this node's environment
            node_name = node.node_name or socket.gethostname()
            sources = build_sources(config, node_name, selected=set(selected) if selected else None, node=node)
        # the store is asked whether it takes writes at the first flush; `store` names it in what is spilled before
        self.collector = Collector(node_name, sources, RemoteStore(), config.telemetry, store_key=store)
        self.fingerprint = collector_fingerprint(config_data, selected, replay, store)

    @ray.method(concurrency_group=PINGS)
    def node_id(self) -> str:
        """The telemetry node id this collector stamps on its samples."""
        return self.collector.node_id

    @ray.method(concurrency_group=PINGS)
    def health(self) -> tuple[str, float]:
        """The supervisor's ping: the digest of the settings this collector was started with, and the seconds
        since its last finished sampling round."""
        return self.fingerprint, self.collector.round_age_s()

    def status(self) -> dict:
        return self.collector.status()

    def flush(self) -> int:
        return self.collector.flush()

    @ray.method(concurrency_group=STOPS)
    def stop(self) -> None:
        self.collector.stop()


def collector_actor_class() -> Any:
    """CollectorActor as a Ray actor class: its pings (`health`, `node_id`) answered beside its other calls, and its
    `stop` at once too (a status from then on probes no source); the others one at a time."""
    return ray.remote(concurrency_groups={PINGS: 2, STOPS: 1})(CollectorActor)
