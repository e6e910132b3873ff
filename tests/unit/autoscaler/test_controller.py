"""The controller's tick and its durable state, on the embedded store with in-memory forecaster/actuator doubles
(tests/unit/autoscaler/doubles.py; the `make` and `store` fixtures are in conftest.py)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from autoscaler.policy_config import policies_from_config
from autoscaler.schema import ActuationStatus, ScaleAction
from autoscaler.settings import AutoscalerConfig
from autoscaler.state import ControllerState, _digest, _digest_until_2026_12
from core.settings import ConfigError
from core.telemetry import TelemetrySample
from tests.factories import make_policy
from tests.unit.autoscaler.doubles import FixedForecaster, policy_data, write_power

# a policy's first tick keeps the count it found for the stabilization window: off where a test is about another rule
NO_WINDOW = {"scale_down": {"stabilization_window": 0}}


def test_measured_overload_scales_out_and_records_the_event(make, store):
    controller, actuator = make()
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 950, "n2": 900})
    [event] = controller.tick()
    assert (event.action, event.from_replicas, event.to_replicas) == (ScaleAction.SCALE_OUT, 2, 3)
    assert event.actuation.status is ActuationStatus.APPLIED and actuator.calls == [("web", 3)]
    assert event.measured_power_watts == pytest.approx(950) and event.signal == "measured"
    assert controller.state.events()[0].id == event.id


def test_a_new_policy_keeps_the_count_it_found_for_the_stabilization_window(make, store):
    """Regression: a policy's first tick had no recommendation in its window, so a target deployed at 10 replicas
    for load was consolidated to 2 on the first low reading (the HPA records the count it finds first)."""
    clock = [datetime.now(UTC)]
    controller, actuator = make(replicas=10, clock=lambda: clock[0])
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 100, "n2": 100}, end=clock[0])
    [first] = controller.tick()
    assert (first.action, first.to_replicas) == (ScaleAction.HOLD, 10), first.reason
    assert "stabilization window" in first.reason and actuator.calls == []
    clock[0] += timedelta(seconds=301)  # the default 5-minute window has passed on low readings
    write_power(store, {"n1": 100, "n2": 100}, end=clock[0])
    [later] = controller.tick()
    assert later.action is ScaleAction.SCALE_IN and actuator.calls == [("web", later.to_replicas)], later.reason


def test_a_first_decision_keeps_the_count_after_a_state_file_was_set_aside_too():
    """A policy without a stored row after a damaged state file was set aside starts with a cooldown stamp only
    (ControllerState.policy_state): its first decision still keeps the count it found."""
    from autoscaler.decision import PolicyState

    now = datetime.now(UTC)
    seeded = PolicyState(last_scale_at=now - timedelta(days=2)).first_seen(10, now)
    assert [(r.at, r.replicas) for r in seeded.recent] == [(now, 10)]


def test_confident_forecast_scales_out_before_measured_power_crosses(make, store):
    forecaster = FixedForecaster(upper_watts=1000)
    controller, actuator = make(forecaster)
    controller.put_policy(policy_data())
    write_power(store, {"n1": 700, "n2": 700})  # 70 % now: in the band
    [event] = controller.tick()
    assert event.signal == "forecast" and event.action is ScaleAction.SCALE_OUT
    assert event.forecast_power_watts is not None and event.forecast_power_watts > 800
    assert event.confidence == pytest.approx(0.9)
    assert forecaster.batches == [2] and forecaster.nodes == ["n1", "n2"]  # both nodes' windows in one call


@pytest.mark.parametrize(("max_gap_s", "missing"), [(None, True), (600, False)])
def test_a_stopped_feature_is_held_as_long_as_the_served_model_was_trained_to(make, store, max_gap_s, missing):
    """GPU utilization stopped 8 minutes ago: the default holds it 5 steps, then it is missing; a model trained
    with a 10-minute max_gap holds it to the window's end (before, every model got the default)."""
    forecaster = FixedForecaster(upper_watts=700, max_gap_s=max_gap_s)
    controller, _ = make(forecaster)
    controller.put_policy(policy_data())
    write_power(store, {"n1": 700, "n2": 700})
    now = datetime.now(UTC)
    store.write([TelemetrySample(timestamp=now - timedelta(minutes=m, seconds=10), node_id=node, source="nvml",
                                 device_id="GPU-1", utilization=80.0) for node in ("n1", "n2") for m in range(8, 15)])
    controller.tick()
    utilization = forecaster.histories[0].numeric["gpu_utilization"]
    assert utilization[0] == 80.0 and (utilization[-1] != utilization[-1]) is missing


