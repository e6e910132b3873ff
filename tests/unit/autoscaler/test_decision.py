"""Table tests of the scaling decision maths (autoscaler.decision) and the policy schema (autoscaler.schema).

Defaults below: 1000 W per node, scale out above 80 %, scale in below 50 %, cooldown 300 s, replicas 1..10.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from autoscaler.behavior import Recommendation
from autoscaler.decision import EarlierChange, PolicyState, decide
from autoscaler.forecast_view import ForecastView
from autoscaler.schema import (
    DeploymentTarget,
    PowerObservation,
    RayClusterTarget,
    RayServeTarget,
    ScaleAction,
    ScalingPolicy,
    StatefulSetTarget,
)
from autoscaler.state import ControllerState
from tests.factories import make_policy

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
OUT, IN, HOLD = ScaleAction.SCALE_OUT, ScaleAction.SCALE_IN, ScaleAction.HOLD


def observe(watts: list[float], replicas: int | None = None, age_s: float | None = 5.0) -> PowerObservation:
    return PowerObservation(measured_per_node_watts=watts,
                            replicas=len(watts) if replicas is None else replicas, age_s=age_s)


def upper(watts: list[float]) -> ForecastView:
    return ForecastView(upper_quantile_per_node_watts=watts, calibrated=True)


def peak(expected: list[float], bound: list[float]) -> ForecastView:
    return ForecastView(expected_per_node_watts=expected, upper_quantile_per_node_watts=bound, calibrated=True,
                        peak_bound=True, window_s=900)


def run(policy: ScalingPolicy, observation: PowerObservation, forecast: ForecastView | None = None,
        last_scale_s_ago: float | None = None):
    last = None if last_scale_s_ago is None else NOW - timedelta(seconds=last_scale_s_ago)
    return decide(policy, observation, forecast, PolicyState(last_scale_at=last), NOW)


# --- thresholds, hysteresis, proportional count, consolidation -------------------------------------------

@pytest.mark.parametrize(("watts", "action", "to", "phrase"), [
    pytest.param([950, 900], OUT, 3, "> scale-out threshold 80%", id="95pct-2-replicas-to-3"),
    pytest.param([1000, 1000], OUT, 3, "re-spread to 66.7%", id="100pct-2-replicas-to-3"),
    pytest.param([960] * 4, OUT, 5, "proportional count 5", id="96pct-4-replicas-to-5"),
    pytest.param([1000] * 5, OUT, 7, "proportional count 7", id="100pct-5-replicas-to-7"),
    pytest.param([1200] * 4, OUT, 6, "120.0%", id="over-budget-4-replicas-to-6"),
    pytest.param([800, 800], HOLD, 2, "hysteresis band", id="exactly-at-out-holds"),
    pytest.param([650] * 3, HOLD, 3, "hysteresis band [50%, 80%]", id="inside-band-holds"),
    pytest.param([500] * 3, HOLD, 3, "hysteresis band", id="exactly-at-in-holds"),
    pytest.param([300] * 4, IN, 2, "keeps nodes at 60.0% < 80%", id="30pct-4-replicas-consolidate-to-2"),
    pytest.param([400] * 4, IN, 3, "53.3%", id="40pct-4-replicas-to-3-not-2-which-sits-at-80"),
    pytest.param([100] * 8, IN, 2, "consolidating to 2 keeps nodes at 40.0%", id="10pct-8-replicas-to-2-not-1"),
    pytest.param([50] * 8, IN, 1, "consolidating to 1", id="5pct-8-replicas-to-1"),
    pytest.param([450, 450], HOLD, 2, "would not keep nodes under 80%", id="below-in-but-one-fewer-overloads"),
])
def test_thresholds_and_proportional_count(watts, action, to, phrase):
    decision = run(make_policy(predictive_scaling={"enabled": False}), observe(watts))
    assert (decision.action, decision.to_replicas) == (action, to), decision.reason
    assert phrase in decision.reason
    assert decision.signal == "measured" and decision.from_replicas == len(watts)
    assert decision.measured_share == pytest.approx(max(watts) / 10)


def test_single_replica_never_goes_to_zero():
    # issue 10: min_replicas 0 is an explicit opt-in (allow_scale_to_zero); power alone still never reaches zero
    decision = run(make_policy(min_replicas=0, allow_scale_to_zero=True), observe([20]))
    assert decision.action is HOLD and decision.to_replicas == 1


# --- aggregation -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("aggregation", "watts", "action", "to"), [
    pytest.param("max", [900, 300], OUT, 3, id="max-sees-the-hot-node"),
    pytest.param("mean", [900, 300], HOLD, 2, id="mean-averages-it-into-the-band"),
    pytest.param("max", [100, 600], HOLD, 2, id="max-one-busy-node-blocks-scale-in"),
    pytest.param("mean", [100, 600], IN, 1, id="mean-35pct-consolidates"),
])
def test_aggregation(aggregation, watts, action, to):
    decision = run(make_policy(aggregation=aggregation), observe(watts))
    assert (decision.action, decision.to_replicas) == (action, to), decision.reason


# --- min / max clamps ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("bounds", "watts", "replicas", "action", "to", "phrase"), [
    pytest.param((1, 10), [1000], 9, OUT, 10, "clamped to max_replicas 10", id="scale-out-clamped-to-max"),
    pytest.param((1, 10), [1000], 10, HOLD, 10, "clamped to max_replicas 10", id="at-max-holds"),
    pytest.param((3, 10), [100], 4, IN, 3, "clamped to min_replicas 3", id="scale-in-clamped-to-min"),
    pytest.param((3, 10), [100], 3, HOLD, 3, "clamped to min_replicas 3", id="at-min-holds"),
    pytest.param((1, 10), [650], 12, IN, 10, "clamped to max_replicas 10", id="above-max-brought-down"),
    pytest.param((2, 10), [650], 1, OUT, 2, "clamped to min_replicas 2", id="below-min-brought-up"),
])
def test_min_max_clamps(bounds, watts, replicas, action, to, phrase):
    policy = make_policy(min_replicas=bounds[0], max_replicas=bounds[1])
    decision = run(policy, observe(watts, replicas=replicas))
    assert (decision.action, decision.to_replicas) == (action, to), decision.reason
    assert phrase in decision.reason


# --- cooldown --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("watts", "ago", "action", "to", "phrase"), [
    pytest.param([950, 950], 100, HOLD, 2, "cooldown, 200 s left (would go to 3)", id="scale-out-in-cooldown"),
    pytest.param([200] * 4, 299.5, HOLD, 4, "cooldown, 1 s left", id="scale-in-in-cooldown"),
    pytest.param([950, 950], 300, OUT, 3, "> scale-out", id="cooldown-just-over"),
    pytest.param([200] * 4, 3600, IN, 2, "consolidating", id="long-after-last-change"),
    pytest.param([650, 650], 10, HOLD, 2, "hysteresis", id="hold-in-band-does-not-mention-cooldown"),
])
def test_cooldown(watts, ago, action, to, phrase):
    decision = run(make_policy(), observe(watts), last_scale_s_ago=ago)
    assert (decision.action, decision.to_replicas) == (action, to), decision.reason
    assert phrase in decision.reason
    if action is HOLD and "hysteresis" in phrase:
        assert "cooldown" not in decision.reason


@pytest.mark.parametrize(("ago", "action", "phrase"), [
    pytest.param(400, HOLD, "the last change is still taking effect (actuation_delay 600 s), 200 s left",
                 id="past-the-cooldown-but-in-flight"),
    pytest.param(600, OUT, "> scale-out", id="taken-effect"),
])
def test_a_change_still_in_flight_holds_the_target_past_the_cooldown(ago, action, phrase):
    """A change takes effect `actuation_delay` after it is decided; until then the measured power does not show it,
    and acting again on it would count the change twice."""
    decision = run(make_policy(actuation_delay="10min"), observe([950, 950]), last_scale_s_ago=ago)
    assert decision.action is action and phrase in decision.reason, decision.reason


@pytest.mark.parametrize(("watts", "delay", "ago", "age", "action", "phrase"), [
    pytest.param([1100, 1100], "1min", 100, 5, OUT, "over the budget in a reading taken after the last change took "
                 "effect (actuation_delay 60 s): the scale-out does not wait for the cooldown (200 s left)",
                 id="over-budget-after-the-change-took-effect"),
    pytest.param([1100, 1100], "2min", 100, 5, HOLD, "cooldown, 200 s left (would go to 3; over the budget, it goes "
                 "sooner once a reading taken after the last change took effect still shows it)", id="still-in-flight"),
    pytest.param([1100, 1100], "1min", 100, 60, HOLD, "it goes sooner", id="a-reading-from-before-it-took-effect"),
    pytest.param([1100, 1100], 0, 100, 5, HOLD, "cooldown, 200 s left (would go to 3)", id="no-actuation-delay"),
    pytest.param([950, 950], "1min", 100, 5, HOLD, "cooldown, 200 s left (would go to 3)",
                 id="over-threshold-under-budget"),
])
def test_an_overload_shown_after_the_last_change_took_effect_is_not_held_by_the_cooldown(watts, delay, ago, age,
                                                                                          action, phrase):
    """Scale-out stays fast: a scale-in followed by a spike over the budget was held for the rest of the cooldown, an
    overload the controller could see. Only a reading taken after the last change took effect shows it did not
    suffice: before, acting again counts the change twice, and without an actuation_delay the controller cannot
    tell (at the default 0 each tick would scale out again on power that does not show the new replicas yet).
    Under the budget the cooldown holds as before."""
    decision = run(make_policy(actuation_delay=delay), observe(watts, age_s=age), last_scale_s_ago=ago)
    assert decision.action is action and phrase in decision.reason, decision.reason


def test_no_change_is_made_on_power_read_before_the_last_change_took_effect():
    """Regression: a scale-in 10 -> 5 whose cooldown and actuation_delay (300 s) had passed was followed, 310 s
    later, by another on a reading 40 s old, taken before the 5 took effect: the 10 nodes' 250 W were read as 5 nodes'
    and it went on to 2, 1250 W per node, 125 % of the budget."""
    policy = make_policy(actuation_delay="5min", power_based={"cooldown_period": 300}, min_replicas=1)
    scaled = PolicyState(last_scale_at=NOW - timedelta(seconds=310), replicas_after=5)
    before = decide(policy, observe([250.0] * 5, age_s=40), None, scaled, NOW)
    assert before.action is HOLD and "read 30 s before the last change to 5 took effect" in before.reason, before.reason
    after = decide(policy, observe([250.0] * 5, age_s=5), None, scaled, NOW)  # read after it: acted on
    assert after.action is IN, after.reason
    unknown = scaled.model_copy(update={"replicas_after": None})  # a count not set by it (an unknown outcome)
    assert decide(policy, observe([250.0] * 5, age_s=40), None, unknown, NOW).action is IN
    # a target outside its bounds goes back to them on any reading, as it does on none at all
    lowered_cap = make_policy(actuation_delay="5min", power_based={"cooldown_period": 300}, max_replicas=4)
    bounded = decide(lowered_cap, observe([250.0] * 8, age_s=40), None, scaled.model_copy(update={
        "replicas_after": 8}), NOW)
    assert (bounded.action, bounded.to_replicas) == (IN, 4), bounded.reason


def test_power_read_before_a_change_took_effect_is_not_remembered_for_the_stabilization_window():
    """Regression (review): a scale-out 4 -> 8 (actuation_delay 120 s) read 60 s later, 4 nodes' 900 W taken for 8
    nodes', was remembered as a recommendation of 9, and held the consolidation to 5 that 8 x 450 W asks for at 310 s
    until 120 s past the cooldown. A hold on no reading still keeps the count it held."""
    policy = make_policy(actuation_delay=120, power_based={"cooldown_period": 300}, min_replicas=1)
    state = PolicyState(last_scale_at=NOW, replicas_after=8)
    early = decide(policy, observe([900.0] * 8, age_s=5), None, state, NOW + timedelta(seconds=60))
    assert early.action is HOLD and early.recommended_replicas is None, early
    state = state.after(early)
    assert [r.replicas for r in state.recent] == []
    later = decide(policy, observe([450.0] * 8, age_s=5), None, state, NOW + timedelta(seconds=310))
    assert (later.action, later.to_replicas) == (IN, 5), later.reason
    blind = decide(policy, observe([450.0] * 8, age_s=None), None, state, NOW + timedelta(seconds=320))
    assert [r.replicas for r in state.after(blind).recent] == [8]


def test_a_change_slower_than_the_stabilization_window_is_not_consolidated_on_the_first_reading_after_it():
    """Review: with an actuation delay (600 s) longer than the window (300 s), the change's own recommendation aged
    out before it took effect, and nothing remembered in between: the first reading after it consolidated at once.
    Past the window, a hold on power read before the change remembers the count the change set."""
    policy = make_policy(actuation_delay=600, power_based={"cooldown_period": 300}, min_replicas=1)
    state = PolicyState(last_scale_at=NOW, replicas_after=8,
                        recent=(Recommendation(at=NOW, replicas=8),))
    for seconds in range(30, 600, 30):
        state = state.after(decide(policy, observe([900.0] * 8, age_s=5), None, state,
                                   NOW + timedelta(seconds=seconds)))
    after = decide(policy, observe([450.0] * 8, age_s=5), None, state, NOW + timedelta(seconds=630))
    assert after.action is HOLD and "stabilization window" in after.reason, after.reason


def test_a_count_lowered_outside_is_not_taken_for_leave_to_scale_in_further():
    """Regression: a count lowered from outside (10 -> 6) skipped the cooldown in both directions: a scale-in to 2 a
    minute after this controller's own change went through, the harm the skip exists to answer made worse."""
    scaled = PolicyState(last_scale_at=NOW - timedelta(seconds=60), replicas_after=10)
    policy = make_policy(min_replicas=1, behavior={"scale_down": {"stabilization_window": 0}})
    lower = decide(policy, observe([200.0] * 6), None, scaled, NOW)
    assert lower.action is HOLD and not lower.outside_change, lower.reason
    assert "a further scale-in is held as any" in lower.reason
    assert "cooldown, 240 s left" in lower.reason
    later = decide(policy, observe([200.0] * 6), None, scaled.model_copy(update={
        "last_scale_at": NOW - timedelta(hours=1)}), NOW)  # the cooldown long over: decided as any
    assert later.action is IN and "a further scale-in as any" in later.reason and "held" not in later.reason


