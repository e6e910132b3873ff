"""A real two-node Ray cluster on one machine: a `ray job submit` training whose two workers must run on
different nodes, and one collector actor pinned to each node.

Two raylets (`ray start --head` and `ray start --address=...`, one CPU and one `trainer` resource each, each
with its own --temp-dir) are started with `--block` as subprocesses of this test, in their own process groups;
the test stops exactly those (never `ray stop`). The job asks each worker for `{"trainer": 1}`, so the two
workers cannot share a node. Checkpoints go to a --storage-path both nodes see (they share this machine's disk).
Each node has its own NODE_NAME, as two machines would have their own host names (the collectors' spill
folders are per node name).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.registry import ModelRegistry
from tests.factories import free_port
from tests.paths import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RAY = str(Path(sys.executable).parent / "ray")
NODE_NAMES = {"head": "kcloud-head", "second": "kcloud-second"}  # each node's NODE_NAME (telemetry node id)
NODE_OPTIONS = ["--num-cpus=1", '--resources={"trainer": 1}', "--node-ip-address=127.0.0.1",
                "--object-store-memory=100000000", "--block"]
TRAIN = ["python", "-m", "training.train_lstm", "--num-workers", "2", "--resources-per-worker", '{"trainer": 1}',
         "--data", "tests/data/upm_sample.csv", "--step", "2min", "--horizon", "20min", "--sequence-length", "15",
         "--epochs", "4", "--quiet"]
# The supervisor and the scheduler as the app's bootstrap starts them (tied to the app), beside a Serve app with the
# API's ingress deployment: where Ray places them and what the collectors report while the app runs; then that they
# end themselves, the collectors with them, once `serve shutdown` has taken the app away for the grace period.
TIED_TO_THE_APP = """
import json, socket, sys, time
import ray
from ray import serve
from ray.util.state import list_actors
from collectors.settings import CollectorConfig
from collectors.supervisor import start_telemetry
from core.actors import find_actor
from core.names import INGRESS_DEPLOYMENT, NAMESPACE, SCHEDULER_ACTOR, SUPERVISOR_ACTOR
from training.power.scheduler import SchedulerSettings
from training.power.scheduler_actor import scheduler_client, start_scheduler

address, folder, dashboard = sys.argv[1], sys.argv[2], sys.argv[3]
ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})

@serve.deployment(name=INGRESS_DEPLOYMENT, ray_actor_options={"num_cpus": 0})
class Ingress:
    def __call__(self, request):
        return "ok"

serve.run(Ingress.bind(), name="kcloud", route_prefix=None)
config = CollectorConfig.model_validate({"telemetry": {"sampling_interval": "1s", "flush_interval": "1s",
                                                       "spill_dir": folder + "/spill"}})
# reconcile_s: time for a collector's worker to start on a busy machine before its health is judged
supervisor = start_telemetry(config, selected=["host"], store_settings={"TELEMETRY_DATA_DIR": folder + "/store"},
                             reconcile_s=10.0, app_grace_s=2.0)
start_scheduler(SchedulerSettings(state_path=folder + "/state", model_path=folder + "/models", interval_s=3600,
                                  since_s=86400), app_grace_s=2.0)
collectors = sorted(ray.get(supervisor.status.remote(), timeout=120))  # the keys of those it started

def alive(cls):  # the test session's own Ray runs on this machine too: this cluster's actors, by its dashboard
    return list_actors(address=dashboard, filters=[("class_name", "=", cls), ("state", "=", "ALIVE")],
                       raise_on_missing_output=False)

def running():
    return {"supervisor": find_actor(SUPERVISOR_ACTOR) is not None,
            "scheduler": find_actor(SCHEDULER_ACTOR) is not None, "collectors": len(alive("CollectorActor"))}

healthy, status, deadline = {}, {}, time.monotonic() + 240  # the collectors' workers may take a while to start
while len(healthy) < 2 and time.monotonic() < deadline:
    time.sleep(1)
    status = ray.get(supervisor.status.remote(), timeout=60)
    healthy = {key: value for key, value in status.items() if key.startswith("node-") and "error" not in value}
placed = {"names": ray.get(supervisor.node_names.remote(), timeout=60),
          "collector_nodes": sorted(actor.node_id for actor in alive("CollectorActor")),
          "next_due": scheduler_client(timeout_s=120).call("next_due"),
          "scheduler_nodes": [actor.node_id for actor in alive("RetrainSchedulerService")]}
time.sleep(7)  # more than three grace periods with the app running
with_app = running()
serve.shutdown()
deadline = time.monotonic() + 150
while any(running().values()) and time.monotonic() < deadline:
    time.sleep(0.5)
print(json.dumps({"healthy": sorted(healthy), "status": status, **placed, "collectors_started": collectors,
                  "with_app": with_app, "running": running()}, default=str))