def test_a_redeploy_that_resets_the_count_is_answered_at_once_not_after_the_cooldown(make, store):
    controller, actuator = make()
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 950, "n2": 900})
    [first] = controller.tick()
    assert (first.action, first.to_replicas) == (ScaleAction.SCALE_OUT, 3)
    actuator.counts["web"] = 1  # `serve deploy` of a changed config: back to its num_replicas
    [second] = controller.tick()  # seconds later, deep in the cooldown
    assert second.action is ScaleAction.SCALE_OUT and actuator.calls[-1][1] > 1, second.reason
    assert "replicas lowered outside this controller (3 -> 1" in second.reason
    [third] = controller.tick()
    assert third.action is ScaleAction.HOLD and "cooldown" in third.reason  # its own change: held as before
    actuator.counts["web"] = 1  # a writer that keeps lowering it: answered once per hold, not every tick
    [fourth] = controller.tick()
    assert fourth.action is ScaleAction.HOLD and "answered once within the hold" in fourth.reason, fourth.reason


def test_dry_run_records_without_touching_the_target_and_keeps_the_cooldown(make, store):
    controller, actuator = make()
    controller.put_policy(policy_data(mode="dry_run", predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 950, "n2": 950})
    first, second = controller.tick()[0], controller.tick()[0]
    assert first.actuation.status is ActuationStatus.DRY_RUN and "would scale" in first.actuation.detail
    assert actuator.calls == []
    assert second.action is ScaleAction.HOLD and "cooldown" in second.reason


def test_failed_actuation_is_an_event_and_does_not_start_the_cooldown(make, store):
    controller, actuator = make()
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 950, "n2": 950})
    actuator.fail = "scale"
    failed = controller.tick()[0]
    assert failed.actuation.status is ActuationStatus.FAILED and "403" in failed.actuation.detail
    actuator.fail = None
    retried = controller.tick()[0]
    assert retried.actuation.status is ActuationStatus.APPLIED  # no cooldown after a change that never happened


def test_unreadable_target_holds_with_the_reason(make, store):
    controller, actuator = make()
    controller.put_policy(policy_data())
    actuator.fail = "read"
    [event] = controller.tick()
    assert event.action is ScaleAction.HOLD and event.from_replicas is None
    assert "cannot read the target's replicas" in event.reason and "404" in event.reason


def test_missing_or_stale_telemetry_never_scales(make, store):
    controller, _ = make(FixedForecaster(upper_watts=100))
    controller.put_policy(policy_data())
    write_power(store, {"n1": 200})  # n2 has nothing
    [event] = controller.tick()
    assert event.action is ScaleAction.HOLD and "n2" in event.reason
    write_power(store, {"n2": 200}, end=datetime.now(UTC) - timedelta(hours=1))
    [event] = controller.tick()
    assert event.action is ScaleAction.HOLD and "stale" in event.reason


def test_uncalibrated_model_falls_back_to_measured_power_and_says_so(make, store):
    controller, _ = make(FixedForecaster(upper_watts=1000, coverage=0.0))
    controller.put_policy(policy_data())
    write_power(store, {"n1": 700, "n2": 700})
    [event] = controller.tick()
    assert event.signal == "measured" and event.action is ScaleAction.HOLD
    assert "calibration has not been measured" in event.reason


def test_nodes_come_from_the_workloads_map_when_the_policy_names_none(make, store):
    controller, _ = make(workloads={"llm": ("n1",)})
    controller.put_policy(policy_data(nodes=[], workload_id="llm", predictive_scaling={"enabled": False}))
    controller.put_policy(policy_data(name="orphan", nodes=[], predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 950})
    by_policy = {e.policy: e for e in controller.tick()}
    assert by_policy["web"].action is ScaleAction.SCALE_OUT
    assert by_policy["orphan"].action is ScaleAction.HOLD and "workloads.orphan" in by_policy["orphan"].reason


def test_nodes_are_found_from_the_target_replicas_when_nothing_names_them(make, store):
    names = {"ray-node-a": "n1"}  # ray-node-b has no collector name: its id is used as is
    controller, _ = make(node_names=lambda ids: {i: names[i] for i in ids if i in names})
    controller.put_policy(policy_data(nodes=[], predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 950, "ray-node-b": 900})
    [event] = controller.tick()
    assert event.action is ScaleAction.SCALE_OUT and event.measured_power_watts == pytest.approx(950)
    assert "nodes found from the target's replicas: n1, ray-node-b" in event.reason