def test_a_count_changed_outside_the_controller_is_not_held_by_the_cooldown():
    """Regression: a redeploy resets a Serve deployment to its config's num_replicas (Ray 2.60 on any settings
    change); the controller's cooldown then kept it there, under load, for the rest of the cooldown."""
    scaled = PolicyState(last_scale_at=NOW - timedelta(seconds=30), replicas_after=4)
    reset = decide(make_policy(), observe([950], replicas=1), None, scaled, NOW)
    assert reset.action is OUT and "replicas lowered outside this controller (4 -> 1" in reset.reason, reset.reason
    raised = decide(make_policy(), observe([200] * 6), None, scaled, NOW)  # another writer's scale-out: no fight
    assert raised.action is HOLD and "cooldown" in raised.reason
    ours = decide(make_policy(), observe([950] * 4), None, scaled, NOW)  # the count it set: the cooldown holds
    assert ours.action is HOLD and "cooldown" in ours.reason
    never_known = scaled.model_copy(update={"replicas_after": None})
    unknown = decide(make_policy(), observe([950], replicas=1), None, never_known, NOW)
    assert unknown.action is HOLD and "cooldown" in unknown.reason  # an outcome never known is no drift
    assert scaled.after(reset).replicas_after == reset.to_replicas
    assert scaled.after(reset, known=False).replicas_after is None


