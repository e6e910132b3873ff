"""Ray node id -> telemetry node name, as the controller maps its targets' replicas to nodes (no Ray here)."""

from __future__ import annotations

import pytest

from autoscaler import actor
from autoscaler.actor import TelemetryNodeNames
from core.actors import ActorUnavailable


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch):
    """The alive Ray nodes (id -> hostname), the monotonic clock, and how often the names were read."""
    nodes, clock, reads = {"r1": "gpu-1"}, [1000.0], []

    def ray_nodes():
        reads.append(clock[0])
        return [{"NodeID": node, "NodeManagerHostname": host, "Alive": True} for node, host in nodes.items()]

    def no_supervisor(self, method, *args):
        raise ActorUnavailable("the collector supervisor is not running")

    monkeypatch.setattr(actor.ray, "nodes", ray_nodes)
    monkeypatch.setattr(actor.NamedActor, "call", no_supervisor)
    monkeypatch.setattr(actor.time, "monotonic", lambda: clock[0])
    return nodes, clock, reads


def test_regression_a_node_that_has_just_joined_is_named_within_seconds_not_a_minute(cluster):
    """A scale-out placed a replica on a new node; for up to a minute its policy saw a Ray id without telemetry."""
    nodes, clock, reads = cluster
    names = TelemetryNodeNames()
    assert names(["r1"]) == {"r1": "gpu-1"} and len(reads) == 1
    nodes["r2"] = "gpu-2"
    clock[0] += 2
    assert names(["r1", "r2"]) == {"r1": "gpu-1"} and len(reads) == 1  # read 2 s ago: not again yet
    clock[0] += 4
    assert names(["r1", "r2"]) == {"r1": "gpu-1", "r2": "gpu-2"} and len(reads) == 2
    clock[0] += 30
    assert names(["r1", "r2"]) == {"r1": "gpu-1", "r2": "gpu-2"} and len(reads) == 2  # all known: kept a minute
    clock[0] += 31
    names(["r1"])
    assert len(reads) == 3


def test_a_failed_read_is_not_retried_by_every_policy_of_the_tick(cluster, monkeypatch):
    nodes, clock, reads = cluster
    names = TelemetryNodeNames()

    def down():
        reads.append(clock[0])
        raise RuntimeError("GCS unavailable")

    monkeypatch.setattr(actor.ray, "nodes", down)
    with pytest.raises(RuntimeError):
        names(["r1"])
    assert names(["r1"]) == {} and names(["r2"]) == {} and len(reads) == 1  # the tick's other policies


def test_a_slow_read_is_aged_from_its_end_so_the_policies_waiting_on_it_do_not_read_again(cluster, monkeypatch):
    """The read was stamped at its start: one slower than miss_age_s made every waiting policy of the tick read again
    for a node still missing (a supervisor answering in 15 s cost each of them 15 s)."""
    nodes, clock, reads = cluster
    names = TelemetryNodeNames()

    def slow():
        reads.append(clock[0])
        clock[0] += 15
        return [{"NodeID": "r1", "NodeManagerHostname": "gpu-1", "Alive": True}]

    monkeypatch.setattr(actor.ray, "nodes", slow)
    assert names(["r1", "gone"]) == {"r1": "gpu-1"}
    assert names(["r1", "gone"]) == {"r1": "gpu-1"} and len(reads) == 1