def test_a_target_whose_read_hangs_holds_alone_and_is_not_read_again_until_it_returns(make, store):
    """Review: the tick waited for its slowest replica read (an exec plugin's 20 s, Ray's GCS 60 s), so one stalled
    target held every other policy's scale-out as long. Past the tick's read deadline that policy holds, saying so,
    the others act; the next tick starts no second read of that target while the first still runs."""
    import threading
    import time

    from autoscaler.replica_reads import ReplicaReads

    controller, actuator = make()
    controller.replica_reads = ReplicaReads(deadline_s=1.0)
    for name in ("slow", "web"):
        controller.put_policy(policy_data(name=name, predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 950, "n2": 900})
    release, reads = threading.Event(), []
    replicas = actuator.replicas

    def hanging(target):
        reads.append(target.name)
        if target.name == "slow":
            release.wait(10)
        return replicas(target)

    actuator.replicas = hanging
    started = time.monotonic()
    slow, web = controller.tick()
    assert time.monotonic() - started < 5
    assert (web.action, web.to_replicas) == (ScaleAction.SCALE_OUT, 3) and actuator.calls == [("web", 3)]
    assert slow.action is ScaleAction.HOLD and slow.from_replicas is None
    assert "cannot read the target's replicas: no answer within the tick's 1 s" in slow.reason
    slow = controller.tick()[0]
    assert "its read from an earlier tick has not returned" in slow.reason and reads.count("slow") == 1
    release.set()
    deadline = time.monotonic() + 5
    while controller.replica_reads._calls["slow"].busy and time.monotonic() < deadline:
        time.sleep(0.01)
    slow = controller.tick()[0]
    assert (slow.action, slow.from_replicas) == (ScaleAction.SCALE_OUT, 2)
    assert reads.count("slow") == 3  # the tick's read, then the one right before the write


def test_nodes_that_cannot_be_found_say_why_and_the_count_still_goes_back_inside_the_bounds(make, store):
    """A failing node lookup failed the whole turn ("reading the target's replicas failed"), so a target below
    min_replicas stayed there; a failed replica lookup's cause was overwritten by "no nodes known"."""
    def broken(ids):
        raise RuntimeError("ray.nodes() timed out")

    controller, actuator = make(replicas=1, node_names=broken)
    controller.put_policy(policy_data(nodes=[], min_replicas=2, predictive_scaling={"enabled": False}))
    [event] = controller.tick()
    assert (event.action, event.to_replicas) == (ScaleAction.SCALE_OUT, 2), event.reason
    assert "finding the target's nodes failed: RuntimeError: ray.nodes() timed out" in event.reason
    assert actuator.calls == [("web", 2)]


def test_state_survives_a_new_controller_on_the_same_file(make, store, tmp_path):
    now = [datetime.now(UTC)]
    controller, _ = make(clock=lambda: now[0], holder="controller-actor")
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 950, "n2": 950})
    controller.tick()
    controller.state.close()
    restarted, actuator = make(replicas=3, clock=lambda: now[0], holder="controller-actor")  # the actor restarted
    assert [p.name for p in restarted.state.policies()] == ["web"]
    assert len(restarted.state.events()) == 1
    now[0] += timedelta(seconds=60)
    assert "cooldown" in restarted.tick()[0].reason  # the cooldown clock came back too
    now[0] += timedelta(seconds=300)
    assert restarted.tick()[0].action is ScaleAction.SCALE_OUT


def test_events_filter_by_policy_since_and_limit_newest_first(tmp_path):
    from autoscaler.schema import ActuationResult, ScalingEvent

    state = ControllerState(tmp_path / "s.sqlite")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(6):
        state.record(ScalingEvent(at=t0 + timedelta(minutes=i), policy="a" if i % 2 else "b",
                                  target={"kind": "deployment", "name": "x"}, action="hold", from_replicas=1,
                                  to_replicas=1, reason="hold", mode="dry_run",
                                  actuation=ActuationResult(status="none")))
    assert [e.at.minute for e in state.events()] == [5, 4, 3, 2, 1, 0]
    assert [e.at.minute for e in state.events(policy="a")] == [5, 3, 1]
    assert [e.at.minute for e in state.events(since=t0 + timedelta(minutes=3), limit=2)] == [5, 4]


def test_events_page_on_from_the_last_event_of_a_page_in_the_listings_order(tmp_path):
    """A cursor on (time, id): events of one tick share a time, and an event stored later may carry an earlier time
    (a decision recorded after a slow actuation); paging by id alone would skip or repeat them."""
    from autoscaler.schema import ActuationResult, ScalingEvent

    state = ControllerState(tmp_path / "s.sqlite")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for minute, policy in [(0, "a"), (1, "a"), (1, "b"), (3, "a"), (2, "b"), (3, "b"), (4, "a")]:
        state.record(ScalingEvent(at=t0 + timedelta(minutes=minute), policy=policy,
                                  target={"kind": "deployment", "name": "x"}, action="hold", from_replicas=1,
                                  to_replicas=1, reason="hold", mode="dry_run",
                                  actuation=ActuationResult(status="none")))
    listed = [(e.at.minute, e.id) for e in state.events()]
    paged, cursor, pages = [], None, 0
    while True:
        page, cursor = state.events_page(None, None, 2, cursor)
        paged, pages = paged + [(e.at.minute, e.id) for e in page], pages + 1
        if cursor is None:
            break
    assert paged == listed and len(listed) == 7 and pages == 4  # the last page short: no cursor, no empty page
    assert [e.at.minute for e in state.events_page("b", None, 5, listed[1][1])[0]] == [2, 1]
    assert state.events_page(None, None, 5, 10_000) == ([], None)  # its event gone (pruned, with all older ones)


