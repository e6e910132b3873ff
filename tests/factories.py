"""Test factories shared by every test tree: free local ports, scaling policies, waiting for a served version."""

from __future__ import annotations

import errno
import socket
import time
from pathlib import Path
from typing import Any

from autoscaler.schema import ScalingPolicy


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing is bound to right now (TCP by default, `socket.SOCK_DGRAM` for UDP)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def policy_data(**overrides: Any) -> dict[str, Any]:
    """A valid policy body (a Ray Serve target, 1..10 replicas, 1000 W per node, 80/50 %, 5 min cooldown).

    `power_based` and `predictive_scaling` overrides are merged into the defaults; other keys replace them.
    """
    data: dict[str, Any] = {
        "name": "llm-serve",
        "target": {"kind": "ray_serve", "app": "llm", "deployment": "Model"},
        "min_replicas": 1,
        "max_replicas": 10,
        "power_based": {"max_power_budget": 1000, "scale_out_threshold": 80, "scale_in_threshold": 50,
                        "cooldown_period": 300},
        "predictive_scaling": {"enabled": True, "lookahead_minutes": 30, "confidence_threshold": 0.9},
    }
    for section in ("power_based", "predictive_scaling"):
        data[section] = {**data[section], **overrides.pop(section, {})}
    return {**data, **overrides}


def make_policy(**overrides: Any) -> ScalingPolicy:
    """`policy_data(**overrides)` validated as a ScalingPolicy."""
    return ScalingPolicy.model_validate(policy_data(**overrides))


def activate_and_wait(api: Any, registry: Any, model_id: str, version: int, request: dict,
                      timeout_s: float = 60.0) -> None:
    """Make `version` active and wait until POST /api/v1/predict/power with `request` answers from it (the
    replicas follow the registry at their next poll)."""
    registry.activate(model_id, version)
    deadline, served = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        served = api.post("/api/v1/predict/power", json=request).json().get("model_version")
        if served == f"{model_id}/{version}":
            return
        time.sleep(0.5)
    raise AssertionError(f"the replicas still serve {served}, not {model_id}/{version}, after {timeout_s} s")


def wait_for_status(api: Any, path: str, states: set[str], timeout_s: float = 60.0) -> dict:
    """GET `path` until its body's `status` is one of `states`; that body (AssertionError after `timeout_s`)."""
    deadline, body = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        body = api.get(path).json()
        if body["status"] in states:
            return body
        time.sleep(0.5)
    raise AssertionError(f"{path} did not reach {states}: {body}")


def unreadable(monkeypatch: Any, path: Path) -> None:
    """Reading `path` as text fails with EIO (a passing storage error) while `monkeypatch` holds; other files read."""
    read_text = Path.read_text

    def flaky(self: Path, *args: Any, **kwargs: Any) -> str:
        if self == path:
            raise OSError(errno.EIO, "Input/output error")
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", flaky)
