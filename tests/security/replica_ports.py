"""Run as a script by test_ray_token_auth.py: a private Ray in the auth mode of its environment with one Serve
replica; prints (as JSON) each TCP port that replica listens on, its address and what an inter-deployment gRPC
call without a token gets there."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from pathlib import Path

import grpc
import ray
from ray import serve
from ray.serve.generated import serve_pb2, serve_pb2_grpc

MARK = "replica ports: "  # the line the test reads, among Ray's own output


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Echo:
    def __call__(self, request) -> str:
        return "echo"


def _replica_sockets() -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of the Serve replica processes (Linux's /proc)."""
    inodes = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"ServeReplica" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return [(address, port) for table in ("tcp", "tcp6") for address, port, inode in _listening(table)
            if inode in inodes]


def _listening(table: str) -> list[tuple[str, int, str]]:
    """(address, port, socket inode) of the listening sockets in /proc/net/`table`."""
    found = []
    for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
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
    stub = serve_pb2_grpc.ASGIServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    try:
        stub.HandleRequest(serve_pb2.ASGIRequest(pickled_request_metadata=b"not a pickle"), timeout=10)
    except grpc.RpcError as error:
        return error.code().name
    return "ANSWERED"


def main(http_port: int) -> None:
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": http_port})
        serve.run(Echo.bind(), name="echo", route_prefix="/echo")
        sockets = _replica_sockets()
        found = [{"address": address, "port": port, "call": _unauthenticated_call(port)} for address, port in sockets]
        sys.stdout.write(MARK + json.dumps(found) + "\n")
        sys.stdout.flush()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]))
