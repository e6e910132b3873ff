"""Step limits and the scale-down stabilization window (autoscaler.behavior) inside the pure decision, and their
reasons. Defaults: scale-up max(4 replicas, 100 %) per change; scale-down 100 % after a 300 s window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.behavior import MAX_STABILIZATION_S, Recommendation, ScalingBehavior, StepLimit, remember, stabilized
from autoscaler.decision import PolicyState, decide
from autoscaler.schema import PowerObservation, ScaleAction
from tests.factories import make_policy

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def observe(watts: float, replicas: int) -> PowerObservation:
    return PowerObservation(measured_per_node_watts=[watts] * replicas, replicas=replicas, age_s=1.0)


def reactive(**overrides):
    return make_policy(predictive_scaling={"enabled": False}, **overrides)


def test_regression_one_bmc_sentinel_reading_does_not_take_a_target_to_max():
    """Issue 10: one 65,535 W reading took a target from 1 to max_replicas in one tick."""
    decision = decide(reactive(max_replicas=50), observe(65_535, 1), None, PolicyState(), NOW)
    assert (decision.action, decision.to_replicas, decision.recommended_replicas) == (ScaleAction.SCALE_OUT, 5, 50)
    assert "step limit: scale-up of at most max(4 replicas, 100%) per change, cut to 5 (would go to 50)" \
        in decision.reason


@pytest.mark.parametrize(("up", "replicas", "to"), [
    pytest.param({}, 1, 5, id="default-4-replicas-from-1"),
    pytest.param({}, 8, 16, id="default-100pct-from-8"),
    pytest.param({"step_replicas": 1, "step_percent": 0}, 3, 4, id="one-at-a-time"),
    pytest.param({"step_replicas": 2, "step_percent": 50}, 10, 15, id="50pct-of-10"),
    pytest.param({"step_replicas": 2, "step_percent": 10}, 5, 7, id="replicas-beat-a-small-percent"),
])
def test_scale_up_step(up, replicas, to):
    policy = reactive(max_replicas=100, behavior={"scale_up": up})
    decision = decide(policy, observe(5000, replicas), None, PolicyState(), NOW)
    assert decision.to_replicas == to and "step limit: scale-up" in decision.reason


@pytest.mark.parametrize(("down", "replicas", "to", "limited"), [
    pytest.param({}, 8, 1, False, id="default-100pct"),
    pytest.param({"step_replicas": 1, "step_percent": 0}, 8, 7, True, id="one-at-a-time"),
    pytest.param({"step_replicas": 1, "step_percent": 50}, 8, 4, True, id="half"),
    pytest.param({"step_replicas": 1, "step_percent": 25}, 5, 3, True, id="25pct-of-5-rounds-up-to-2"),
])
def test_scale_down_step(down, replicas, to, limited):
    policy = reactive(behavior={"scale_down": down})
    decision = decide(policy, observe(10, replicas), None, PolicyState(), NOW)
    assert decision.action is ScaleAction.SCALE_IN and decision.to_replicas == to, decision.reason
    assert ("step limit: scale-down" in decision.reason) is limited


def test_within_the_step_nothing_is_said():
    decision = decide(reactive(), observe(950, 2), None, PolicyState(), NOW)
    assert decision.to_replicas == 3 and "step limit" not in decision.reason and "stabilization" not in decision.reason


def test_scale_in_is_held_at_the_highest_recommendation_of_the_window():
    policy = reactive()
    state = PolicyState(recent=(Recommendation(at=NOW - timedelta(seconds=200), replicas=6),
                                Recommendation(at=NOW - timedelta(seconds=100), replicas=3)))
    decision = decide(policy, observe(10, 8), None, state, NOW)
    assert (decision.action, decision.to_replicas, decision.recommended_replicas) == (ScaleAction.SCALE_IN, 6, 1)
    assert "scale-in held at 6 by the 300 s stabilization window" in decision.reason
    later = decide(policy, observe(10, 8), None, state, NOW + timedelta(seconds=150))  # 6 left the window
    assert later.to_replicas == 3


def test_one_low_reading_does_not_consolidate():
    policy = reactive()
    state = PolicyState()
    for minute in range(5):  # busy, in the band: recommends 4
        state = state.after(decide(policy, observe(700, 4), None, state, NOW + timedelta(minutes=minute)))
    dip = decide(policy, observe(0, 4), None, state, NOW + timedelta(minutes=5))
    assert dip.action is ScaleAction.HOLD and "stabilization window" in dip.reason


def test_the_window_never_holds_a_target_above_max_replicas():
    policy = reactive(max_replicas=4)  # lowered from an earlier 10
    state = PolicyState(recent=(Recommendation(at=NOW - timedelta(seconds=10), replicas=10),))
    decision = decide(policy, observe(10, 8), None, state, NOW)
    assert decision.to_replicas == 4


@pytest.mark.parametrize(("bounds", "replicas", "watts", "to"), [
    pytest.param({"min_replicas": 10, "max_replicas": 20}, 1, 500, 10, id="up-to-a-raised-min"),
    pytest.param({"max_replicas": 10, "behavior": {"scale_down": {"step_replicas": 1, "step_percent": 10}}},
                 40, 500, 10, id="down-to-a-lowered-max"),
    pytest.param({"max_replicas": 10, "behavior": {"scale_down": {"step_replicas": 1, "step_percent": 10}}},
                 40, 900, 10, id="down-to-max-while-busy"),
])
def test_the_bounds_win_over_the_step_limits(bounds, replicas, watts, to):
    """Regression: a step limit cut the move back inside [min, max] short (1 -> 5 for a min of 10; 40 -> 36 for a
    max of 10), leaving the target outside its bounds for several cooldowns."""
    decision = decide(reactive(**bounds), observe(watts, replicas), None, PolicyState(), NOW)
    assert decision.to_replicas == to, decision.reason
    assert "step limit" not in decision.reason


def test_stale_data_recommends_nothing_but_the_window_keeps_the_count_it_held():
    """Regression: a blind hold remembered nothing, so after an outage longer than the stabilization window the first
    low reading consolidated at once ("one low reading never consolidates")."""
    decision = decide(reactive(), PowerObservation(replicas=3), None, PolicyState(), NOW)
    assert decision.recommended_replicas is None  # no count asked for (intents treat it as blind)
    state = PolicyState().after(decision)
    assert state.recent == (Recommendation(at=NOW, replicas=3),)
    low = decide(reactive(), PowerObservation(measured_per_node_watts=[50.0] * 3, replicas=3, age_s=5.0), None, state,
                 NOW + timedelta(minutes=1))
    assert low.to_replicas == 3, low.reason  # the window holds it


def test_behavior_fields_validate():
    assert ScalingBehavior() == ScalingBehavior.model_validate({"scale_down": {"stabilization_window": "5min"}})
    with pytest.raises(ValueError, match="step_replicas"):
        StepLimit(step_replicas=0)
    with pytest.raises(ValueError, match="stabilization_window"):
        ScalingBehavior.model_validate({"scale_down": {"stabilization_window": "2h"}})
    for off in (0, "0", "0s", "0min"):  # 0 in any unit turns it off
        no_window = ScalingBehavior.model_validate({"scale_down": {"stabilization_window": off}})
        assert no_window.scale_down.stabilization_window == 0
    with pytest.raises(ValueError, match="must be a whole number of seconds"):
        ScalingBehavior.model_validate({"scale_down": {"stabilization_window": -60}})
    with pytest.raises(ValueError, match="not a duration"):
        ScalingBehavior.model_validate({"scale_down": {"stabilization_window": True}})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 20)), max_size=30), st.integers(0, 3600),
       st.integers(0, 20))
def test_remembered_recommendations_keep_every_window_maximum(entries, window, now_value):
    """Pruning (`remember`) never changes the maximum over any window ending at the newest entry or later."""
    entries = sorted(entries)
    full: tuple[Recommendation, ...] = ()
    pruned: tuple[Recommendation, ...] = ()
    for seconds, replicas in entries:
        item = Recommendation(at=NOW + timedelta(seconds=seconds), replicas=replicas)
        full, pruned = (*full, item), remember(pruned, item)
    end = NOW + timedelta(seconds=(entries[-1][0] if entries else 0))
    in_reach = tuple(r for r in full if r.at > end - timedelta(seconds=MAX_STABILIZATION_S))
    assert stabilized(pruned, now_value, end, window) == stabilized(in_reach, now_value, end, window)
    assert len(pruned) <= 21


def test_the_example_policy_shows_the_defaults():
    from autoscaler.simulate import load_policy
    from tests.paths import REPO_ROOT

    example = load_policy(str(REPO_ROOT / "configs" / "policy.example.yaml"))
    assert example.behavior == ScalingBehavior() and example.allow_scale_to_zero is False
