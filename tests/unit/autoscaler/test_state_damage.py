"""A state file SQLite reports damaged while the controller runs is checked in full at the next tick and, when the
check confirms it, set aside for a new one, as one found damaged at open is: before, every later tick failed on it
until someone restarted the controller. A controller sharing the file follows a new one another set up."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from autoscaler.schema import ActuationStatus, ScaleAction, ScalingPolicy
from autoscaler.state import FULL_CHECK_EVERY_S, ControllerState, _one_at_a_time
from tests.unit.autoscaler.doubles import policy_data, write_power

SQLITE_CORRUPT_INDEX = sqlite3.SQLITE_CORRUPT | 3 << 8  # an extended code, as Python 3.11 reports them


class Failing:
    """A state's connection whose every call raises what SQLite raises when it meets a damaged page (`code`)."""

    def __init__(self, db: sqlite3.Connection, code: int = sqlite3.SQLITE_CORRUPT):
        self.db, self.code = db, code

    def execute(self, *args):
        error = sqlite3.DatabaseError("database disk image is malformed")
        error.sqlite_errorcode = self.code
        raise error

    def __getattr__(self, name: str):
        return getattr(self.db, name)


def damage(state: ControllerState, *, on_disk: bool = True, code: int = sqlite3.SQLITE_CORRUPT) -> None:
    """SQLite reports the file damaged from now on (`code`); `on_disk`: every page after the first really is."""
    if on_disk:
        state._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # nothing left in the WAL to write the pages back
        raw = bytearray(state.path.read_bytes())
        raw[4096:] = b"\xff" * (len(raw) - 4096)
        state.path.write_bytes(bytes(raw))
    state._db = Failing(state._db, code)


def set_aside(folder: Path) -> list[Path]:
    """The state files set aside in `folder` (each with its WAL files beside it)."""
    return [p for p in folder.glob("*.sqlite.damaged-*") if not p.name.endswith(("-wal", "-shm"))]


def test_a_file_damaged_during_a_run_is_set_aside_at_the_next_tick(make, store, tmp_path):
    controller, actuator = make()
    from_config = ScalingPolicy.model_validate(policy_data("from-config", predictive_scaling={"enabled": False}))
    controller.state.seed([from_config], datetime.now(UTC))
    controller.put_policy(policy_data("from-api", predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 950, "n2": 950})
    damage(controller.state)

    with pytest.raises(sqlite3.DatabaseError):  # the tick meets the damage: it cannot even take the lease
        controller.tick()
    [event] = controller.tick()  # the next starts afresh: the config file's policy is back, the API's is lost

    assert len(set_aside(tmp_path / "state")) == 1
    assert [p.name for p in controller.state.policies()] == ["from-config"]
    assert event.policy == "from-config" and event.action is ScaleAction.HOLD  # over budget, but the cooldown
    assert "cooldown" in event.reason and actuator.calls == []  # starts with the new file (a change may be lost)
    assert event.actuation.status is ActuationStatus.NONE


def test_damage_the_full_check_does_not_confirm_keeps_the_file(tmp_path):
    """Reported under an extended code (a damaged index), as SQLite reports most damage."""
    state = ControllerState(tmp_path / "s.sqlite")
    state.put_policy(ScalingPolicy.model_validate(policy_data("from-api")), datetime.now(UTC))
    damage(state, on_disk=False, code=SQLITE_CORRUPT_INDEX)
    with pytest.raises(sqlite3.DatabaseError):
        state.policies()
    assert state.follow_file(datetime.now(UTC))  # opened again, checked in full, kept
    assert [p.name for p in state.policies()] == ["from-api"] and set_aside(tmp_path) == []
    assert not state.follow_file(datetime.now(UTC))


def test_damage_reported_again_and_again_is_checked_in_full_at_most_once_per_interval(tmp_path, monkeypatch):
    """Regression: SQLite reported the same unconfirmed damage at every tick, and every tick ran the full check
    (every page read, with the API's reads of the state waiting on its lock)."""
    state = ControllerState(tmp_path / "s.sqlite")
    checks, real_open, clock = [], ControllerState._open, [1000.0]
    monkeypatch.setattr(ControllerState, "_open", lambda self, thorough=False: checks.append(thorough) or
                        real_open(self, thorough))
    state._monotonic = lambda: clock[0]
    for _ in range(3):
        damage(state, on_disk=False, code=SQLITE_CORRUPT_INDEX)
        with pytest.raises(sqlite3.DatabaseError):
            state.policies()
        assert state.follow_file(datetime.now(UTC))  # opened again: the file is kept
        clock[0] += 60
    clock[0] += FULL_CHECK_EVERY_S
    damage(state, on_disk=False, code=SQLITE_CORRUPT_INDEX)
    with pytest.raises(sqlite3.DatabaseError):
        state.policies()
    assert state.follow_file(datetime.now(UTC))
    assert checks == [True, False, False, True] and set_aside(tmp_path) == []


