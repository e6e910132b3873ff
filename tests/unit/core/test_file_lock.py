"""Guard files: opened for writing where possible (an NFS client's flock needs it), read-only where not."""

from __future__ import annotations

import errno
import fcntl
import os

import pytest

from core import file_lock
from core.file_lock import open_guard, take_flock


def test_a_guard_is_opened_for_writing_so_an_nfs_flock_can_be_taken(tmp_path):
    """Regression: opened read-only, an exclusive flock on NFS (a byte-range lock there) failed with EBADF."""
    descriptor = open_guard(tmp_path / ".activation")
    try:
        assert fcntl.fcntl(descriptor, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
        assert take_flock(descriptor, 1.0)
    finally:
        os.close(descriptor)


@pytest.mark.parametrize("refusal", [errno.EACCES, errno.EROFS])
def test_a_guard_this_user_may_not_write_is_taken_read_only(tmp_path, monkeypatch, refusal):
    (tmp_path / ".locks").touch()
    real_open = os.open

    def refused_for_writing(path, flags, *mode):
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise OSError(refusal, os.strerror(refusal))
        return real_open(path, flags, *mode)

    monkeypatch.setattr(file_lock.os, "open", refused_for_writing)
    descriptor = open_guard(tmp_path / ".locks")
    try:
        assert take_flock(descriptor, 1.0)
    finally:
        os.close(descriptor)
    monkeypatch.setattr(file_lock.os, "open", lambda *args: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError, match="I/O error"):
        open_guard(tmp_path / ".locks")
