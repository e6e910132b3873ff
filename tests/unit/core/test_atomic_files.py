"""Crash-safe writes: the target is the old file or the complete new one, never half of it, and no temp is left."""

from __future__ import annotations

import pytest

from core.atomic_files import atomic_write_text, atomic_write_with


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
