"""The controller's state file that cannot be opened at start is tried again until it can (Ray does not restart an
actor whose constructor raised: scaling stopped until the next redeploy). A real SQLite file; no Ray."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from autoscaler.actor import STATE_RETRY_MAX_S, open_state
from autoscaler.state import ControllerState, StateUnavailable
from tests.factories import make_policy


def test_a_state_folder_that_appears_late_is_opened_once_it_is_there_and_the_policies_seeded(tmp_path):
    blocked = tmp_path / "volume"
    blocked.write_text("not mounted yet")  # a file where the folder should be: mkdir fails
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            blocked.unlink()

    state, seeded = open_state(lambda: ControllerState(blocked / "controller.db"),
                               lambda opened: opened.seed([make_policy(name="from-config")], datetime.now(UTC)),
                               sleep=sleep)
    assert waits == [1.0, 2.0, 4.0] and seeded == ["from-config"]
    assert [policy.name for policy in state.policies()] == ["from-config"]
    state.close()


def test_a_seed_that_fails_closes_the_file_and_tries_again_with_waits_up_to_the_cap(tmp_path):
    opened: list[ControllerState] = []
    failures = iter([True] * 7 + [False])

    def open_file() -> ControllerState:
        opened.append(ControllerState(tmp_path / "controller.db"))
        return opened[-1]

    def seed(state: ControllerState) -> list[str]:
        if next(failures):
            raise StateUnavailable("the state file is locked")
        return []

    waits: list[float] = []
    state, _ = open_state(open_file, seed, sleep=waits.append)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, STATE_RETRY_MAX_S, STATE_RETRY_MAX_S]
    for closed in opened[:-1]:
        with pytest.raises(Exception, match="closed"):
            closed._db.execute("SELECT 1")
    state.close()


def test_an_error_that_will_not_pass_ends_the_start_at_once(tmp_path):
    """A bug (a bad query) is not retried for ever: the constructor fails, and says why."""
    def seed(state: ControllerState) -> list[str]:
        state._db.execute("SELECT no_such_column FROM policies")
        return []

    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        open_state(lambda: ControllerState(tmp_path / "controller.db"), seed, sleep=pytest.fail)