def test_put_policy_merges_config_defaults_and_refuses_bad_combinations(make):
    controller, _ = make()
    policy, created = controller.put_policy({"name": "p", "target": {"kind": "ray_serve", "app": "a",
                                                                     "deployment": "d"}})
    assert created and policy.power_based.scale_out_threshold == 80 and policy.mode == "dry_run"
    assert controller.put_policy({**policy.model_dump(), "max_replicas": 3})[1] is False  # replaced by name
    with pytest.raises(ValidationError, match="scale_in_threshold"):
        controller.put_policy(policy_data(power_based={"scale_in_threshold": 90}))
    with pytest.raises(ValidationError, match="min_replicas"):
        controller.put_policy(policy_data(min_replicas=5, max_replicas=2))
    with pytest.raises(ValidationError, match="max_power_budget"):
        controller.put_policy(policy_data(power_based={"max_power_budget": 0}))


def test_config_policies_are_seeded_once_and_an_api_change_survives_a_restart(tmp_path):
    config = AutoscalerConfig.model_validate({"auto_scaling": {"policies": [policy_data()]}})
    state = ControllerState(tmp_path / "s.sqlite")
    now = datetime.now(UTC)
    assert state.seed(policies_from_config(config), now) == ["web"]
    state.put_policy(state.policy("web").model_copy(update={"max_replicas": 4}), now)
    assert state.seed(policies_from_config(config), now) == []  # unchanged config: the API's edit stays
    assert state.policy("web").max_replicas == 4
    edited = AutoscalerConfig.model_validate({"auto_scaling": {"policies": [policy_data(max_replicas=7)]}})
    assert state.seed(policies_from_config(edited), now) == ["web"]
    assert state.policy("web").max_replicas == 7


def test_a_field_written_at_its_default_or_a_digest_of_an_earlier_version_is_no_edit(tmp_path):
    """A version that adds a policy field (with its default) must not make an unchanged config file look edited:
    that re-seeded every policy at the restart after an upgrade and undid the API's changes."""
    config = AutoscalerConfig.model_validate({"auto_scaling": {"policies": [policy_data()]}})
    spelled_out = AutoscalerConfig.model_validate({"auto_scaling": {"policies": [policy_data(
        behavior={}, actuation_delay=0, cluster_power_budget=None)]}})
    state = ControllerState(tmp_path / "s.sqlite")
    now = datetime.now(UTC)
    assert state.seed(policies_from_config(config), now) == ["web"]
    state.put_policy(state.policy("web").model_copy(update={"max_replicas": 4, "mode": "enforce"}), now)
    assert state.seed(policies_from_config(spelled_out), now) == []
    seeded = policies_from_config(config)[0]
    # the digest as a version of 2026-12-04 stored it: over every field it had (not the ones added since)
    then = seeded.model_dump(mode="json")
    del then["power_based"]["idle_power_watts"], then["power_based"]["measure_idle_power"]
    del then["predictive_scaling"]["online_bound"]
    assert _digest_until_2026_12(seeded) == hashlib.sha256(json.dumps(then, separators=(",", ":")).encode()).hexdigest()
    with state._write() as db:
        db.execute("UPDATE seeded SET digest = ? WHERE name = 'web'", (_digest_until_2026_12(seeded),))
    assert state.seed(policies_from_config(config), now) == []
    assert (state.policy("web").max_replicas, state.policy("web").mode) == (4, "enforce")
    assert state._read("SELECT digest FROM seeded WHERE name = 'web'") == [(_digest(seeded),)]


def test_a_stored_event_that_no_longer_validates_is_left_out_of_the_list(make, store):
    controller, _ = make()
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 700, "n2": 700})
    first, second = controller.tick()[0], controller.tick()[0]
    old = first.model_dump(mode="json")
    old["target"] = {"kind": "deployment", "name": "Web_App"}  # accepted by an earlier version, refused now
    with controller.state._write() as db:
        db.execute("UPDATE events SET body = ? WHERE id = ?", (json.dumps(old), first.id))
    assert [e.id for e in controller.state.events()] == [second.id]
    with controller.state._write() as db:  # the newer one too: a page holding only it still points past it
        db.execute("UPDATE events SET body = ? WHERE id = ?", (json.dumps({**old, "id": second.id}), second.id))
        db.execute("UPDATE events SET body = ? WHERE id = ?", (first.model_dump_json(), first.id))
    assert controller.state.events_page(None, None, 1, None) == ([], second.id)
    assert controller.state.events_page(None, None, 1, second.id) == ([first], None)


