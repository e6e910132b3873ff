"""Run as a script by test_ray_token_auth.py: a private Ray in the auth mode of its environment with one Serve
replica; prints (as JSON, after MARK) each TCP port that replica listens on, its address and what an
inter-deployment gRPC call without a token gets there (`ports_of`, which the test also calls for the session's own
replicas). Importing it loads nothing of Ray's."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import urllib.request
from pathlib import Path

MARK = "replica ports: "  # the line the test reads, among Ray's own output


def _sockets_of(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of process `pid` (Linux's /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return [(address, port) for table in ("tcp", "tcp6") for address, port, inode in _listening(table)
            if inode in inodes]


def _listening(table: str) -> list[tuple[str, int, str]]:
    """(address, port, socket inode) of the listening sockets in /proc/net/`table` (none without that table: a
    kernel without IPv6)."""
    path = Path(f"/proc/net/{table}")
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A":  # TCP_LISTEN
            continue
        hex_address, hex_port = fields[1].split(":")
        raw = bytes.fromhex(hex_address)
        # the kernel prints each 32-bit word in host (little-endian) order
        packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
        found.append((str(ipaddress.ip_address(packed)), int(hex_port, 16), fields[9]))
    return found


def _unauthenticated_call(port: int) -> str:
    import grpc
    from ray.serve.generated import serve_pb2, serve_pb2_grpc

    stub = serve_pb2_grpc.ASGIServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    try:
        stub.HandleRequest(serve_pb2.ASGIRequest(pickled_request_metadata=b"not a pickle"), timeout=10)
    except grpc.RpcError as error:
        return error.code().name
    return "ANSWERED"


def ports_of(pid: int) -> list[dict[str, object]]:
    """Each TCP port replica process `pid` listens on (its own only, not another Ray's on the machine), its address
    and what an inter-deployment gRPC call without a token gets there."""
    return [{"address": address, "port": port, "call": _unauthenticated_call(port)}
            for address, port in _sockets_of(pid)]


def main(http_port: int) -> None:
    import ray
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Pid:
        def __call__(self, request=None) -> int:
            return os.getpid()

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": http_port})
        serve.run(Pid.bind(), name="pid", route_prefix="/pid")
        # over HTTP, not a handle: a handle called from this synchronous code needs Serve's router on a loop of its
        # own, which the tests' Serve settings (RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0) turn off
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/pid", timeout=60) as answer:
            pid = int(answer.read())
        sys.stdout.write(MARK + json.dumps(ports_of(pid)) + "\n")
        sys.stdout.flush()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]))
