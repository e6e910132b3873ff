"""Counts sized with the nodes' idle draw (`power_based.idle_power_watts`): the idle part stays on every node when
replicas change, only the rest re-spreads. The proportional rule counted every watt as load, so where nodes idle
high a scale-out fell short (and needed another) and a scale-in stopped early (and needed another).

The replay's demand model is the check: its nodes draw idle + load / replicas (autoscaler.trace_replay)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from autoscaler.decision import EarlierChange, PolicyState, decide
from autoscaler.forecast_view import ForecastView
from autoscaler.policy_config import policy_from
from autoscaler.schema import PowerObservation, ScaleAction, ScalingPolicy
from autoscaler.settings import AutoScalingConfig
from autoscaler.state import ControllerState
from autoscaler.trace_replay import DemandModel, with_known_idle
from tests.factories import make_policy, policy_data

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
IDLE = 300.0
NODES = DemandModel(idle_watts=IDLE, scale=1.0, offset=0.0)  # a node draws 300 W + its share of the load


def policy(idle: float | None, predictive: bool = False):
    return make_policy(power_based={"idle_power_watts": idle}, predictive_scaling={"enabled": predictive})


def decided(idle: float | None, per_node: float, replicas: int, forecast: ForecastView | None = None):
    observation = PowerObservation(measured_per_node_watts=[per_node] * replicas, replicas=replicas, age_s=5.0)
    return decide(policy(idle, forecast is not None), observation, forecast, PolicyState(), NOW)


def load_of(per_node: float, replicas: int) -> float:
    """The demand behind `per_node` watts at `replicas` replicas."""
    return (per_node - IDLE) * replicas


def test_a_scale_out_counts_the_idle_draw_and_lands_under_the_threshold_in_one_change() -> None:
    load = 2 * (1400 - IDLE)  # two nodes at 1,400 W
    proportional, knowing = decided(None, 1400, 2), decided(IDLE, 1400, 2)
    assert (proportional.to_replicas, knowing.to_replicas) == (4, 5)
    assert NODES.per_node(load, 4) > 800  # the proportional count leaves the nodes over the 80 % threshold
    assert NODES.per_node(load, 5) <= 800
    assert "re-spread to 74.0% (each node's idle 300 W stays put)" in knowing.reason


def test_a_scale_in_keeps_counting_every_watt_for_headroom() -> None:
    """Counted with the idle draw, a consolidation lands right under the scale-out threshold, and the next reading's
    noise scales it back out: on a replayed spike trace a reactive policy went 2 -> 1 -> 2 every 20 minutes (411
    changes instead of 48). Counting every watt overstates the fewer nodes' draw: that is the headroom."""
    nodes = DemandModel(idle_watts=100.0, scale=1.0, offset=0.0)
    held = decide(make_policy(power_based={"idle_power_watts": 100.0, "scale_out_threshold": 70,
                                           "scale_in_threshold": 40}, predictive_scaling={"enabled": False}),
                  PowerObservation(measured_per_node_watts=[380.0, 380.0], replicas=2, age_s=5.0), None,
                  PolicyState(), NOW)
    assert held.action is ScaleAction.HOLD and "fewer replicas would not keep nodes under 70%" in held.reason
    assert 660 <= nodes.per_node(2 * 280, 1) < 700  # one node would sit 4 points under the threshold
    load = load_of(400, 6)  # six nodes idling at 300 W, at 400 W: the consolidation is the proportional one
    assert decided(IDLE, 400, 6).to_replicas == decided(None, 400, 6).to_replicas == 4
    assert NODES.per_node(load, 4) < 500


def test_the_peak_rule_sizes_with_the_idle_draw_too() -> None:
    bound = ForecastView(expected_per_node_watts=[1100.0] * 2, upper_quantile_per_node_watts=[1300.0] * 2,
                         calibrated=True, peak_bound=True, window_s=3600)
    proportional, knowing = decided(None, 500, 2, bound), decided(IDLE, 500, 2, bound)
    # expected: 2 * 110 % / 80 % -> 3; bound: 2 * 130 % / 100 % -> 3; with the idle 30 %: 2 * 80 / 50 -> 4
    assert (proportional.to_replicas, knowing.to_replicas) == (3, 4)
    assert NODES.per_node(load_of(1100, 2), 3) > 800 >= NODES.per_node(load_of(1100, 2), 4)
    assert "(each node's idle 300 W stays put)" in knowing.reason


