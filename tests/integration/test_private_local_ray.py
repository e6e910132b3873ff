"""The Ray that `make run` (and `train`, `evaluate`) start runs under Ray's token authentication and listens on the
loopback address only: a driver started with the Makefile's environment lists the TCP sockets its Ray processes
listen on (from /proc), and none may be reachable from another machine (a Serve replica's gRPC port, which Ray binds
to every interface whatever the setting, is guarded by the token: tests/security/test_ray_token_auth.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.paths import REPO_ROOT

pytestmark = [pytest.mark.integration]

DRIVER = r"""
import json, os
from pathlib import Path
import ray

ray.init(address="local", num_cpus=1, include_dashboard=True)

def descendants(root):
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(parents.get(pid, []))
    return found

inodes = set()
for pid in descendants(os.getpid()):
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        continue
    inodes.update(link[8:-1] for link in links if link.startswith("socket:["))

listening = []
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in Path(table).read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
            listening.append(fields[1])
print(json.dumps({"node_ip": ray.util.get_node_ip_address(), "listening": listening}))
ray.shutdown()
"""

LOOPBACK = ("0100007F:", "0000000000000000FFFF00000100007F:", "00000000000000000000000001000000:")
"""127.0.0.1, ::ffff:127.0.0.1 and ::1 as /proc/net/tcp{,6} write them."""


def _make_run_environment(**outside: str) -> dict[str, str]:
    """The environment `make run`'s commands get (a probe prerequisite; `make -n` runs nothing else), with the
    `outside` variables set where make runs."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")} | outside
    probe = ["--eval", "run: env-probe", "--eval", "env-probe: ; +@env -0"]
    result = subprocess.run(["make", "-n", "--no-print-directory", *probe, "run"], cwd=REPO_ROOT, env=clean,
                            capture_output=True, check=True)
    return dict(entry.split("=", 1) for entry in result.stdout.decode().split("\0") if "=" in entry)


def test_make_run_s_ray_listens_on_the_loopback_address_only():
    environment = _make_run_environment()
    assert environment.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0" and environment.get("RAY_AUTH_MODE") == "token"
    # `local` starts a Ray of its own too (a regression: it was taken for a cluster to join, its ports left open)
    assert _make_run_environment(RAY_ADDRESS="local").get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in _make_run_environment(RAY_ADDRESS="10.0.0.5:6379")
    done = subprocess.run([sys.executable, "-c", DRIVER], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                          env={**environment, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["node_ip"] == "127.0.0.1"
    assert len(seen["listening"]) >= 3  # the GCS, the raylet, the dashboard at least
    assert [address for address in seen["listening"] if not address.startswith(LOOPBACK)] == []
