"""An exclusive advisory lock (flock) taken within a time limit: a holder stopped while it held it (suspended, on a
hung network volume) makes the caller give up, never wait for good."""

from __future__ import annotations

import fcntl
import time


def take_flock(descriptor: int, timeout_s: float, poll_s: float = 0.02) -> bool:
    """Take an exclusive flock on the open file `descriptor`, waiting up to `timeout_s`; False when another holder
    kept it that long. Released when the descriptor is closed (or its process dies)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)