def test_a_refused_answer_to_an_outside_change_leaves_it_unanswered():
    """Regression: a change answering a redeploy's reset whose write was refused (a 503, the count moved) stored the
    count it saw as the one it set and the exemption as used: the next tick held the over-budget target for the rest
    of the earlier change's cooldown, though nothing had changed ("a refused change frees the cooldown")."""
    scaled = PolicyState(last_scale_at=NOW - timedelta(seconds=90), replicas_after=4)
    reset = decide(make_policy(), observe([1100, 1100], replicas=2), None, scaled, NOW)
    assert reset.action is OUT and reset.outside_change
    refused = scaled.after(reset, scaled=False, known=True)
    assert (refused.replicas_after, refused.outside_answered_at, refused.last_scale_at) == (4, None,
                                                                                            scaled.last_scale_at)
    again = decide(make_policy(), observe([1100, 1100], replicas=2), None, refused, NOW + timedelta(seconds=30))
    assert again.action is OUT and "replicas lowered outside this controller (4 -> 2" in again.reason, again.reason
    landed = scaled.after(reset, scaled=True, known=True)  # carried out: answered, as before
    assert (landed.replicas_after, landed.outside_answered_at) == (reset.to_replicas, NOW)


def test_a_count_another_policy_set_earlier_in_the_tick_is_no_outside_change():
    """A sibling policy's scale-in this tick is this controller's own change: the cooldown holds as usual (it was
    reported as lowered outside the controller, and answered at once)."""
    scaled = PolicyState(last_scale_at=NOW - timedelta(seconds=30), replicas_after=8)
    sibling = EarlierChange(policy="a", raised=False)
    decision = decide(make_policy(), observe([950], replicas=5), None, scaled, NOW, sibling)
    assert decision.action is HOLD and "cooldown" in decision.reason and not decision.outside_change
    assert "lowered outside" not in decision.reason