"""


@dataclass
class Cluster:
    address: str  # GCS 127.0.0.1:PORT
    dashboard: str  # http://127.0.0.1:PORT
    env: dict[str, str]
    node_ids: dict[str, str]  # "head" / "second" -> Ray node id


def _wait(predicate: Callable[[], object], timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([RAY, "start", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to our `ray start --block` processes (each stops its node's processes), then, after 20 s at most
    for all of them together, SIGKILL whatever is left in the process groups they lead: only processes this test
    started."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)


def _alive_nodes(dashboard: str) -> list:
    from ray.util.state import list_nodes

    try:
        return [node for node in list_nodes(address=dashboard, raise_on_missing_output=False)
                if node.state == "ALIVE"]
    except Exception:  # noqa: BLE001 - the dashboard is still starting
        return []


def _agent_ports() -> list[str]:
    """Free ports for a node's agents: the defaults (the job agent's 52365 among them) belong to the test
    session's own Ray on this machine, and a second agent on a taken port never comes up."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("ray")  # short: Ray's Unix sockets live under it (108 bytes at most)
    # No drain on SIGTERM (Ray waits up to 30 s for a draining node to go idle, which a pod being replaced needs and
    # this teardown does not): each `ray start --block` then stops its node's processes at once.
    # Ray's switch for loopback-only ports (the session's default) refuses a second raylet: both are on 127.0.0.1, and
    # in the session's auth mode, with its token (tests/conftest.py), which the job CLI and the clients here send
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    port, dashboard_port = free_port(), free_port()
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    started: list[subprocess.Popen] = []
    try:
        started.append(_start(["--head", f"--port={port}", "--dashboard-host=127.0.0.1",
                               f"--dashboard-port={dashboard_port}", f"--temp-dir={root / 'h'}", *NODE_OPTIONS,
                               *_agent_ports()],
                              {**env, "NODE_NAME": NODE_NAMES["head"]}, root / "head.log"))
        head = _wait(lambda: _alive_nodes(dashboard), 180, "the head node")[0]
        started.append(_start([f"--address=127.0.0.1:{port}", f"--temp-dir={root / 'w'}", *NODE_OPTIONS,
                               *_agent_ports()],
                              {**env, "NODE_NAME": NODE_NAMES["second"]}, root / "second.log"))
        nodes = _wait(lambda: len(found := _alive_nodes(dashboard)) == 2 and found, 180, "the second node")
        second = next(node for node in nodes if node.node_id != head.node_id)
        yield Cluster(f"127.0.0.1:{port}", dashboard, env, {"head": head.node_id, "second": second.node_id})
    finally:
        _stop(started[::-1])


def test_a_submitted_job_trains_on_workers_spread_over_both_nodes(cluster, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    models, storage = tmp_path / "models", tmp_path / "checkpoints"
    deadline = time.monotonic() + 120
    while True:  # the head's job agent may come up after its node is alive: the CLI then says to try again
        job = f"multinode-{time.time_ns()}"
        submitted = subprocess.run(
            [RAY, "job", "submit", "--address", cluster.dashboard, "--submission-id", job, "--working-dir", ".",
             "--", *TRAIN, "--model-path", str(models), "--storage-path", str(storage)],
            cwd=REPO_ROOT, env=cluster.env, capture_output=True, text=True, timeout=900)
        if "No available agent" not in submitted.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    client = JobSubmissionClient(cluster.dashboard)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert "train_lstm: registered power_lstm version 1" in logs
    registry = ModelRegistry(models)
    assert registry.versions("power_lstm") == [1] and registry.active_version("power_lstm") == 1
    _, metadata = registry.get("power_lstm", 1)
    workers = metadata.training["worker_nodes"]
    assert metadata.training["num_workers"] == 2 and len(workers) == 2
    assert set(workers) == set(cluster.node_ids.values())  # one worker on each node
    assert metadata.config["storage_path"] == str(storage)
    # Ray Train's run folder held the checkpoint both nodes reached; it is deleted once the weights are registered
    assert storage.is_dir() and not any(storage.iterdir())


@pytest.fixture(scope="module")
def tied_to_the_app(cluster, tmp_path_factory) -> dict:
    """What TIED_TO_THE_APP saw, run once on the cluster."""
    return _driver(TIED_TO_THE_APP, cluster, tmp_path_factory.mktemp("tied"), timeout_s=420)


def test_one_collector_actor_is_pinned_to_each_node(cluster, tied_to_the_app):
    seen = tied_to_the_app
    assert seen["healthy"] == sorted(f"node-{node}" for node in cluster.node_ids.values()), seen["status"]
    # each collector read NODE_NAME from its own raylet's environment: it runs on that node
    assert seen["names"] == {cluster.node_ids[role]: NODE_NAMES[role] for role in NODE_NAMES}
    assert seen["collector_nodes"] == sorted(cluster.node_ids.values())


def test_the_retrain_scheduler_is_placed_on_the_head_node(cluster, tied_to_the_app):
    """Designed: beside the controller on the head, where the state directory is (node:__internal_head__)."""
    assert tied_to_the_app["scheduler_nodes"] == [cluster.node_ids["head"]] and tied_to_the_app["next_due"]


def test_the_actors_the_app_starts_end_themselves_without_it(tied_to_the_app):
    """`serve shutdown` must not leave collectors sampling and a scheduler retraining: started as the bootstrap
    starts them, they stay while the app runs and end themselves once it has been shut down for the grace period
    (before, serve.status() kept the dead Serve controller's handle, so no look ever saw the app gone)."""
    seen = tied_to_the_app
    assert len(seen["collectors_started"]) == 2  # one per node, before the supervisor stopped them
    assert seen["with_app"] == {"supervisor": True, "scheduler": True, "collectors": 2}
    assert seen["running"] == {"supervisor": False, "scheduler": False, "collectors": 0}


def _driver(script: str, cluster: Cluster, folder, timeout_s: float) -> dict:
    """Run `script` as a Ray driver of the cluster (argv: its address, `folder`, its dashboard); its last stdout
    line, as JSON."""
    driver = subprocess.run([sys.executable, "-c", script, cluster.address, str(folder), cluster.dashboard],
                            cwd=REPO_ROOT,
                            env={**cluster.env, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
                            timeout=timeout_s)
    assert driver.returncode == 0, driver.stderr[-3000:]
    return json.loads(driver.stdout.strip().splitlines()[-1])
