"""An exclusive advisory lock (flock) taken within a time limit: a holder stopped while it held it (suspended, on a
hung network volume) makes the caller give up, never wait for good."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path


def open_guard(path: Path) -> int:
    """A descriptor of the guard file `path` to flock, created when missing (its mode as the umask gives it): opened
    for writing, as an NFS client's flock (a byte-range lock there) needs; read-only where this user may not write
    it (another user's guard on a local volume, whose flock needs no more)."""
    try:
        return os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        return os.open(path, os.O_RDONLY)


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