def test_an_earlier_change_of_the_tick_re_spreads_only_the_load() -> None:
    """Power read at 2 replicas, decided at the 4 an earlier policy set: each node keeps its idle draw."""
    observation = PowerObservation(measured_per_node_watts=[1100.0] * 2, replicas=4, age_s=5.0)
    earlier = EarlierChange(policy="other", raised=True, read_replicas=2)
    decision = decide(policy(IDLE), observation, None, PolicyState(), NOW, earlier)
    assert decision.action is ScaleAction.HOLD  # 300 + 1,600 / 4 = 700 W: 70 %, in the band
    assert "70.0%" in decision.reason


def test_an_idle_draw_at_or_over_the_scale_out_threshold_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="idle_power_watts \\(800 W\\) must be below the scale-out threshold"):
        policy(800.0)


def test_the_replay_gives_a_policy_its_nodes_idle_draw_unless_the_policy_says_otherwise() -> None:
    assert with_known_idle(policy(None), NODES, margin=10).power_based.idle_power_watts == IDLE
    assert with_known_idle(policy(100.0), NODES, margin=10).power_based.idle_power_watts == 100.0
    # an idle draw the margined run's threshold (70 %) could not get under is left out: every watt re-spreads
    assert with_known_idle(policy(None), DemandModel(750.0, 1.0, 0.0), margin=10).power_based.idle_power_watts is None
    measuring = policy(100.0).model_copy(update={"power_based": policy(100.0).power_based.model_copy(
        update={"measure_idle_power": True})})
    assert with_known_idle(measuring, NODES, margin=10).power_based.idle_power_watts == IDLE  # what it would measure


def test_regression_an_idle_draw_the_margin_run_cannot_get_under_is_refused_before_training() -> None:
    """The reactive + margin run copied the policy unchecked: idle 750 W under a 70 % threshold raised in every
    decision, after the forecaster had trained."""
    from autoscaler.trace_replay import with_margin

    with pytest.raises(ValueError, match=r"10-point margin puts the scale-out threshold \(70%\) at or under the "
                                         r"nodes' idle draw \(idle_power_watts 750 W, 75\.0%\)"):
        with_margin(make_policy(power_based={"idle_power_watts": 750.0, "scale_in_threshold": 76}), 10)


def test_an_idle_draw_at_or_over_the_scale_in_threshold_is_refused_naming_the_field(tmp_path) -> None:
    """Such a policy never consolidates (a node never draws less than its idle power): a new one is refused with
    what to change; one stored by an earlier version, which accepted it, is still read (skipping it would stop its
    scale-outs too)."""
    def written(idle: float, scale_in: float = 50) -> ScalingPolicy:
        data = policy_data(power_based={"idle_power_watts": idle, "scale_in_threshold": scale_in})
        return policy_from(data, AutoScalingConfig())

    with pytest.raises(ValidationError, match=r"power_based.idle_power_watts \(500 W\) must be below the scale-in "
                                              r"threshold \(500 W\).*raise power_based.scale_in_threshold above it"):
        written(500.0)
    assert written(499.0).power_based.idle_power_watts == 499.0
    assert written(600.0, scale_in=0).power_based.idle_share == 60  # never consolidating: said outright
    state = ControllerState(tmp_path / "s.sqlite")
    state.put_policy(policy(500.0), NOW)  # as an earlier version stored it
    assert [p.power_based.idle_power_watts for p in state.policies()] == [500.0] and state.invalid_policies() == []


def test_regression_the_idle_check_is_the_one_the_counts_use() -> None:
    """A draw a hair under the threshold in watts is exactly the threshold as a share: accepted, it failed every
    scale-out."""
    with pytest.raises(ValidationError, match="must be below the scale-out threshold"):
        policy(799.9999999999999)


def test_a_reading_under_the_idle_draw_is_not_raised_to_it_when_re_spread() -> None:
    observation = PowerObservation(measured_per_node_watts=[100.0, 100.0], replicas=4, age_s=5.0)
    decision = decide(policy(IDLE), observation, None, PolicyState(), NOW,
                      EarlierChange(policy="other", raised=False, read_replicas=2))
    assert "measured power 10.0%" in decision.reason and "above the nodes' idle 300 W" in decision.reason


def test_without_an_idle_draw_a_scale_in_count_is_the_proportional_rule_s_to_the_last_bit() -> None:
    """11 nodes at 260.18 W under a 31.8 % threshold: the count started at ceil, not floor + 1, and went to 9 (a
    spread a rounding error under the threshold) where the rule has always gone to 10."""
    held = make_policy(power_based={"scale_out_threshold": 31.8, "scale_in_threshold": 30},
                       predictive_scaling={"enabled": False})
    observation = PowerObservation(measured_per_node_watts=[260.1818181818182] * 11, replicas=11, age_s=5.0)
    assert decide(held, observation, None, PolicyState(), NOW).to_replicas == 10
