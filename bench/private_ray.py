"""The Ray a benchmark starts on this machine, as `make run` starts one: under Ray's token authentication, with a
token of the run's own in a private temporary folder (each Serve replica listens on every interface, where only the
token guards it), Ray's own ports on the loopback address, and never a cluster RAY_ADDRESS names (the figures are
this machine's). A RAY_AUTH_MODE set outside wins (the README says what `disabled` leaves open)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from core.ray_token import prepare


def private_ray_environment() -> Path:
    """Set this process's environment for that Ray (before `ray.init`); returns the run's temporary folder, which
    holds the token and is removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="kcloud-bench-"))
    atexit.register(shutil.rmtree, folder, True)
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(folder / "auth_token")
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    prepare(os.environ)  # writes the token file (mode 0600) in token mode, nothing otherwise
    return folder