def test_a_count_raised_earlier_in_the_tick_is_never_lowered():
    raised = EarlierChange(policy="a-hot", raised=True)
    decision = decide(make_policy(), observe([100] * 8), None, PolicyState(), NOW, raised)
    assert decision.action is HOLD and decision.to_replicas == 8
    assert "policy a-hot raised the target to 8 earlier in this tick" in decision.reason, decision.reason
    assert decide(make_policy(), observe([950] * 8), None, PolicyState(), NOW, raised).action is OUT


RAISED_4_TO_5 = EarlierChange(policy="a", raised=True, read_replicas=4)


@pytest.mark.parametrize(("measured", "forecast", "signal", "phrase"), [
    pytest.param([960], None, "measured", "measured power 76.8%", id="measured"),
    pytest.param([500], upper([960]), "forecast", "upper quantile 76.8%", id="forecast-upper-quantile"),
    pytest.param([500], peak([900], [950]), "forecast", "expected peak 72.0%", id="forecast-peak-bound"),
])
def test_regression_a_later_policy_adds_no_replica_for_load_an_earlier_raise_spread(measured, forecast, signal,
                                                                                    phrase):
    """Policy a raised the target 4 -> 5 in this tick; b's power was read at 4 replicas (96 %, or an expected peak of
    90 %: 5 replicas at 4's load). b decided as if each of the 5 carried it and went to 6: one replica too many."""
    decision = decide(make_policy(), observe(measured, replicas=5), forecast, PolicyState(), NOW, RAISED_4_TO_5)
    assert (decision.action, decision.to_replicas) == (HOLD, 5), decision.reason
    assert phrase in decision.reason and decision.signal == signal
    assert ("policy a raised the target to 5 earlier in this tick: the power read at 4 replicas is counted re-spread "
            "over 5 (x0.8)") in decision.reason
    assert decision.measured_share == pytest.approx(measured[0] / 10)  # the event reports the power as read


