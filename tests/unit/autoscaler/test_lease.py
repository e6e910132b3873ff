"""The lease in the controller's state file: of two controllers over one file only the holder acts; when it stops
renewing, the other takes over after the expiry (issue 10: a RayService upgrade with a shared state volume ran
two controllers that both acted)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from autoscaler.controller import LEASE_TICKS, ScalingController
from autoscaler.schema import ActuationStatus, ScaleAction
from autoscaler.settings import AutoScalingConfig
from autoscaler.state import ControllerState
from tests.unit.autoscaler.doubles import policy_data, write_power

TTL = 90.0


@pytest.fixture
def clock():
    return [datetime.now(UTC)]


@pytest.fixture
def pair(make, store, clock):
    """Two controllers over one state file (two connections, like two processes) with their own actuators."""
    first = make(clock=lambda: clock[0], holder="a", lease_ttl_s=TTL)
    second = make(clock=lambda: clock[0], holder="b", lease_ttl_s=TTL)
    first[0].put_policy(policy_data(predictive_scaling={"enabled": False},
                                    power_based={"cooldown_period": 1}))
    write_power(store, {"n1": 950, "n2": 950})
    return first, second


def test_regression_of_two_controllers_over_one_state_file_only_one_acts(pair):
    (a, a_actuator), (b, b_actuator) = pair
    assert [e.action for e in a.tick()] == [ScaleAction.SCALE_OUT]
    assert b.tick() == []  # holds: no events, no actuation
    assert a_actuator.calls == [("web", 3)] and b_actuator.calls == []
    assert len(a.state.events()) == 1


def test_the_other_takes_over_after_the_holder_stops_renewing(pair, clock, store):
    (a, a_actuator), (b, b_actuator) = pair
    a.tick()
    clock[0] += timedelta(seconds=TTL - 1)
    write_power(store, {"n1": 950, "n2": 950}, end=clock[0])
    assert b.tick() == []  # not expired yet
    clock[0] += timedelta(seconds=2)
    write_power(store, {"n1": 950, "n2": 950}, end=clock[0])
    [event] = b.tick()  # a stopped renewing: b takes over
    assert event.actuation.status is ActuationStatus.APPLIED and b_actuator.calls == [("web", 3)]
    assert a.tick() == [] and a_actuator.calls == [("web", 3)]  # a came back: b holds the lease now


@pytest.mark.parametrize("ahead", [timedelta(hours=1), None])
def test_a_lease_from_a_clock_far_ahead_is_taken_over_two_terms_after_its_holder_stops(make, store, clock, ahead):
    """Regression: a holder whose clock ran an hour ahead left a lease the other waited an hour and a term for; an
    expiry edited past any clock (None) was never taken over, or failed every tick. Now two terms by b's clock."""
    (a, _), (b, b_actuator) = [make(clock=lambda: clock[0] + (ahead or timedelta()), holder="a", lease_ttl_s=TTL),
                                make(clock=lambda: clock[0], holder="b", lease_ttl_s=TTL)]
    a.put_policy(policy_data(predictive_scaling={"enabled": False}, power_based={"cooldown_period": 1}))
    write_power(store, {"n1": 950, "n2": 950})
    a.tick()
    for _ in range(3):  # a renews within every term: it keeps the lease by b's clock too
        clock[0] += timedelta(seconds=TTL / 2)
        write_power(store, {"n1": 950, "n2": 950}, end=clock[0])
        assert b.tick() == [] and len(a.tick()) == 1
    if ahead is None:
        with sqlite3.connect(a.state.path) as db:
            db.execute("UPDATE lease SET expires_at = 1e300")
    clock[0] += timedelta(seconds=TTL / 2)
    assert b.tick() == []  # a stopped: b shortens the lease to two terms by its own clock
    clock[0] += timedelta(seconds=2 * TTL - 1)
    write_power(store, {"n1": 950, "n2": 950}, end=clock[0])
    assert b.tick() == []
    clock[0] += timedelta(seconds=2)
    write_power(store, {"n1": 950, "n2": 950}, end=clock[0])
    [event] = b.tick()
    assert event.actuation.status is ActuationStatus.APPLIED and b_actuator.calls


