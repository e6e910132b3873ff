"""`make run`'s check before it starts a Ray of its own: `python -m app.local_dashboard`.

With another Ray cluster on the machine (`ray start`) holding the dashboard's port, the new cluster's dashboard would
move to another port without a word, while the scaling controller, `ray job submit` and the README's commands keep
addressing 127.0.0.1:8265: the other cluster's. So the run is refused, saying how to go on. Nothing to check where
$RAY_ADDRESS names a cluster to join.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping

DASHBOARD = ("127.0.0.1", 8265)  # Ray's default, the controller's default ray_dashboard_url


def taken(address: tuple[str, int] = DASHBOARD) -> bool:
    """Whether something accepts connections at `address`."""
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(address) == 0


def main(environ: Mapping[str, str] = os.environ, address: tuple[str, int] = DASHBOARD) -> int:
    if environ.get("RAY_ADDRESS", "").strip() not in ("", "local") or not taken(address):  # local: a Ray of its own
        return 0
    host, port = address
    sys.stderr.write(f"local_dashboard: error: something already listens on {host}:{port}, Ray's dashboard port (a "
                     "`ray start` cluster?): this run's own Ray would put its dashboard elsewhere, and the scaling "
                     "controller would scale the other cluster's apps. Stop that cluster, or set RAY_ADDRESS to run "
                     "on it\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
