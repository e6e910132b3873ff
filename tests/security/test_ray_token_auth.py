"""Why `make run` and the image keep Ray's token authentication on: every Serve replica opens an inter-deployment
gRPC server on every interface (Ray binds it so whatever the node's address), and it unpickles what it is sent.
Under token authentication a call without the token is refused; without it the call reaches the unpickling. A
guard against a Ray upgrade that changes either."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import local_ray_token
from tests.factories import free_port
from tests.paths import REPO_ROOT
from tests.security.replica_ports import MARK, ports_of

ALL_INTERFACES = ("0.0.0.0", "::")


def _replica_ports(tmp_path: Path, mode: str) -> list[dict[str, object]]:
    environ = {**os.environ, "RAY_AUTH_MODE": mode, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "auth_token"),
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray's own ports on loopback, as `make run` starts it
    environ.pop("RAY_ADDRESS", None)
    environ.pop("RAY_AUTH_TOKEN", None)
    assert local_ray_token.main(environ) == 0  # what `make run` does first
    done = subprocess.run([sys.executable, "-m", "tests.security.replica_ports", str(free_port())], cwd=REPO_ROOT,
                          env=environ, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    return json.loads(line.removeprefix(MARK))


def _session_replica_ports() -> list[dict[str, object]]:
    """The same for a PowerPredictor replica of the session's app, on the session's Ray (started as `make run`
    starts one)."""
    from ray.util.state import list_actors

    from core.names import POWER_APP, POWER_DEPLOYMENT

    pids = [actor.pid for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)
            if actor.class_name == f"ServeReplica:{POWER_APP}:{POWER_DEPLOYMENT}"]
    assert pids
    return ports_of(pids[0])


@pytest.mark.slow
def test_a_replicas_grpc_port_on_every_interface_refuses_calls_without_rays_token(api, tmp_path: Path):
    session_in_token_mode = os.environ["RAY_AUTH_MODE"] == "token"  # else a Ray of its own, in token mode
    ports = _session_replica_ports() if session_in_token_mode else _replica_ports(tmp_path, "token")
    open_to_all = [port for port in ports if port["address"] in ALL_INTERFACES]
    assert open_to_all, ports  # Ray still binds it to every interface: the token is what guards it
    assert {port["call"] for port in open_to_all} == {"UNAUTHENTICATED"}, ports


@pytest.mark.slow
def test_without_rays_token_the_same_call_reaches_the_replica(tmp_path: Path):
    """What `RAY_AUTH_MODE=disabled` leaves open (the README says so): the call gets past the server to the
    replica's handler, which tries to unpickle it."""
    ports = _replica_ports(tmp_path, "disabled")
    open_to_all = [port for port in ports if port["address"] in ALL_INTERFACES]
    # UNKNOWN: the replica's handler ran and failed on the bytes it could not unpickle (a closed or renamed service
    # would answer UNAVAILABLE or UNIMPLEMENTED)
    assert open_to_all and {port["call"] for port in open_to_all} == {"UNKNOWN"}, ports
