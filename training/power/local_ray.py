"""The Ray a training command starts (or joins, as a `ray job submit` driver) when none is initialized: a local
one gets its dashboard on 127.0.0.1, and its worker processes are gone when the command exits.

Ray Train's placement-group cleaner asks the state API (served by the dashboard) whether a run's controller is
gone; without a dashboard it logs a warning every few seconds of every run, and the resources of a run that ended
badly (or a trial ASHA stopped) stay reserved, so later runs starve. The dashboard's address goes to every worker,
so the cleaner never guesses among other Ray instances on the machine.

A worker whose Python exit hangs after its core worker has let go outlives the raylet, and then no Ray process
kills it (seen once in about 30 backtests: a Ray Train `TrainController`, PPID 1, 400 MB, its log showing a
complete shutdown). `stop_local_ray` therefore holds the raylet's child processes by pidfd (Linux; elsewhere it
only shuts Ray down) before the shutdown and kills those still alive a few seconds after it: only processes this
command's own Ray started, never a reused PID.
"""

from __future__ import annotations

import atexit
import logging
import os
import select
import signal
import socket
import time

import ray

from core.ray_token import prepare as prepare_ray_token

logger = logging.getLogger(__name__)

STOP_GRACE_S = 5.0  # a healthy worker exits about 1 s after its raylet

_started: dict[str, str] = {}  # the GCS address of the Ray start_local_ray connected this process to


def start_local_ray(verbose: bool) -> None:
    """Start a local Ray, or join the cluster RAY_ADDRESS names (under `ray job submit`); a Ray started here is
    stopped by `stop_local_ray` when the process exits, a joined one is left as it is. A local one in token mode
    (Ray's default) finds its token file written private (core/ray_token.py). A joined cluster's own
    dashboard answers the state API: pointing its workers at a port of this process's choosing, where nothing
    listens, made Ray Train's cleaner warn for as long as it lived (over 1,000 lines after one stopped job)."""
    if _joins():
        ray.init(log_to_driver=verbose)
        return
    try:
        prepare_ray_token()  # before Ray writes it with the umask's mode
    except OSError as exc:
        logger.warning("Ray's token file cannot be written private (%s): Ray writes its own", exc.strerror or exc)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # "local": a new Ray of its own, never the cluster a `ray start` left on this machine (ray.init's default)
    context = ray.init(address="local", log_to_driver=verbose, include_dashboard=True, dashboard_host="127.0.0.1",
                       dashboard_port=port,
                       runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}})
    _started["gcs"] = context.address_info["gcs_address"]
    atexit.register(stop_local_ray)  # runs before Ray's own exit hook, registered when ray was imported


def own_local_ray(context: ray._private.worker.RayContext) -> None:
    """Take the local Ray this process has just started with its own `ray.init` (a benchmark's) as `start_local_ray`'s:
    `stop_local_ray` then stops it, and kills the workers whose exit hangs."""
    _started["gcs"] = context.address_info["gcs_address"]


def join_submitted_cluster(verbose: bool) -> None:
    """Join the cluster of a `ray job submit` driver (RAY_ADDRESS set) now, when Ray is not initialized yet, so that
    reading the telemetry store before training finds the cluster's store actor (core.stores.frame.open_store).
    Without RAY_ADDRESS nothing starts: a local Ray is started only when training needs one."""
    if _joins() and not ray.is_initialized():
        ray.init(log_to_driver=verbose)


def _joins() -> bool:
    """Whether RAY_ADDRESS names a cluster to join (`local` asks for a new local Ray, as no address does)."""
    return os.environ.get("RAY_ADDRESS", "local").strip() not in ("", "local")


def started_here() -> bool:
    """Whether this process's Ray connection is the one `start_local_ray` made: the command's own Ray, not one a
    caller (a test session, the Serve app) had already started, whose CPUs others need."""
    return ray.is_initialized() and _started.get("gcs") == ray.get_runtime_context().gcs_address


def stop_local_ray(grace_s: float = STOP_GRACE_S) -> None:
    """Shut down the Ray `start_local_ray` started and kill its worker processes still alive `grace_s` later;
    nothing for a Ray it joined."""
    if not started_here():
        return
    held = _raylet_children()
    ray.shutdown()
    _started.clear()
    deadline = time.monotonic() + grace_s
    for handle in held:
        try:
            exited, _, _ = select.select([handle], [], [], max(0.0, deadline - time.monotonic()))
            if not exited:
                signal.pidfd_send_signal(handle, signal.SIGKILL)
        except OSError:
            pass  # gone meanwhile
        finally:
            os.close(handle)


def _raylet_children() -> list[int]:
    """A pidfd for each child process of this process's raylet (none without pidfds or a raylet of its own)."""
    node = ray._private.worker._global_node  # the node `ray.init` started here, as ray.shutdown reads it
    raylets = node.all_processes.get("raylet") if node is not None else None
    if not raylets or not hasattr(os, "pidfd_open"):
        return []
    raylet = raylets[0].process.pid
    held = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or _parent(entry.name) != raylet:
            continue
        try:
            handle = os.pidfd_open(int(entry.name))
        except OSError:
            continue
        if _parent(entry.name) == raylet:  # still the same process now that the pidfd pins it
            held.append(handle)
        else:
            os.close(handle)
    return held


def _parent(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