def test_a_policy_removed_from_the_config_is_deleted_unless_the_api_changed_it(tmp_path):
    both = AutoscalerConfig.model_validate({"auto_scaling": {"policies": [policy_data(), policy_data(name="batch")]}})
    state = ControllerState(tmp_path / "s.sqlite")
    now = datetime.now(UTC)
    assert state.seed(policies_from_config(both), now) == ["web", "batch"]
    state.put_policy(state.policy("batch").model_copy(update={"max_replicas": 4}), now)  # now the API's
    state.put_policy(make_policy(name="api-only"), now)
    assert state.seed([], now) == []  # both left the file
    assert sorted(p.name for p in state.policies()) == ["api-only", "batch"]
    assert state.policy("batch").max_replicas == 4
    assert state.seed(policies_from_config(both), now) == ["web", "batch"]  # back in the file: applied again


def test_invalid_config_policies_name_the_entry_and_field():
    config = AutoscalerConfig.model_validate({"auto_scaling": {"policies": [
        policy_data(), policy_data(), policy_data(name="x", power_based={"max_power_budget": -5})]}})
    with pytest.raises(ConfigError) as error:
        policies_from_config(config)
    text = str(error.value)
    assert "auto_scaling.policies[2]: power_based.max_power_budget" in text and "'web' is used twice" in text


def test_a_look_ahead_beyond_the_model_horizon_is_cut_and_said(make, store):
    controller, _ = make(FixedForecaster(upper_watts=700))
    controller.put_policy(policy_data(predictive_scaling={"lookahead_minutes": 60}))
    write_power(store, {"n1": 700, "n2": 700})
    [event] = controller.tick()
    assert event.signal == "forecast" and "cut to the served model's horizon of 10 min" in event.reason


def test_a_policy_deleted_during_its_tick_leaves_no_state_behind(tmp_path):
    from autoscaler.decision import PolicyState
    from autoscaler.schema import ActuationResult, ScalingEvent

    state = ControllerState(tmp_path / "s.sqlite")
    now = datetime.now(UTC)
    event = ScalingEvent(at=now, policy="gone", target={"kind": "deployment", "name": "x"}, action="scale_out",
                         from_replicas=1, to_replicas=2, reason="scale_out", mode="enforce",
                         actuation=ActuationResult(status="applied"))
    state.acquire_lease("me", now, 60)
    state.record(event, PolicyState(last_scale_at=now), holder="me")
    assert state.policy_state("gone") == PolicyState()  # a re-created "gone" starts without a cooldown
    assert len(state.events(policy="gone")) == 1  # the event itself is kept


class SlowForecaster(FixedForecaster):
    """A forecast that takes `seconds` of the controller's clock (a loaded predictor, a slow store before it)."""

    def __init__(self, clock: list[datetime], seconds: float):
        super().__init__(upper_watts=1000)
        self.clock, self.seconds = clock, seconds

    def forecast(self, nodes, windows):
        self.clock[0] += timedelta(seconds=self.seconds)
        return super().forecast(nodes, windows)


@pytest.mark.parametrize(("seconds", "stale"), [(5, False), (200, True)])
def test_telemetry_ages_while_the_tick_runs(make, store, seconds, stale):
    """Telemetry fresh when the tick read it can be stale by the time a slow tick decides (stale_after_s 120 s):
    before, the decision judged it by its age at the start of the tick and scaled on it."""
    clock = [datetime.now(UTC)]
    controller, actuator = make(SlowForecaster(clock, seconds), clock=lambda: clock[0])
    controller.put_policy(policy_data())
    write_power(store, {"n1": 950, "n2": 950})
    [event] = controller.tick()
    assert event.at == clock[0]  # decided when it was decided, not when the tick began
    if stale:
        assert event.action is ScaleAction.HOLD and "telemetry stale" in event.reason and actuator.calls == []
    else:
        assert event.action is ScaleAction.SCALE_OUT and actuator.calls == [("web", 3)]


@pytest.mark.parametrize(("age_s", "leads"), [(5, 6), (150, 9)])
def test_the_forecast_reaches_the_end_of_the_risk_window_from_now_not_from_the_newest_reading(make, store, age_s,
                                                                                              leads):
    """The leads start at the end of the newest reading's bin, which old telemetry puts behind the decision: a
    forecast of exactly the risk window's steps left its last minutes unforecast, a peak there unseen for a change
    that holds until then. Risk window 5 min (the cooldown) and a tick (30 s: the next change may be decided up to a
    tick after the hold ends), 1-minute steps, the tick 10 s into a minute: a reading 5 s old ends its bin after now
    (ceil(330 / 60) = 6 leads); one 150 s old, 130 s before now (6 + ceil(130 / 60) = 9 leads)."""
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    now = minute + timedelta(seconds=10)
    forecaster = FixedForecaster(upper_watts=700)
    controller, _ = make(forecaster, clock=lambda: now)
    controller.put_policy(policy_data(stale_after_s="1h"))
    write_power(store, {"n1": 700, "n2": 700}, end=now - timedelta(seconds=age_s))
    [event] = controller.tick()
    assert {history.horizon_s for history in forecaster.histories} == {leads * 60}
    assert "over the next 6min" in event.reason, event.reason  # the whole steps ahead of now