def test_a_lease_renewed_on_a_clock_like_this_one_is_never_shortened(make, clock):
    """The reader's `now` is taken at its tick's start, before the slower steps (the state file's checks): a lease
    renewed meanwhile runs a little past one term from it, which is no skew."""
    state = make(clock=lambda: clock[0], holder="a", lease_ttl_s=TTL)[0].state
    state.acquire_lease("a", clock[0] + timedelta(seconds=30), TTL)
    assert state.acquire_lease("b", clock[0], TTL).expires_at == clock[0] + timedelta(seconds=TTL + 30)


def test_the_holder_renews_every_tick(pair, clock, store):
    (a, _), (b, b_actuator) = pair
    for _ in range(5):
        clock[0] += timedelta(seconds=TTL / 2)
        write_power(store, {"n1": 950, "n2": 950}, end=clock[0])
        assert a.tick() and b.tick() == []
    assert b_actuator.calls == []


def test_a_stopped_controller_hands_over_at_once(pair, clock, store):
    (a, _), (b, b_actuator) = pair
    a.tick()
    a.stop()
    clock[0] += timedelta(seconds=2)  # past the (shared) 1 s cooldown, far from the lease's expiry
    write_power(store, {"n1": 950, "n2": 950}, end=clock[0])
    assert [e.action for e in b.tick()] == [ScaleAction.SCALE_OUT] and b_actuator.calls == [("web", 3)]


def test_a_lease_lost_during_the_tick_actuates_nothing(pair, clock):
    (a, a_actuator), (b, _) = pair
    read = a_actuator.replicas

    def read_while_b_takes_over(target):
        ControllerState(b.state.path).acquire_lease("b", clock[0] + timedelta(seconds=TTL + 1), TTL)
        return read(target)

    a_actuator.replicas = read_while_b_takes_over
    [event] = a.tick()
    assert a_actuator.calls == [] and event.actuation.status is ActuationStatus.FAILED
    assert event.actuation.detail == "not actuated: the lease is held by b"
    assert a.state.policy_state("web").last_scale_at is None  # no cooldown either


def test_regression_a_tick_that_lost_the_lease_never_undoes_the_new_holders_cooldown(pair, clock, store):
    """A tick whose write outlived its lease (an API server retrying) completed its change afterwards and wrote its
    policy state over the one the new holder had just written with its own scale-out: the new holder's cooldown
    went back to the older change's, and the target could be scaled again before that change showed in the power."""
    (a, a_actuator), (b, b_actuator) = pair
    decided_at = clock[0]

    def b_takes_over_and_scales(name, replicas):
        clock[0] += timedelta(seconds=TTL + 1)
        write_power(store, {"n1": 950, "n2": 950}, end=clock[0])
        [event] = b.tick()
        assert event.action is ScaleAction.SCALE_OUT and b_actuator.calls == [("web", 3)]

    a_actuator.on_scale = b_takes_over_and_scales
    [changed] = a.tick()
    assert changed.actuation.status is ActuationStatus.APPLIED and a_actuator.calls == [("web", 3)]
    assert b.state.policy_state("web").last_scale_at == clock[0] > decided_at  # b's cooldown stands
    assert a.state.pending_intent("web") is None  # a's change is completed all the same


def test_the_lease_lasts_a_few_tick_intervals(tmp_path, store):
    controller = ScalingController(ControllerState(tmp_path / "s.sqlite"), store, None, None,  # type: ignore[arg-type]
                                   defaults=AutoScalingConfig(evaluation_interval=20))
    assert controller.lease_ttl_s == LEASE_TICKS * 20 == 60
    assert controller.holder != ScalingController(controller.state, store, None, None).holder  # type: ignore[arg-type]