def test_a_later_policy_still_adds_what_its_load_needs_beyond_an_earlier_raise():
    """150 % at 4 replicas needs 8 (75 % each) whatever a raised it to; from 5 that was 10 (the max)."""
    decision = decide(make_policy(), observe([1500], replicas=5), None, PolicyState(), NOW, RAISED_4_TO_5)
    assert (decision.action, decision.to_replicas) == (OUT, 8), decision.reason


def test_a_count_lowered_earlier_in_the_tick_spreads_the_same_load_over_fewer_replicas():
    """a lowered 8 -> 5: b's 60 % at 8 replicas is 96 % at 5, so b raises to 6 (it held at 5, nodes at 96 %)."""
    lowered = EarlierChange(policy="a", raised=False, read_replicas=8)
    decision = decide(make_policy(), observe([600], replicas=5), None, PolicyState(), NOW, lowered)
    assert (decision.action, decision.to_replicas) == (OUT, 6), decision.reason
    assert "policy a lowered the target to 5 earlier in this tick" in decision.reason


def test_the_cluster_budget_counts_the_replicas_an_earlier_policy_added():
    """4 nodes at 1500 W read at 4 replicas, 9000 W budget: room for 2 more (1500 W each); a already added them, so
    b holds at 6 (it admitted 2 more on top, to 8: 12000 W expected)."""
    policy = make_policy(cluster_power_budget=9000, predictive_scaling={"enabled": False})
    raised = EarlierChange(policy="a", raised=True, read_replicas=4)
    decision = decide(policy, observe([1500] * 4, replicas=6), None, PolicyState(), NOW, raised)
    assert (decision.action, decision.to_replicas, decision.recommended_replicas) == (HOLD, 6, 6), decision.reason
    assert "capped at 6 by cluster_power_budget 9000 W" in decision.reason
    assert "2 of them added earlier in this tick" in decision.reason


def test_a_state_stored_with_its_last_decision_still_loads(tmp_path):
    """Versions before 2026-12 stored the last decision beside the cooldown clock (nothing read it)."""
    path = tmp_path / "s.sqlite"
    state = ControllerState(path)
    state.put_policy(make_policy(name="p"), NOW)
    held = run(make_policy(), observe([650, 650]))
    expected = PolicyState().after(held)
    older = {**expected.model_dump(mode="json"), "last_decision": held.model_dump(mode="json")}
    with sqlite3.connect(path) as db:
        db.execute("INSERT OR REPLACE INTO policy_state VALUES (?, ?)", ("p", json.dumps(older)))
    assert state.policy_state("p") == expected


def test_state_after_restarts_cooldown_only_on_change():
    state = PolicyState()
    held = run(make_policy(), observe([650, 650]))
    after = state.after(held)
    assert after.last_scale_at is None and after.recent[-1].replicas == held.recommended_replicas
    scaled = run(make_policy(), observe([950, 950]))
    assert state.after(scaled).last_scale_at == NOW


# --- forecast: confidence gating and fallback -------------------------------------------------------------