@pytest.mark.parametrize(("cooldown", "leads"), [("1min", 16), ("10min", 19)])
def test_the_forecast_reaches_the_next_change_that_waits_for_a_reading_after_this_one_took_effect(make, store,
                                                                                                 cooldown, leads):
    """A 5-minute actuation delay, the newest reading's bin ending 130 s before the decision: the next change may be
    decided only on a reading taken after this one took effect, 300 + 130 s after it (later than the hold, 5 min
    with a 1-minute cooldown), and lands 5 min later; with the tick, 760 s from now: 13 leads, and 3 for the bins
    behind the decision (14 before, from the risk window alone). A 10-minute cooldown holds longer than that: its
    risk window (15 min) and the tick, 16 leads + 3."""
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    now = minute + timedelta(seconds=10)
    forecaster = FixedForecaster(upper_watts=700, horizon_steps=30)
    controller, _ = make(forecaster, clock=lambda: now)
    controller.put_policy(policy_data(stale_after_s="1h", actuation_delay=300,
                                      predictive_scaling={"lookahead_minutes": 1},
                                      power_based={"cooldown_period": cooldown}))
    write_power(store, {"n1": 700, "n2": 700}, end=now - timedelta(seconds=150))
    controller.tick()
    assert {history.horizon_s for history in forecaster.histories} == {leads * 60}


@pytest.mark.parametrize(("cooldown", "cut"), [("10min", False), ("11min", True)])
def test_only_a_risk_window_past_the_models_horizon_is_said_to_be_cut(make, store, cooldown, cut):
    """The tick's reach past the risk window goes as far as the served model's 10 leads allow, unsaid; a risk window
    itself longer than them is cut, and the decision says so."""
    forecaster = FixedForecaster(upper_watts=700)
    controller, _ = make(forecaster)
    controller.put_policy(policy_data(stale_after_s="1h", power_based={"cooldown_period": cooldown}))
    write_power(store, {"n1": 700, "n2": 700})
    [event] = controller.tick()
    assert {history.horizon_s for history in forecaster.histories} == {600}
    assert ("risk window cut to the served model's horizon of 10 min" in event.reason) == cut, event.reason


def test_the_decision_stays_within_the_targets_own_bounds_as_read(make, store):
    """A worker group at its maxReplicas was asked every tick for one more, refused each time (a failed event a
    tick); now the policy decides within the bounds the tick read, and says so."""
    now = [datetime.now(UTC)]
    controller, actuator = make(replicas=2, clock=lambda: now[0])
    actuator.bounds = (1, 3)
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}, max_replicas=10))
    write_power(store, {"n1": 1500, "n2": 1500})
    [event] = controller.tick()
    assert (event.action, event.to_replicas, event.actuation.status) == (ScaleAction.SCALE_OUT, 3,
                                                                         ActuationStatus.APPLIED)
    assert "clamped to max_replicas 3" in event.reason, event.reason
    assert "the target's own bounds [1, 3] narrow the policy's [1, 10] to [1, 3]" in event.reason
    assert actuator.calls == [("web", 3)] and event.actuation.replicas is None
    for _ in range(2):  # at the bound, still over budget: a hold, not a refused write, once the cooldown is over
        now[0] += timedelta(minutes=10)
        write_power(store, {"n1": 1500, "n2": 1500}, end=now[0])
        [later] = controller.tick()
        assert later.action is ScaleAction.HOLD and later.actuation.status is ActuationStatus.NONE, later.reason
        assert "the target's own bounds [1, 3]" in later.reason and actuator.calls == [("web", 3)]


def test_a_scale_out_past_bounds_set_after_the_read_goes_to_them_and_records_where_it_stopped(make, store):
    """Refused outright, a worker group stayed at 2 while its maxReplicas allowed 3 and the nodes were over budget;
    and a count recorded as the decision's, not the one set, read as "lowered outside this controller" next tick."""
    controller, actuator = make(replicas=2)
    actuator.bounds, actuator.hides_bounds = (1, 3), True
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 1500, "n2": 1500})
    [event] = controller.tick()
    assert (event.action, event.to_replicas) == (ScaleAction.SCALE_OUT, 4)  # what the power asked for
    assert event.actuation.status is ActuationStatus.APPLIED and event.actuation.replicas == 3
    assert "(the target's maxReplicas 3; the decision asked for 4)" in event.actuation.detail
    assert actuator.calls == [("web", 3)]
    [second] = controller.tick()  # seconds later, at 3: the cooldown holds; no outside change
    assert second.action is ScaleAction.HOLD and "lowered outside" not in second.reason, second.reason
    assert "cooldown" in second.reason and actuator.calls == [("web", 3)]


