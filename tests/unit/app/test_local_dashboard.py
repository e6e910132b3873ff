"""`make run` refuses to start its own Ray where another cluster's dashboard holds the port (app/local_dashboard.py)."""

from __future__ import annotations

import socket

from app import local_dashboard


def test_a_taken_dashboard_port_refuses_the_run_unless_ray_address_joins_a_cluster(capsys):
    """Regression (review): the new cluster's dashboard moved to another port unsaid, and the scaling controller
    went on addressing 127.0.0.1:8265, the other cluster's."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = listener.getsockname()
        assert local_dashboard.main({}, address) == 2
        assert f"already listens on {address[0]}:{address[1]}" in capsys.readouterr().err
        assert local_dashboard.main({"RAY_ADDRESS": "ray://head:10001"}, address) == 0
        assert local_dashboard.main({"RAY_ADDRESS": "local"}, address) == 2  # `local` starts a Ray of its own too
    assert local_dashboard.main({}, address) == 0  # free again