@pytest.mark.parametrize(("measured", "forecast", "action", "to", "signal", "used", "phrase"), [
    pytest.param([700, 700], upper([900, 950]), OUT, 3, "forecast", True, "forecast p90 upper quantile 95.0%",
                 id="forecast-crosses-scales-out-early"),
    pytest.param([700, 700], upper([750, 700]), HOLD, 2, "forecast", True, "fewer replicas would not keep",
                 id="forecast-under-threshold-holds-when-one-node-could-not-carry-it"),
    pytest.param([450] * 4, upper([550] * 4), IN, 3, "forecast", True, "consolidating to 3 keeps nodes at 73.3%",
                 id="confident-forecast-consolidates-inside-the-band"),
    pytest.param([550] * 4, None, HOLD, 4, "measured", False, "hysteresis",
                 id="measured-power-keeps-the-hysteresis-band"),
    pytest.param([700, 700], ForecastView.unavailable("calibration not yet measured"), HOLD, 2, "measured", False,
                 "forecast unavailable: calibration not yet measured; using measured power",
                 id="uncalibrated-falls-back"),
    pytest.param([700, 700], ForecastView(upper_quantile_per_node_watts=[990, 990]), HOLD, 2, "measured", False,
                 "forecast unavailable: forecast not calibrated; using measured power",
                 id="uncalibrated-values-ignored"),
    pytest.param([700, 700], None, HOLD, 2, "measured", False, "forecast unavailable: no forecast",
                 id="no-forecast-falls-back"),
    pytest.param([950, 950], None, OUT, 3, "measured", False, "forecast unavailable: no forecast",
                 id="no-forecast-measured-still-scales-out"),
    pytest.param([700, 700], upper([]), HOLD, 2, "measured", False, "forecast has no nodes",
                 id="calibrated-but-empty-falls-back"),
    pytest.param([950, 950], upper([600, 600]), OUT, 3, "measured", True, "exceeds the forecast upper quantile",
                 id="present-overload-beats-low-forecast"),
    pytest.param([200] * 4, upper([700] * 4), HOLD, 4, "forecast", True, "fewer replicas would not keep",
                 id="low-now-but-forecast-high-blocks-scale-in"),
    pytest.param([200] * 4, upper([450] * 4), IN, 3, "forecast", True, "consolidating to 3 keeps nodes at 60.0%",
                 id="scale-in-sized-by-forecast-quantile"),
    pytest.param([600] * 4, upper([200] * 4), HOLD, 4, "measured", True, "hysteresis",
                 id="low-forecast-cannot-scale-in-busy-nodes"),
])
def test_forecast_gating(measured, forecast, action, to, signal, used, phrase):
    decision = run(make_policy(), observe(measured), forecast)
    assert (decision.action, decision.to_replicas) == (action, to), decision.reason
    assert (decision.signal, decision.used_forecast) == (signal, used)
    assert phrase in decision.reason
    if used:
        assert decision.forecast_share == pytest.approx(max(forecast.upper_quantile_per_node_watts) / 10)
    else:
        assert decision.forecast_share is None


def test_predictive_disabled_ignores_forecast_silently():
    policy = make_policy(predictive_scaling={"enabled": False})
    decision = run(policy, observe([700, 700]), upper([990, 990]))
    assert decision.action is HOLD and decision.signal == "measured" and not decision.used_forecast
    assert "forecast" not in decision.reason


# --- cluster power budget --------------------------------------------------------------------------------

@pytest.mark.parametrize(("budget", "measured", "forecast", "action", "to", "phrase"), [
    pytest.param(5000, [900] * 5, None, HOLD, 5,
                 "cluster_power_budget 5000 W (measured total 4500 W + 900 W expected per added replica)",
                 id="no-room-for-one-more"),
    pytest.param(5400, [900] * 5, None, OUT, 6, "", id="exactly-room-for-one"),
    pytest.param(6000, [1200] * 4, None, OUT, 5, "capped at 5 by cluster_power_budget 6000 W",
                 id="partial-admission"),
    pytest.param(20000, [1200] * 4, None, OUT, 6, "", id="ample-budget"),
    pytest.param(4500, [700] * 4, upper([1000] * 4), HOLD, 4, "forecast total 4000 W + 1000 W",
                 id="forecast-total-used-when-forecast-drives"),
    pytest.param(100, [200] * 4, None, IN, 2, "", id="never-blocks-scale-in"),
    pytest.param(5000, [1200] * 4, peak([500] * 4, [900] * 4), HOLD, 4,
                 "capped at 4 by cluster_power_budget 5000 W (measured total 4800 W + 1200 W",
                 id="peak-bound-under-a-present-overload-caps-on-measured"),
    pytest.param(4500, [700] * 4, peak([800] * 4, [1100] * 4), HOLD, 4, "forecast total 4400 W + 1100 W",
                 id="peak-bound-total-used-when-it-is-higher"),
    # regression: one node's upper quantile set the count, and the cap totalled the forecast (1900 W), not the
    # 4800 W the nodes drew: a scale-out well past the cluster budget
    pytest.param(5000, [1200] * 4, upper([1300, 200, 200, 200]), HOLD, 4,
                 "capped at 4 by cluster_power_budget 5000 W (measured total 4800 W + 1200 W",
                 id="upper-quantile-under-a-present-overload-caps-on-measured"),
])
def test_cluster_power_budget(budget, measured, forecast, action, to, phrase):
    decision = run(make_policy(cluster_power_budget=budget), observe(measured), forecast)
    assert (decision.action, decision.to_replicas) == (action, to), decision.reason
    assert phrase in decision.reason
    if not phrase:
        assert "cluster_power_budget" not in decision.reason


