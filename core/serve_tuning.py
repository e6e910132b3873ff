"""Serve's process settings the service runs with, measured on 2 cores by bench/bench_serve.py.

User code and the router on the replica's own event loop, request-path logs buffered instead of flushed per
request, and the HTTP proxy reaching replicas over Serve's inter-deployment gRPC transport instead of Ray actor
calls (the replicas serve it anyway, behind Ray's token check when token authentication is on). They must be in
the environment before Ray starts: the Makefile (`make run`), deploy/image/start.sh and the KubeRay RayService
export the same values (tests/unit/deploy/test_serve_tuning.py keeps them in step), tests and benchmarks call
`apply_serve_tuning`. An operator's own value of any of them wins.
"""

from __future__ import annotations

import os

SERVE_TUNING: dict[str, str] = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_PROXY_USE_GRPC": "1",
    # ... whose messages gRPC caps at 4 MiB by default: a batch's results, up to RESULTS_MAX_BYTES, must pass
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(64 * 2**20),
}


def apply_serve_tuning() -> None:
    """Put the settings into this process's environment (before `ray.init`), keeping any value already set."""
    for name, value in SERVE_TUNING.items():
        os.environ.setdefault(name, value)