def test_the_count_an_admission_webhook_stored_is_the_one_the_controller_keeps(make, store):
    """The target stored 3 where the decision asked for 4 (a mutating admission webhook): the event and the policy's
    state carry 3, so the next tick sees no outside change and decides from the count the target holds."""
    controller, actuator = make(replicas=2)
    actuator.admit = lambda replicas: min(replicas, 3)
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}))
    write_power(store, {"n1": 1500, "n2": 1500})
    [event] = controller.tick()
    assert (event.action, event.to_replicas) == (ScaleAction.SCALE_OUT, 4)
    assert event.actuation.status is ActuationStatus.APPLIED and event.actuation.replicas == 3
    assert actuator.counts["web"] == 3
    [second] = controller.tick()
    assert second.action is ScaleAction.HOLD and "outside" not in second.reason, second.reason


@pytest.mark.parametrize(("count", "bounds", "limits", "watts", "action"), [
    (1, (5, 10), {"max_replicas": 3}, 900, ScaleAction.SCALE_OUT),  # minReplicas raised past the decision's 2
    (10, (1, 2), {"min_replicas": 3, "max_replicas": 10}, 100, ScaleAction.SCALE_IN),  # maxReplicas under the min
], ids=["scale-out", "scale-in"])
def test_a_bound_set_after_the_read_is_never_taken_past_the_decision_or_the_policy(make, store, count, bounds,
                                                                                   limits, watts, action):
    """Regression: a scale-out 1 -> 2 refused by a minReplicas raised to 5 since the read wrote 5, past the policy's
    maximum of 3; and a scale-in refused by a maxReplicas lowered below the policy's minimum wrote that bound."""
    controller, actuator = make(replicas=count)
    actuator.bounds, actuator.hides_bounds = bounds, True
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}, **limits, behavior=NO_WINDOW))
    write_power(store, {"n1": watts, "n2": watts})
    [event] = controller.tick()
    assert event.action is action and event.actuation.status is ActuationStatus.FAILED, event
    assert actuator.calls == []


@pytest.mark.parametrize(("count", "bounds"), [(3, (1, 3)), (5, (1, 3))])
def test_a_target_at_or_beyond_its_own_maximum_is_not_written(make, store, count, bounds):
    """At the bound nothing is left to do; beyond it (the bound lowered since), writing the bound would be a
    scale-in on a scale-out decision, past every scale-in rule."""
    controller, actuator = make(replicas=count)
    actuator.bounds, actuator.hides_bounds = bounds, True  # lowered after the tick read them
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}, max_replicas=10))
    write_power(store, {"n1": 1500, "n2": 1500})
    [event] = controller.tick()
    assert event.action is ScaleAction.SCALE_OUT and event.actuation.status is ActuationStatus.FAILED
    assert "is outside [1, 3]" in event.actuation.detail and actuator.calls == []


@pytest.mark.parametrize("power", [1500, 100])
def test_a_target_above_its_own_maximum_as_read_is_never_scaled_in_for_it(make, store, power):
    """Regression: the bounds read with the count narrowed the policy's maximum below the count itself, so a group
    at 5 whose maxReplicas was lowered to 3 was scaled in to 3 even on a scale-out decision (and past the scale-in
    rules: it was "back inside the bounds"). Measured low power still scales it in by the policy's own rules."""
    controller, actuator = make(replicas=5)
    actuator.bounds = (1, 3)
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}, max_replicas=10, behavior=NO_WINDOW))
    write_power(store, {"n1": power, "n2": power})
    [event] = controller.tick()
    if power == 1500:
        assert event.action is ScaleAction.HOLD and actuator.calls == [], event.reason
        assert "the target's own bounds [1, 3] narrow the policy's [1, 10] to [1, 5], not past its count 5" in (
            event.reason)
    else:  # the consolidation the policy's own rule asks for
        assert (event.action, event.to_replicas, actuator.calls) == (ScaleAction.SCALE_IN, 1, [("web", 1)])
        assert "back inside" not in event.reason and "own bounds" not in event.reason, event.reason


@pytest.mark.parametrize(("count", "bounds", "watts"), [(10, (0, 6), 490), (1, (4, 10), 1200)],
                         ids=["above-a-lowered-maximum", "below-a-raised-minimum"])
def test_a_change_that_leaves_a_target_beyond_its_own_bounds_is_a_hold_not_a_failure_every_tick(make, store, count,
                                                                                                 bounds, watts):
    """A group at 10 whose maxReplicas was lowered to 6 was asked to scale in to 7 (narrowed to the policy's [1, 10],
    never past its count): the group refused it, the refusal restarted no cooldown, and the same change failed at
    every tick (a failed event and decision each). Mirrored below a raised minReplicas (review)."""
    controller, actuator = make(replicas=count)
    actuator.bounds = bounds
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}, min_replicas=1, max_replicas=10,
                                      behavior=NO_WINDOW))
    for _ in range(2):
        write_power(store, {"n1": watts, "n2": watts})
        [event] = controller.tick()
        assert event.action is ScaleAction.HOLD and event.actuation.status is not ActuationStatus.FAILED, event
        assert "beyond its own" in event.reason and "the target refuses it" in event.reason, event.reason
    assert actuator.calls == []