def test_regression_cluster_budget_counts_the_draw_per_replica_not_per_node():
    """2 replicas on 4 nodes (2 busy, 2 idle): the mean per node (1150 W) admitted a third replica at ~6.6 kW
    against a 6000 W budget; each replica draws ~2300 W."""
    decision = run(make_policy(cluster_power_budget=6000), observe([2000, 2000, 300, 300], replicas=2))
    assert decision.action is HOLD and decision.to_replicas == 2, decision.reason
    assert "measured total 4600 W + 2300 W expected per added replica" in decision.reason


def test_cluster_budget_counts_a_node_per_added_replica_when_replicas_share_nodes():
    """4 replicas on 2 nodes: one more may need a node of its own, so the larger per-node mean counts."""
    decision = run(make_policy(cluster_power_budget=2500), observe([900, 900], replicas=4))
    assert decision.action is HOLD and decision.to_replicas == 4, decision.reason
    assert "total 1800 W + 900 W expected per added replica" in decision.reason


def test_cluster_budget_does_not_override_min_replicas():
    policy = make_policy(min_replicas=4, cluster_power_budget=100)
    decision = run(policy, observe([900, 900]))
    assert decision.action is OUT and decision.to_replicas == 4


# --- staleness and missing data --------------------------------------------------------------------------

@pytest.mark.parametrize("forecast", [None, upper([100] * 4), upper([1000] * 4)], ids=["no-fc", "low-fc", "high-fc"])
@pytest.mark.parametrize(("observation", "phrase"), [
    pytest.param(observe([], replicas=4), "no power telemetry", id="empty-nodes"),
    pytest.param(observe([100] * 4, age_s=None), "telemetry age unknown", id="age-unknown"),
    pytest.param(observe([100] * 4, age_s=121), "telemetry stale (121 s old > stale_after_s 120 s)", id="stale"),
    pytest.param(observe([1000] * 4, age_s=600), "telemetry stale", id="stale-overload"),
])
def test_stale_or_missing_telemetry_holds(observation, phrase, forecast):
    decision = run(make_policy(), observation, forecast)
    assert decision.action is HOLD and decision.to_replicas == 4
    assert decision.signal == "none" and not decision.used_forecast
    assert phrase in decision.reason and "never scale on missing data" in decision.reason


@pytest.mark.parametrize(("replicas", "bounds", "to", "phrase"), [
    pytest.param(0, {}, 1, "back to min_replicas 1", id="serve-deployment-at-zero-has-no-nodes"),
    pytest.param(12, {"max_replicas": 6}, 6, "back to max_replicas 6", id="above-a-lowered-max"),
])
def test_regression_a_target_outside_its_bounds_goes_back_without_telemetry(replicas, bounds, to, phrase):
    """README: a target outside [min_replicas, max_replicas] goes back inside in one change; the missing-telemetry
    hold came first, and a Serve deployment at 0 replicas (no nodes, so no telemetry) stayed at 0."""
    decision = run(make_policy(**bounds), observe([], replicas=replicas))
    assert decision.to_replicas == to and decision.signal == "none", decision.reason
    assert "no power telemetry" in decision.reason and phrase in decision.reason
    held = run(make_policy(**bounds), observe([], replicas=replicas), last_scale_s_ago=30)
    assert held.action is HOLD and "cooldown, 270 s left" in held.reason  # as any change, after the cooldown


def test_age_at_the_limit_is_fresh():
    decision = run(make_policy(), observe([100] * 4, age_s=120))
    assert decision.action is IN


def test_power_based_disabled_holds_with_reason():
    decision = run(make_policy(power_based={"enabled": False}), observe([1000, 1000]))
    assert decision.action is HOLD and "disabled" in decision.reason


# --- policy schema ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "field", "phrase"), [
    pytest.param({"min_replicas": 5, "max_replicas": 3}, "",
                 "min_replicas (5) must not exceed max_replicas (3)", id="min-above-max"),
    pytest.param({"power_based": {"scale_in_threshold": 80}}, "power_based",
                 "scale_in_threshold (80) must be below scale_out_threshold (80)", id="in-equals-out"),
    pytest.param({"power_based": {"scale_in_threshold": 90}}, "power_based",
                 "scale_in_threshold (90) must be below", id="in-above-out"),
    pytest.param({"cluster_power_budget": 0}, "cluster_power_budget",
                 "cluster_power_budget must be greater than 0 W (got 0)", id="cluster-budget-zero"),
    pytest.param({"cluster_power_budget": -50}, "cluster_power_budget", "greater than 0", id="cluster-budget-neg"),
    pytest.param({"power_based": {"max_power_budget": 0}}, "power_based.max_power_budget", "greater than or equal to 1",
                 id="node-budget-zero"),
    pytest.param({"name": "Bad Name"}, "name", "pattern", id="name-not-a-slug"),
    pytest.param({"mode": "yolo"}, "mode", "dry_run", id="unknown-mode"),
    pytest.param({"aggregation": "median"}, "aggregation", "mean", id="unknown-aggregation"),
    pytest.param({"surprise": 1}, "surprise", "Extra inputs", id="unknown-key"),
    pytest.param({"target": {"kind": "daemonset", "name": "x"}}, "target", "kind", id="unknown-target-kind"),
    pytest.param({"target": {"kind": "raycluster", "name": "rc"}}, "target.raycluster.worker_group", "Field required",
                 id="raycluster-needs-worker-group"),
    pytest.param({"max_replicas": 0}, "max_replicas", "greater than or equal to 1", id="max-zero"),
    # ids telemetry never carries: the policy held for good on "missing telemetry"
    pytest.param({"nodes": ["n1\n"]}, "nodes", "pattern", id="node-id-with-a-control-character"),
    pytest.param({"workload_id": " "}, "workload_id", "must name a workload", id="blank-workload"),
])
def test_invalid_policies_are_refused_with_reason(overrides, field, phrase):
    with pytest.raises(ValidationError) as caught:
        make_policy(**overrides)
    assert phrase in str(caught.value)
    locs = [".".join(str(part) for part in error["loc"]) for error in caught.value.errors()]
    assert any(loc == field or loc.startswith(f"{field}.") for loc in locs), locs  # "": the policy as a whole


