"""The Ray a training command starts (or joins, as a `ray job submit` driver) when none is initialized: a local
one gets its dashboard on 127.0.0.1.

Ray Train's placement-group cleaner asks the state API (served by the dashboard) whether a run's controller is
gone; without a dashboard it logs a warning every few seconds of every run, and the resources of a run that ended
badly (or a trial ASHA stopped) stay reserved, so later runs starve. The dashboard's address goes to every worker,
so the cleaner never guesses among other Ray instances on the machine.
"""

from __future__ import annotations

import socket

import ray

_started: dict[str, str] = {}  # the GCS address of the Ray start_local_ray connected this process to


def start_local_ray(verbose: bool) -> None:
    """Start a local Ray, or join the one `ray.init()` finds (RAY_ADDRESS under `ray job submit`)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = ray.init(log_to_driver=verbose, include_dashboard=True, dashboard_host="127.0.0.1",
                       dashboard_port=port,
                       runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}})
    _started["gcs"] = context.address_info["gcs_address"]


def started_here() -> bool:
    """Whether this process's Ray connection is the one `start_local_ray` made: the command's own Ray, not one a
    caller (a test session, the Serve app) had already started, whose CPUs others need."""
    return ray.is_initialized() and _started.get("gcs") == ray.get_runtime_context().gcs_address