def test_regression_a_tick_longer_than_the_lease_renews_it_and_still_actuates(make, store, clock):
    """Slow target reads (an API server retrying) made the tick outlive its own lease: every intent was refused
    with "the lease is held by <its own id>". The intent renews the lease, as no other controller took it."""
    controller, actuator = make(clock=lambda: clock[0], holder="a", lease_ttl_s=TTL)
    for name in ("one", "two"):
        controller.put_policy(policy_data(name, predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 950, "n2": 950})
    read, reads = actuator.replicas, []

    def slow_read(target):
        if len(reads) < 2:  # the tick's two reads outlive the 90 s lease, not the 120 s stale limit (the reads
            clock[0] += timedelta(seconds=50)  # right before each write are quick)
        reads.append(target)
        return read(target)

    actuator.replicas = slow_read
    events = controller.tick()
    assert [e.actuation.status for e in events] == [ActuationStatus.APPLIED] * 2
    assert actuator.calls == [("one", 3), ("two", 3)]
    lease = controller.state.acquire_lease("b", clock[0], TTL)
    assert lease.holder == "a" and lease.expires_at == clock[0] + timedelta(seconds=TTL)


def test_a_lease_released_during_the_tick_actuates_nothing(pair):
    (a, a_actuator), _ = pair
    a_actuator.on_scale = lambda *_: pytest.fail("no actuation expected")
    read = a_actuator.replicas

    def read_then_stop(target):
        a.stop()
        return read(target)

    a_actuator.replicas = read_then_stop
    [event] = a.tick()
    assert event.actuation.detail == "not actuated: the lease is held by nobody"


def test_the_kept_tables_are_written_only_while_the_lease_names_the_writer(tmp_path, clock):
    state = ControllerState(tmp_path / "s.sqlite")
    state.acquire_lease("b", clock[0], TTL)
    fallen = {("power_lstm/1", "n1"): clock[0]}
    assert not state.save_fallen(fallen, "a") and state.fallen() == {}
    assert state.save_fallen(fallen, "b") and state.fallen() == fallen


@pytest.mark.parametrize("damage", [b"not a database at all" * 100, None])
def test_regression_a_damaged_state_file_is_set_aside_and_the_cooldowns_start_afresh(tmp_path, clock, damage):
    """A state file SQLite could not read failed the controller actor's start: no scaling at all, and the scaling
    routes answered 503 until someone deleted the file by hand."""
    path = tmp_path / "s.sqlite"
    before = ControllerState(path)
    before.acquire_lease("a", clock[0], TTL)
    before.close()
    raw = bytearray(path.read_bytes())
    if damage is None:  # a page in the middle overwritten, the header intact
        raw[4096:8192] = b"\xff" * 4096
    else:
        raw = bytearray(damage)
    path.write_bytes(bytes(raw))
    state = ControllerState(path)
    [aside] = tmp_path.glob("s.sqlite.damaged-*")
    assert aside.read_bytes()[:16] == bytes(raw[:16])
    assert state.acquire_lease("b", clock[0], TTL).holder == "b"  # a new file: a's lease is gone with the old one
    assert state.policy_state("web").last_scale_at is not None  # the lost history may hold a change just made
    assert ControllerState(tmp_path / "fresh.sqlite").policy_state("web").last_scale_at is None


def test_a_state_file_sqlite_may_not_open_is_never_set_aside(tmp_path, monkeypatch):
    """A file SQLite could not open or write (a permission, a full disk, a passing I/O error) was taken for damaged
    and moved aside: every policy made through the API and every cooldown lost."""
    import sqlite3

    path = tmp_path / "s.sqlite"
    ControllerState(path).close()
    monkeypatch.setattr(ControllerState, "_open", lambda self, thorough=False: (_ for _ in ()).throw(
        sqlite3.OperationalError("disk I/O error")))
    with pytest.raises(sqlite3.OperationalError):
        ControllerState(path)
    assert path.exists() and not list(tmp_path.glob("*.damaged-*"))


def test_a_policy_state_is_written_only_with_the_holder_that_writes_it(tmp_path, clock):
    from autoscaler.decision import PolicyState
    from autoscaler.schema import ActuationResult, ScalingEvent

    event = ScalingEvent(at=clock[0], policy="web", target={"kind": "deployment", "name": "web"}, action="hold",
                         from_replicas=2, to_replicas=2, reason="hold", mode="enforce",
                         actuation=ActuationResult(status="none"))
    with pytest.raises(ValueError, match="pass holder"):
        ControllerState(tmp_path / "s.sqlite").record(event, PolicyState(last_scale_at=clock[0]))