def test_regression_a_clock_stepped_back_holds_the_cooldown_from_now_not_for_as_long_as_it_is_behind(make, store):
    """After the clock stepped back an hour, the last change was stamped an hour ahead: the cooldown (and a scale-out
    over the budget) waited an hour and a minute instead of a minute."""
    clock = [datetime.now(UTC)]
    controller, actuator = make(clock=lambda: clock[0])
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}, power_based={"cooldown_period": 60}))
    write_power(store, {"n1": 950, "n2": 950}, end=clock[0])
    [first] = controller.tick()
    assert first.action is ScaleAction.SCALE_OUT and actuator.calls == [("web", 3)]
    clock[0] -= timedelta(hours=1)  # NTP steps the clock back
    write_power(store, {"n1": 990, "n2": 990}, end=clock[0])
    [held] = controller.tick()
    assert held.action is ScaleAction.HOLD and "60 s left" in held.reason
    clock[0] += timedelta(seconds=61)
    write_power(store, {"n1": 990, "n2": 990}, end=clock[0])
    [again] = controller.tick()
    assert again.action is ScaleAction.SCALE_OUT and actuator.calls == [("web", 3), ("web", 4)]


def test_a_node_several_policies_list_is_read_and_forecast_once_per_tick(make, store, monkeypatch):
    """Before, each policy read and sent its own copy of every node's window: 200 policies over one 1,000-node
    fleet made 200,000 store reads and forecasts a tick. Each policy still sees its own nodes' forecasts, and a
    policy whose window fails adds nothing to the batch."""
    import autoscaler.controller as controller_module

    reads: list[str] = []
    read = controller_module.stored_history
    monkeypatch.setattr(controller_module, "stored_history",
                        lambda store, node, **kwargs: reads.append(node) or read(store, node, **kwargs))
    policies = {"web": ["n1", "n2"], "api": ["n2", "n1"], "solo": ["n3"], "late": ["n3", "n4"]}
    write_power(store, {"n1": 650, "n2": 720, "n3": 810})
    write_power(store, {"n4": 700}, end=datetime.now(UTC) - timedelta(minutes=12))  # its window is stale
    forecaster = FixedForecaster()  # each node's upper bound is its own last power
    controller, _ = make(forecaster)
    for name, nodes in policies.items():
        controller.put_policy(policy_data(name, nodes=nodes))
    events = {event.policy: event for event in controller.tick()}
    assert forecaster.batches == [3] and sorted(forecaster.nodes) == ["n1", "n2", "n3"]
    assert sorted(reads) == ["n1", "n2", "n3", "n3", "n4"]  # n3 again at "late"'s longer reach (n4 lags)
    assert events["late"].action is ScaleAction.HOLD and "stale" in events["late"].reason

    # each policy's forecast power is the most of its own nodes' bounds (each node's last power here)
    assert {name: events[name].forecast_power_watts for name in ("web", "api", "solo")} == {
        "web": 720.0, "api": 720.0, "solo": 810.0}


def test_a_replica_read_outage_longer_than_the_stabilization_window_does_not_let_one_low_reading_consolidate(
        make, store):
    """Regression: holds on a target whose count could not be read remembered nothing, so after an outage longer
    than the scale-down stabilization window the first low reading consolidated at once (a hold on stale telemetry
    already kept its count)."""
    clock = [datetime.now(UTC)]
    controller, actuator = make(clock=lambda: clock[0])
    controller.put_policy(policy_data(predictive_scaling={"enabled": False}, power_based={"cooldown_period": 60},
                                      behavior={"scale_down": {"stabilization_window": 300}}))
    write_power(store, {"n1": 950, "n2": 950}, end=clock[0])
    [first] = controller.tick()
    assert first.action is ScaleAction.SCALE_OUT and actuator.calls == [("web", 3)]
    actuator.fail = "read"
    for _ in range(3):  # the target cannot be read for 15 minutes
        clock[0] += timedelta(minutes=5)
        write_power(store, {"n1": 100, "n2": 100, "n3": 100}, end=clock[0])
        [held] = controller.tick()
        assert held.action is ScaleAction.HOLD and held.from_replicas is None
    actuator.fail = None
    clock[0] += timedelta(seconds=30)
    write_power(store, {"n1": 100, "n2": 100, "n3": 100}, end=clock[0])
    [after] = controller.tick()
    assert after.action is ScaleAction.HOLD and actuator.calls == [("web", 3)], after.reason
    clock[0] += timedelta(minutes=5, seconds=1)  # the window after the outage has passed: now it consolidates
    write_power(store, {"n1": 100, "n2": 100, "n3": 100}, end=clock[0])
    [later] = controller.tick()
    assert later.action is ScaleAction.SCALE_IN, later.reason