def test_the_file_that_replaced_one_set_aside_is_checked_in_full_when_damage_is_reported_there(tmp_path, monkeypatch):
    """The full check that set a damaged file aside vouches for nothing in the new one."""
    state = ControllerState(tmp_path / "s.sqlite")
    checks, real_open = [], ControllerState._open
    monkeypatch.setattr(ControllerState, "_open", lambda self, thorough=False: checks.append(thorough) or
                        real_open(self, thorough))
    state._monotonic = lambda: 1000.0
    damage(state)
    with pytest.raises(sqlite3.DatabaseError):
        state.policies()
    assert state.follow_file(datetime.now(UTC)) and len(set_aside(tmp_path)) == 1
    damage(state, on_disk=False, code=SQLITE_CORRUPT_INDEX)
    with pytest.raises(sqlite3.DatabaseError):
        state.policies()
    assert state.follow_file(datetime.now(UTC))
    assert checks == [True, False, True]  # the check, the new file's open, the new file's full check


def test_a_new_files_cooldown_outlives_a_restart_and_a_failed_first_open(tmp_path, monkeypatch):
    """The time a damaged file was set aside lived in memory only: a controller restarted before its first tick
    wrote the policies' states scaled at once, though the lost history may hold a change just made."""
    path = tmp_path / "s.sqlite"
    state = ControllerState(path)
    damage(state)
    with pytest.raises(sqlite3.DatabaseError):
        state.policy_state("web")
    opens = []
    real_open = ControllerState._open

    def open_fails_once_after_the_set_aside(self, thorough=False):
        if set_aside(tmp_path) and not opens:
            opens.append(1)
            raise sqlite3.OperationalError("unable to open database file")
        return real_open(self, thorough)

    monkeypatch.setattr(ControllerState, "_open", open_fails_once_after_the_set_aside)
    now = datetime.now(UTC)
    with pytest.raises(sqlite3.OperationalError):
        state.follow_file(now)
    assert state.follow_file(now) and not state.follow_file(now)  # the new file, once
    afresh = state.policy_state("web").last_scale_at
    assert afresh is not None and abs(afresh - now) < timedelta(seconds=5)
    state.close()
    assert ControllerState(path).policy_state("web").last_scale_at == afresh


def test_a_controller_sharing_the_file_follows_the_new_one_another_set_up(tmp_path):
    """The one that did not meet the damage went on alone in the file set aside, its lease there too: two
    controllers acted as lease holders."""
    path = tmp_path / "s.sqlite"
    first, second = ControllerState(path), ControllerState(path)
    second.acquire_lease("b", datetime.now(UTC), 90)
    damage(first)
    with pytest.raises(sqlite3.DatabaseError):
        first.acquire_lease("a", datetime.now(UTC), 90)
    assert first.follow_file(datetime.now(UTC))
    assert first.acquire_lease("a", datetime.now(UTC), 90).holder == "a"  # b's lease went with the old file
    assert second.follow_file(datetime.now(UTC))  # nothing met by b itself: it follows the file all the same
    assert second.acquire_lease("b", datetime.now(UTC), 90).holder == "a"
    assert len(set_aside(tmp_path)) == 1  # only the damaged file was moved


def test_a_follower_seeding_a_new_file_deletes_none_of_the_policies_another_seeded_there(tmp_path):
    """Regression: a controller following a new file seeded its own config there, deleting as "removed from the
    config" every policy the other controller's config (a newer release's, during an upgrade) had seeded."""
    path, now = tmp_path / "s.sqlite", datetime.now(UTC)
    first, second = ControllerState(path), ControllerState(path)
    older, newer = (ScalingPolicy.model_validate(policy_data(name)) for name in ("older", "newer"))
    second.seed([older], now)
    first.seed([older, newer], now)
    damage(first)
    with pytest.raises(sqlite3.DatabaseError):
        first.policies()
    assert first.follow_file(now)  # set aside: the new file holds first's policies
    assert second.follow_file(now)  # follows it, seeding its own
    assert sorted(p.name for p in ControllerState(path).policies()) == ["newer", "older"]
    assert second.seed([older], now) == [] and [p.name for p in second.policies()] == ["older"]  # at a start


