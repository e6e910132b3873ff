"""A state file SQLite reports damaged while the controller runs is set aside for a new one at the next tick, as one
found damaged at open is: before, every later tick failed on it until someone restarted the controller."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from autoscaler.schema import ActuationStatus, ScaleAction, ScalingPolicy
from autoscaler.state import ControllerState, _Damaged
from tests.unit.autoscaler.doubles import policy_data, write_power


class Failing:
    """A state's connection whose every call raises `error` (SQLite reporting the file damaged, say)."""

    def __init__(self, db: sqlite3.Connection, error: sqlite3.DatabaseError):
        self.db, self.error = db, error

    def execute(self, *args):
        raise self.error

    def __getattr__(self, name: str):
        return getattr(self.db, name)


def set_aside(folder: Path) -> list[Path]:
    """The state files set aside in `folder` (each with its WAL files beside it)."""
    return [p for p in folder.glob("*.sqlite.damaged-*") if not p.name.endswith(("-wal", "-shm"))]


def damage(state: ControllerState) -> None:
    state._db = Failing(state._db, _Damaged("*** in database main ***\nPage 7: btreeInitPage() returns error code 11"))


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

    assert len(set_aside(tmp_path / "state")) == 1 and [p.name for p in controller.state.policies()] == ["from-config"]
    assert event.policy == "from-config" and event.action is ScaleAction.HOLD  # over budget, but the cooldown
    assert "cooldown" in event.reason and actuator.calls == []  # starts with the new file (a change may be lost)
    assert event.actuation.status is ActuationStatus.NONE


def test_a_new_files_cooldown_outlives_a_restart(tmp_path):
    """The time a damaged file was set aside lived in memory only: a controller restarted before its first tick
    wrote the policies' states scaled at once, though the lost history may hold a change just made."""
    path = tmp_path / "s.sqlite"
    state = ControllerState(path)
    damage(state)
    with pytest.raises(sqlite3.DatabaseError):
        state.policy_state("web")
    now = datetime.now(UTC)
    assert state.start_afresh_if_damaged(now) and not state.start_afresh_if_damaged(now)  # once
    afresh = state.policy_state("web").last_scale_at
    assert afresh is not None and abs(afresh - now) < timedelta(seconds=5)
    state.close()
    assert ControllerState(path).policy_state("web").last_scale_at == afresh


def test_a_file_another_controller_already_replaced_is_not_set_aside_again(tmp_path):
    path = tmp_path / "s.sqlite"
    first, second = ControllerState(path), ControllerState(path)  # two controllers sharing the file
    damage(first)
    damage(second)
    for state in (first, second):
        with pytest.raises(sqlite3.DatabaseError):
            state.acquire_lease("a", datetime.now(UTC), 90)
    assert first.start_afresh_if_damaged(datetime.now(UTC))
    first.acquire_lease("a", datetime.now(UTC), 90)
    assert second.start_afresh_if_damaged(datetime.now(UTC))  # opens the file the first one started
    assert len(set_aside(tmp_path)) == 1  # only the damaged one was moved
    assert second.acquire_lease("b", datetime.now(UTC), 90).holder == "a"


def test_other_database_errors_never_set_the_file_aside(tmp_path):
    """A full disk or a passing I/O error says nothing of the file itself."""
    path = tmp_path / "s.sqlite"
    state = ControllerState(path)
    state._db = Failing(state._db, sqlite3.OperationalError("disk I/O error"))
    with pytest.raises(sqlite3.OperationalError):
        state.policy_state("web")
    assert not state.start_afresh_if_damaged(datetime.now(UTC)) and set_aside(tmp_path) == []
