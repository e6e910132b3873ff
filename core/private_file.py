"""A file only its owner may read, created once and whole: tokens the service generates for itself."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from core.atomic_files import fsync_dir

_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}


def write_private(path: Path, text: str) -> bool:
    """Write `text` into a new file `path` (mode 0600, its folder created) unless it exists; True when written.

    The text is written and flushed to disk under a temporary name first, then linked to `path`, which fails when
    `path` exists: a crash or a full disk never leaves `path` empty (a later call would take it for the token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return False
    staging = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(staging, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(staging, path)
        except FileExistsError:  # written meanwhile by another
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:  # a real failure (permissions, I/O, space): said, nothing left
                raise
            return _create_and_write(path, text)  # the text is known to fit, so it is written in place
    finally:
        staging.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def _create_and_write(path: Path, text: str) -> bool:
    """`path` created and written in place (no hard links to stage it with); removed again if the write fails."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return True
