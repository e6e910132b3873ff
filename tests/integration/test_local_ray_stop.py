"""A training command's own Ray leaves no process behind: a worker whose Python exit hangs after its actor has gone
(a non-daemon thread that never ends, as a leftover Ray Train controller's did) is killed when the command exits.
Runs a driver in a subprocess, as a command runs, with a Ray of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DRIVER = """
import os, threading, time
import ray
from training.power.local_ray import start_local_ray

start_local_ray(verbose=False)

@ray.remote(num_cpus=0)
class HangsAtExit:
    def start(self):
        threading.Thread(target=time.sleep, args=(600,)).start()  # non-daemon: the exit waits for it
        return os.getpid()

actor = HangsAtExit.remote()
print(ray.get(actor.start.remote()), flush=True)
del actor  # the actor exits gracefully and its process hangs in the interpreter's exit
time.sleep(3)
"""


def _alive(pid: int) -> bool:
    """Running, not merely a zombie left for an init that does not reap."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _run_driver() -> int:
    done = subprocess.run([sys.executable, "-c", DRIVER], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=180, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "RAY_ADDRESS": "local"})
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[0])


def test_a_worker_hanging_in_its_exit_is_killed_when_the_command_exits():
    """Without the stop (Ray's own exit hook alone) the process was still alive 5 s after the command exited."""
    pid = _run_driver()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(pid)

