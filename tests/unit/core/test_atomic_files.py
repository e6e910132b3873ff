"""Crash-safe writes: the target is the old file or the complete new one, never half of it, and no temp is left."""

from __future__ import annotations

import os
import stat

import pytest

from core.atomic_files import FILE_MODE, atomic_write_text, atomic_write_with, process_umask


def test_a_writer_fills_a_temp_beside_the_target_which_then_replaces_it(tmp_path):
    target = tmp_path / "new" / "report.json"  # the folder is created
    atomic_write_with(target, lambda tmp: tmp.write_text("complete"))
    assert target.read_text() == "complete" and [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_a_writer_that_fails_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_text(target, "old")

    def half_then_crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_with(target, half_then_crash)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_the_umask_is_read_without_changing_it():
    assert process_umask() == _umask() and FILE_MODE == 0o666 & ~_umask()


@pytest.mark.parametrize("mode", [0o644, 0o664])
def test_written_files_take_the_umask_s_mode_not_the_temp_file_s(tmp_path, monkeypatch, mode):
    """Regression: files came out 0600 (mkstemp's mode), so metadata.json, ACTIVE and PINNED written by a host
    user could not be read by the service's user."""
    monkeypatch.setattr("core.atomic_files.FILE_MODE", mode)
    atomic_write_text(tmp_path / "ACTIVE", "1\n")
    atomic_write_with(tmp_path / "report.csv", lambda tmp: tmp.write_text("a,b\n"))
    assert {stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("ACTIVE", "report.csv")} == {mode}


def test_a_mode_that_cannot_be_set_fails_the_write_without_leaking_its_descriptor(tmp_path, monkeypatch):
    """Regression: an fchmod refused (a volume that keeps no modes) left the temp file's descriptor open, one more
    at every write."""
    opened_before = len(os.listdir("/proc/self/fd"))

    def refused(fd, mode):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refused)
    for _ in range(20):
        with pytest.raises(PermissionError):
            atomic_write_text(tmp_path / "state.json", "{}")
    assert len(os.listdir("/proc/self/fd")) <= opened_before and list(tmp_path.iterdir()) == []