def test_other_database_errors_never_set_the_file_aside(tmp_path):
    """A full disk or a passing I/O error says nothing of the file itself."""
    state = ControllerState(tmp_path / "s.sqlite")

    class Busy(Failing):
        def execute(self, *args):
            raise sqlite3.OperationalError("disk I/O error")

    state._db = Busy(state._db)
    with pytest.raises(sqlite3.OperationalError):
        state.policy_state("web")
    assert not state.follow_file(datetime.now(UTC)) and set_aside(tmp_path) == []


def test_a_file_found_damaged_by_two_controllers_is_set_aside_once(tmp_path, monkeypatch):
    """Both checked the file in full; the slower one set aside the new file the faster one had just started. (Where
    the file lock does not hold, as on a file system without flock: the check of the file's identity still does.)"""
    monkeypatch.setattr("autoscaler.state._one_at_a_time", lambda path: contextlib.nullcontext())
    path = tmp_path / "s.sqlite"
    first, second = ControllerState(path), ControllerState(path)
    damage(first)
    damage(second, on_disk=False)  # the same file: damaged on disk once
    for state in (first, second):
        with pytest.raises(sqlite3.DatabaseError):
            state.policies()
    real_open = ControllerState._open

    def first_sets_it_aside_during_the_check(self, thorough=False):
        try:
            return real_open(self, thorough)
        except sqlite3.DatabaseError:
            if self is second and thorough:
                assert first.follow_file(datetime.now(UTC))  # faster: the file is set aside and a new one started
            raise

    monkeypatch.setattr(ControllerState, "_open", first_sets_it_aside_during_the_check)
    assert second.follow_file(datetime.now(UTC))
    assert len(set_aside(tmp_path)) == 1
    assert first.acquire_lease("a", datetime.now(UTC), 90).holder == "a"
    assert second.acquire_lease("b", datetime.now(UTC), 90).holder == "a"  # one file, one lease


def test_a_follower_reads_the_mark_of_a_new_file_written_after_it_opened_it(tmp_path):
    """It read the file's started-afresh mark once, at open: one written a moment later left its cooldowns off."""
    path = tmp_path / "s.sqlite"
    first, second = ControllerState(path), ControllerState(path)
    assert second.policy_state("web").last_scale_at is None
    stamp = datetime.now(UTC)
    first._db.execute("INSERT OR REPLACE INTO started_afresh VALUES (0, ?)", (stamp.isoformat(),))
    assert not second.follow_file(stamp)
    assert second.policy_state("web").last_scale_at == stamp


def test_controllers_sharing_the_file_open_and_set_it_aside_one_at_a_time(tmp_path):
    """One opening the file while another moved it and its WAL aside created an empty file beside the old WAL."""
    path = tmp_path / "s.sqlite"
    ControllerState(path).close()
    opened = threading.Event()
    with _one_at_a_time(path):  # another controller in the middle of a set-aside
        opener = threading.Thread(target=lambda: (ControllerState(path), opened.set()))
        opener.start()
        assert not opened.wait(0.3)
    assert opened.wait(5)
    opener.join(5)


def test_a_deleted_file_is_followed_to_a_new_one(tmp_path):
    state = ControllerState(tmp_path / "s.sqlite")
    state.acquire_lease("a", datetime.now(UTC), 90)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state.path}{suffix}").unlink(missing_ok=True)
    assert state.follow_file(datetime.now(UTC))
    assert state.path.exists() and state.acquire_lease("b", datetime.now(UTC), 90).holder == "b"  # a new file


def test_a_lock_held_too_long_is_a_busy_database_not_a_hang(tmp_path):
    """A frozen controller holding the lock would stall every tick and API call, with no word."""
    path = tmp_path / "s.sqlite"
    with _one_at_a_time(path):
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"), _one_at_a_time(path, timeout_s=0.2):
            pass
        assert time.monotonic() - started < 2