@pytest.mark.parametrize(("target", "cls"), [
    pytest.param({"kind": "ray_serve", "app": "a", "deployment": "D"}, RayServeTarget, id="ray_serve"),
    pytest.param({"kind": "deployment", "name": "web"}, DeploymentTarget, id="deployment"),
    pytest.param({"kind": "statefulset", "name": "db", "namespace": "prod"}, StatefulSetTarget, id="statefulset"),
    pytest.param({"kind": "raycluster", "name": "rc", "namespace": "ml", "worker_group": "gpu"}, RayClusterTarget,
                 id="raycluster"),
])
def test_targets_parse_by_kind(target, cls):
    policy = make_policy(target=target)
    assert isinstance(policy.target, cls)
    assert ScalingPolicy.model_validate_json(policy.model_dump_json()) == policy


def test_policy_defaults_and_durations():
    policy = make_policy(stale_after_s="2min", power_based={"cooldown_period": "5min"})
    assert (policy.mode, policy.aggregation, policy.cluster_power_budget) == ("dry_run", "max", None)
    assert policy.stale_after_s == 120 and policy.power_based.cooldown_period == 300


# --- ForecastView from the forecaster's calibrated interval ---------------------------------------------

def test_forecast_view_at_interval_level_is_the_upper_bound():
    view = ForecastView.from_interval([[500, 600, 550]], [[700, 900, 650]], coverage=0.8, level=0.9)
    assert view.calibrated and view.upper_quantile_per_node_watts == [pytest.approx(900)]


@pytest.mark.parametrize(("level", "expected"), [
    pytest.param(0.5, [600.0, 100.0], id="median"),
    pytest.param(0.975, [600 + 300 * 1.959964 / 1.281552, 100 + 300 * 1.959964 / 1.281552],
                 id="higher-level-widens"),
    pytest.param(0.1, [300.0, 0.0], id="low-level-floored-at-zero"),
])
def test_forecast_view_normal_scaling(level, expected):
    view = ForecastView.from_interval([[600], [100]], [[900], [400]], coverage=0.8, level=level)
    assert view.upper_quantile_per_node_watts == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("median", "upper_", "kwargs"), [
    pytest.param([[1.0]], [[2.0]], {"coverage": 1.0, "level": 0.9}, id="coverage-1"),
    pytest.param([[1.0]], [[2.0]], {"coverage": 0.8, "level": 0.0}, id="level-0"),
    pytest.param([[1.0]], [[2.0], [3.0]], {"coverage": 0.8, "level": 0.9}, id="node-count-mismatch"),
    pytest.param([[1.0, 2.0]], [[2.0]], {"coverage": 0.8, "level": 0.9}, id="lead-count-mismatch"),
    pytest.param([[]], [[]], {"coverage": 0.8, "level": 0.9}, id="no-leads"),
])
def test_forecast_view_rejects_bad_input(median, upper_, kwargs):
    with pytest.raises(ValueError):
        ForecastView.from_interval(median, upper_, **kwargs)


def test_a_decision_on_an_extrapolated_forecast_says_so():
    """A node's window beyond the power the model trained on: the event's reason names the extrapolation."""
    beyond = peak([900], [1100]).model_copy(update={"extrapolated_nodes": 1})
    decision = decide(make_policy(), observe([500], replicas=4), beyond, PolicyState(), NOW)
    assert decision.signal == "forecast", decision.reason
    assert "1 node(s) beyond the model's training range: an extrapolation" in decision.reason
    assert "training range" not in decide(make_policy(), observe([500], replicas=4), peak([900], [1100]),
                                          PolicyState(), NOW).reason
