"""The simulator's demand/power model, step loop and metric accounting on hand-made series (no Ray)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autoscaler import simulate
from autoscaler.schema import ScalingPolicy
from autoscaler.sim_report import window_steps
from autoscaler.trace_replay import (
    DemandModel,
    LeadForecast,
    RunMetrics,
    forecast_view,
    initial_replicas,
    reactive,
    simulate_series,
)
from tests.factories import make_policy
from tests.paths import REPO_ROOT

START = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
STEP = 60
MODEL = DemandModel(idle_watts=100.0, scale=1.0, offset=0.0)
# Two replicas carry 1000 W at 600 W per node; 2400 W puts them at 1300 W (> 1000 W budget) until 4 arrive.
STEP_UP = [1000.0] * 5 + [2400.0] * 5


def sim_policy(predictive: bool = True, **overrides: Any) -> ScalingPolicy:
    """The shared test policy with a 3-minute look-ahead; `predictive=False` is the reactive policy."""
    return make_policy(name="sim", predictive_scaling={"enabled": predictive, "lookahead_minutes": 3}, **overrides)


def times(n: int) -> list[datetime]:
    return [START + timedelta(seconds=STEP * i) for i in range(n)]


def perfect_forecast(trace: list[float], leads: int = 3):
    """The true future trace power as median and upper (a zero-width interval); None past the end."""
    def forecast(i: int):
        future = trace[i + 1:i + 1 + leads]
        if not future:
            return None
        future = future + [future[-1]] * (leads - len(future))
        return LeadForecast(future, future)
    return forecast


def test_demand_model_spreads_dynamic_power_over_replicas():
    model = DemandModel(idle_watts=300.0, scale=40.0, offset=150.0)
    assert model.dynamic(200.0) == 2000.0
    assert model.dynamic(100.0) == 0.0  # below the offset: no dynamic power, never negative
    assert model.per_node(200.0, 4) == 800.0
    assert model.per_node(100.0, 3) == 300.0


def test_initial_replicas_keep_the_first_step_under_the_threshold():
    policy = sim_policy()
    assert initial_replicas(policy, MODEL, 1000.0) == 2  # 1 replica: 1100 W; 2: 600 W < 800 W
    assert initial_replicas(policy, MODEL, 100.0) == 1
    assert initial_replicas(sim_policy(min_replicas=3), MODEL, 100.0) == 3
    assert initial_replicas(policy, MODEL, 1e6) == 10  # nothing suffices: max_replicas


def test_horizon_rounds_the_lookahead_up_to_whole_steps():
    def horizon_steps(lookahead_minutes: int, step_s: int) -> int:  # the risk window is the look-ahead here
        return window_steps(sim_policy(power_based={"cooldown_period": 60}).model_copy(update={
            "predictive_scaling": sim_policy().predictive_scaling.model_copy(
                update={"lookahead_minutes": lookahead_minutes})}), step_s, 0)

    assert horizon_steps(30, 600) == 3
    assert horizon_steps(25, 600) == 3
    assert horizon_steps(1, 600) == 1


def test_constant_demand_is_accounted_exactly():
    trace = [1000.0] * 6
    result = simulate_series(sim_policy(predictive=False), MODEL, times(6), trace, step_s=STEP, actuation_delay_s=0)
    m = result.metrics
    assert (m.budget_violation_seconds, m.over_threshold_seconds, m.scale_events) == (0, 0, 0)
    assert m.replica_hours == pytest.approx(2 * 6 * STEP / 3600)
    assert m.energy_kwh == pytest.approx((2 * 100 + 1000) * 6 * STEP / 3.6e6)  # all nodes' power x time
    assert m.decisions == 6 and m.forecast_used_fraction == 0.0
    assert [s.replicas for s in result.steps] == [2] * 6


def test_time_over_the_threshold_is_counted_against_the_threshold_given_not_the_runs_own():
    """Regression: the reactive + margin run counted time above its own lower threshold (70 % for 80 %), so its
    over_threshold_seconds could not be compared with the other runs'."""
    lowered = sim_policy(predictive=False, min_replicas=2, max_replicas=2,
                         power_based={"scale_out_threshold": 50, "scale_in_threshold": 30})
    trace = [1000.0] * 6  # 600 W per node: above 50 % of the 1000 W budget, under 80 %
    own = simulate_series(lowered, MODEL, times(6), trace, step_s=STEP, actuation_delay_s=0)
    assert own.metrics.over_threshold_seconds == 6 * STEP
    shared = simulate_series(lowered, MODEL, times(6), trace, step_s=STEP, actuation_delay_s=0, threshold_pct=80)
    assert shared.metrics.over_threshold_seconds == 0


def test_reactive_run_violates_until_the_delayed_scale_out_lands():
    result = simulate_series(sim_policy(predictive=False), MODEL, times(10), STEP_UP, step_s=STEP,
                             actuation_delay_s=120)
    m = result.metrics
    # Step 5's reading (130 % -> ceil(2 * 130 / 80) = 4) is known when its bin ends, at step 6; the change lands
    # two steps after that.
    assert [s.replicas for s in result.steps] == [2] * 8 + [4] * 2
    # paid for from the decision: the two steps it is on its way are charged at 4
    assert [s.charged_replicas for s in result.steps] == [2] * 6 + [4] * 4
    assert m.budget_violation_seconds == 3 * STEP
    assert m.over_threshold_seconds == 3 * STEP
    assert m.scale_events == 1
    assert m.replica_hours == pytest.approx((6 * 2 + 4 * 4) * STEP / 3600)
    assert m.energy_kwh == pytest.approx(sum(s.replicas * s.per_node_watts for s in result.steps) * STEP / 3.6e6)
    assert m.max_per_node_watts == pytest.approx(1300.0)


def test_a_decision_waits_for_its_bin_so_no_delay_still_lands_a_step_later():
    """Regression: the decision read a bin's mean at the bin's start, so delay 0 and delay one step gave the same
    run: every replay had one step less delay than it stated."""
    runs = {delay: simulate_series(sim_policy(predictive=False), MODEL, times(10), STEP_UP, step_s=STEP,
                                   actuation_delay_s=delay) for delay in (0, STEP)}
    assert [s.replicas for s in runs[0].steps] == [2] * 6 + [4] * 4
    assert [s.replicas for s in runs[STEP].steps] == [2] * 7 + [4] * 3
    assert (runs[0].metrics.budget_violation_seconds, runs[STEP].metrics.budget_violation_seconds) == (STEP, 2 * STEP)


def test_predictive_run_scales_out_ahead_of_the_forecast_rise():
    result = simulate_series(sim_policy(), MODEL, times(10), STEP_UP, step_s=STEP, actuation_delay_s=120,
                             forecast=perfect_forecast(STEP_UP), coverage=0.8)
    m = result.metrics
    # decided on step 2's bin (its forecast sees step 5's rise), at step 3; landing two steps later, just in time
    assert [s.replicas for s in result.steps] == [2] * 5 + [4] * 5
    assert m.budget_violation_seconds == 0 and m.over_threshold_seconds == 0
    assert m.scale_events == 1
    assert m.replica_hours == pytest.approx((3 * 2 + 7 * 4) * STEP / 3600)  # paid for from the decision, at step 3
    assert result.steps[2].signal == "forecast" and result.steps[2].action == "scale_out"
    assert result.steps[-1].signal == "measured"  # no forecast window at the last step: measured power
    assert m.forecast_used_fraction == pytest.approx(0.9)


def test_pending_changes_queue_and_count_only_real_changes():
    # Delay longer than the cooldown: a second decision is queued behind the first one.
    trace = [1000.0] * 3 + [2400.0] * 3 + [6000.0] * 6
    policy = sim_policy(predictive=False, power_based={"max_power_budget": 1000, "scale_out_threshold": 80,
                                                       "scale_in_threshold": 50, "cooldown_period": 60},
                        actuation_delay=180)
    result = simulate_series(policy, MODEL, times(12), trace, step_s=STEP, actuation_delay_s=180)
    replicas = [s.replicas for s in result.steps]
    assert replicas[:6] == [2] * 6  # nothing lands before the delay
    assert replicas[-1] > 4
    changes = sum(1 for a, b in zip(replicas, replicas[1:], strict=False) if a != b)
    decided_late = {s.action for s in result.steps[-3:]} - {"hold"}  # still on its way when the series ends
    assert result.metrics.scale_events == changes + 1 and decided_late  # counted when decided, as the controller does


def test_a_policy_that_understates_its_delay_scales_again_on_the_old_counts_power():
    """Regression (review): the replay decided on the capacity and took a decision repeating the target of a change on
    its way for none, where the controller reads the target's count beside the power of the replicas still running.
    A policy stating no actuation delay, under a 3-minute one, so scales out again at every cooldown's end on the
    power of the 2 replicas running (2 -> 4 -> 7 -> 10: the controller's own churn), not once (2 -> 4, then on)."""
    trace = [1000.0] * 3 + [2400.0] * 9
    policy = sim_policy(predictive=False, power_based={"max_power_budget": 1000, "scale_out_threshold": 80,
                                                       "scale_in_threshold": 50, "cooldown_period": 60},
                        actuation_delay=0)
    result = simulate_series(policy, MODEL, times(12), trace, step_s=STEP, actuation_delay_s=180)
    assert [s.action for s in result.steps[3:7]] == ["scale_out"] * 3 + ["hold"]
    assert [s.replicas for s in result.steps][6:10] == [2, 4, 7, 10] and result.metrics.scale_events == 3
    stated = simulate_series(policy.model_copy(update={"actuation_delay": 180}), MODEL, times(12), trace, step_s=STEP,
                             actuation_delay_s=180)
    assert stated.metrics.scale_events == 1 and stated.steps[-1].replicas == 4


def test_forecast_view_maps_trace_power_to_per_node_power():
    model = DemandModel(idle_watts=300.0, scale=40.0, offset=150.0)
    view = forecast_view(model, LeadForecast([200.0, 210.0], [220.0, 230.0]), 4, coverage=0.8, level=0.9, step_s=STEP)
    assert view.calibrated and len(view.upper_quantile_per_node_watts) == 4
    # level 0.9 is the upper end of a central 80 % interval: the mapped upper at the worst lead.
    assert view.upper_quantile_per_node_watts[0] == pytest.approx(model.per_node(230.0, 4))


def test_metrics_add_sums_series_and_keeps_the_peak():
    a = RunMetrics(budget_violation_seconds=60, replica_hours=1.0, scale_events=2, decisions=4,
                   forecast_decisions=1, max_per_node_watts=900)
    b = RunMetrics(budget_violation_seconds=120, replica_hours=0.5, scale_events=1, decisions=6,
                   forecast_decisions=4, max_per_node_watts=1200)
    total = a.add(b)
    assert total.budget_violation_seconds == 180 and total.replica_hours == 1.5 and total.scale_events == 3
    assert total.forecast_used_fraction == pytest.approx(0.5)
    assert total.max_per_node_watts == 1200
    report = total.report()
    for key in ("budget_violation_seconds", "over_threshold_seconds", "replica_hours", "energy_kwh",
                "scale_events", "forecast_used_fraction"):
        assert key in report


def test_reactive_copy_only_turns_predictive_scaling_off():
    policy = sim_policy()
    off = reactive(policy)
    assert off.predictive_scaling.enabled is False and policy.predictive_scaling.enabled is True
    assert off.power_based == policy.power_based and off.name == policy.name


# --- command line failures (all happen before any training, so no Ray) -------------------------------------


def test_invalid_policy_names_the_field_and_writes_nothing(tmp_path, capsys, upm_sample):
    policy = tmp_path / "p.yaml"
    policy.write_text("name: sim\ntarget: {kind: ray_serve, app: a, deployment: d}\n"
                      "power_based: {scale_out_threshold: 40, scale_in_threshold: 60}\n")
    output = tmp_path / "out.json"
    code = simulate.main(["--trace", str(upm_sample), "--policy", str(policy), "--output", str(output)])
    err = capsys.readouterr().err
    assert code == 2 and not output.exists()
    assert err.startswith("simulate: error: --policy") and "power_based" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text", ["- just\n- a list\n", "name: [unclosed\n"])
def test_policy_that_is_not_a_mapping_is_refused(tmp_path, capsys, upm_sample, text):
    policy = tmp_path / "p.yaml"
    policy.write_text(text)
    code = simulate.main(["--trace", str(upm_sample), "--policy", str(policy), "--output", str(tmp_path / "o")])
    assert code == 2 and "--policy" in capsys.readouterr().err


def test_missing_trace_is_one_error_line(tmp_path, capsys):
    code = simulate.main(["--trace", str(tmp_path / "none.csv"), "--policy", "configs/policy.example.yaml",
                          "--output", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert code == 2 and "none.csv" in err and not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("flag,value", [("--demand-scale", "0"), ("--idle-watts", "-5"),
                                        ("--actuation-delay", "soon"), ("--train-fraction", "1.5")])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        simulate.main(["--trace", "t.csv", "--policy", "p.yaml", "--output", str(tmp_path / "o"), flag, value])
    assert exit_info.value.code == 2 and flag in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--step", "1min", "--actuation-delay", "90s"], ["--actuation-delay", "5min"]],
                         ids=["uneven", "under-the-default-10min-step"])
def test_an_actuation_delay_off_the_steps_is_refused(tmp_path, capsys, argv):
    """A replayed change lands on a step: 90 s at a 60 s step would land at 120 s while the report said 90."""
    with pytest.raises(SystemExit) as exit_info:
        simulate.main(["--trace", "t.csv", "--policy", "p.yaml", "--output", str(tmp_path / "o"), *argv])
    assert exit_info.value.code == 2 and "--actuation-delay: " in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a whole number of 60 s steps"):
        simulate_series(sim_policy(), MODEL, times(3), [100.0] * 3, step_s=60, actuation_delay_s=90)


def test_the_actuation_delay_defaults_to_one_step():
    args = simulate.parse_args(["--trace", "t.csv", "--policy", "p.yaml", "--output", "o.json", "--step", "1min"])
    assert args.actuation_delay == args.step == 60


def test_the_series_split_at_gaps_longer_than_the_steps_own_max_gap(monkeypatch, upm_sample, tmp_path):
    """Regression: without a config file, --step 10min trained on series split at any gap over 10 min (the 1-minute
    config's 5-minute max_gap, raised to a step), where the suite and training.evaluate allow 50 min."""
    given = {}

    def stop(*args, **kwargs):
        given.update(kwargs)
        raise RuntimeError("stop before training")

    monkeypatch.setattr(simulate, "train_for_replay", stop)
    monkeypatch.delenv("KCLOUD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no config file: the defaults
    args = simulate.parse_args(["--trace", str(upm_sample), "--policy", str(REPO_ROOT / "configs/policy.example.yaml"),
                                "--output", "o.json", "--step", "10min"])
    with pytest.raises(RuntimeError, match="stop before training"):
        simulate.run_simulation(args)
    assert given["step_s"] == 600 and given["max_gap_s"] == 3000


def test_example_policy_loads():
    policy = simulate.load_policy("configs/policy.example.yaml")
    assert policy.predictive_scaling.enabled and policy.min_replicas <= policy.max_replicas


def test_margin_lowers_both_thresholds_of_the_reactive_policy():
    from autoscaler.trace_replay import with_margin

    margined = with_margin(sim_policy(), 10)
    assert not margined.predictive_scaling.enabled
    assert (margined.power_based.scale_out_threshold, margined.power_based.scale_in_threshold) == (70, 40)
    assert with_margin(sim_policy(), 60).power_based.scale_in_threshold == 0
    with pytest.raises(ValueError, match="scale-out threshold under 1%"):
        with_margin(sim_policy(), 80)
    with pytest.raises(ValueError, match="scale-out threshold under 1%"):  # a policy may not set one either
        with_margin(sim_policy(), 79.5)


def test_regression_no_change_is_decided_on_a_bin_that_ran_before_the_last_one_landed():
    """The replay decided at a bin's start on the bin's mean, as if read then: the cooldown's early scale-out over the
    budget took a bin that ran wholly at the old count for one taken after the change landed, and scaled again on
    top of the change still on its way (2 -> 3 -> 4 -> 5 where the controller goes 2 -> 3 -> 5)."""
    ramp = [1000.0] * 3 + [1000.0 + 400.0 * i for i in range(1, 10)]
    policy = sim_policy(predictive=False, actuation_delay=STEP, power_based={
        "max_power_budget": 1000, "scale_out_threshold": 80, "scale_in_threshold": 50, "cooldown_period": 300})
    result = simulate_series(policy, MODEL, times(len(ramp)), ramp, step_s=STEP, actuation_delay_s=STEP)
    decided = [i for i, s in enumerate(result.steps) if s.action != "hold"]
    landed_at = {i: i + 2 for i in decided}  # read at the bin's end, then a step's delay: the first bin after it
    for earlier, later in zip(decided, decided[1:], strict=False):
        assert later >= landed_at[earlier], (earlier, later, [s.replicas for s in result.steps])
    assert len(decided) >= 2  # the ramp keeps asking


def test_regression_a_decision_repeating_a_change_on_its_way_starts_no_cooldown():
    """The replay decides on the capacity, which lags the target: when the hold ended on the last bin before the
    change landed, it decided the same change again, queued it twice and restarted the cooldown, so the next
    scale-out (which the controller, reading the target, would make once the change showed) came a hold later."""
    trace = [1000.0] * 3 + [2400.0] * 12 + [4000.0] * 20
    policy = sim_policy(predictive=False, actuation_delay=600, power_based={
        "max_power_budget": 1000, "scale_out_threshold": 80, "scale_in_threshold": 50, "cooldown_period": 300})
    result = simulate_series(policy, MODEL, times(len(trace)), trace, step_s=STEP, actuation_delay_s=600)
    counts = [s.replicas for s in result.steps]
    landed = [(i, b) for i, (a, b) in enumerate(zip(counts, counts[1:], strict=False), 1) if a != b]
    # 2 -> 4 decided on bin 3 lands at bin 14; bin 13, the hold's last, repeats it; 4 -> 6 is decided on bin 15, the
    # first at 4 replicas, and lands at bin 26 (before: queued again at 13, its hold ran to bin 23, past the trace)
    assert landed == [(14, 4), (26, 6)] and result.metrics.scale_events == 2
    assert result.metrics.budget_violation_seconds == 1320


def test_regression_no_other_change_is_made_on_the_bin_before_a_change_lands():
    """When the hold is the actuation delay (10-min bins, a 10-min delay, a 5-min cooldown), it ended on the last bin
    before the change landed: that bin ran wholly at the old count, where the controller holds (decision._paced), and
    the replay made a second change on it (1 -> 2, then 1 -> 4 a step later)."""
    step = 600
    trace = [600.0, 1500.0] + [2400.0] * 6
    policy = sim_policy(predictive=False, min_replicas=1, actuation_delay=step, power_based={
        "max_power_budget": 1000, "scale_out_threshold": 80, "scale_in_threshold": 50, "cooldown_period": 300})
    at = [START + timedelta(seconds=step * i) for i in range(len(trace))]
    result = simulate_series(policy, MODEL, at, trace, step_s=step, actuation_delay_s=step)
    # 1 -> 2 decided on bin 1 lands at bin 3; bin 2 (1 replica) holds; bin 3, the first at 2, asks for 4
    assert [(s.replicas, s.action) for s in result.steps[:5]] == [
        (1, "hold"), (1, "scale_out"), (1, "hold"), (2, "scale_out"), (2, "hold")]
    assert [s.replicas for s in result.steps[5:]] == [4] * 3 and result.metrics.scale_events == 2
    # a policy that states no delay: its controller takes bin 2 for one read after the change, and scales on it
    stated = policy.model_copy(update={"actuation_delay": 0})
    result = simulate_series(stated, MODEL, at, trace, step_s=step, actuation_delay_s=step)
    assert [s.action for s in result.steps[:3]] == ["hold", "scale_out", "scale_out"]


def test_the_first_count_is_the_fewest_at_or_under_the_threshold_as_decide_reads_it():
    """A first bin exactly at the scale-out threshold is not over it (decide scales out above it): one replica."""
    policy = sim_policy(predictive=False, min_replicas=1, power_based={"max_power_budget": 1000,
                                                                       "scale_out_threshold": 80})
    assert initial_replicas(policy, MODEL, 700.0) == 1  # 100 W idle + 700 W = 800 W, the threshold itself
    assert initial_replicas(policy, MODEL, 701.0) == 2
    # the share as decide() computes it: 1400 / 2500 * 100 is 56.00000000000001, over a 56 % threshold
    odd = sim_policy(predictive=False, min_replicas=1, power_based={"max_power_budget": 2500,
                                                                    "scale_out_threshold": 56})
    assert initial_replicas(odd, MODEL, 1300.0) == 2


def test_a_scale_in_is_paid_for_until_it_lands():
    """The replicas a scale-in removes run until it lands: charged as running, never less."""
    step_down = [2400.0] * 3 + [400.0] * 9  # 4 replicas at 700 W per node, then 200 W: a consolidation
    policy = sim_policy(predictive=False, power_based={"cooldown_period": 60},
                        behavior={"scale_down": {"stabilization_window": 0}})
    result = simulate_series(policy, MODEL, times(12), step_down, step_s=STEP, actuation_delay_s=180)
    replicas = [s.replicas for s in result.steps]
    charged = [s.charged_replicas for s in result.steps]
    assert replicas[0] == 4 and replicas[-1] < 4, replicas
    assert charged == replicas  # nothing paid for beyond what runs while replicas only go away
    assert result.metrics.replica_hours == pytest.approx(sum(replicas) * STEP / 3600)


def test_the_replayed_window_sees_the_bin_before_the_next_change_could_land():
    """Regression: the window was the hold plus the actuation delay. With a cooldown shorter than the delay, the next
    change is decided only once a bin that began after the last one took effect has been read, a step later; the bin
    before it landed ran at the count decided now, unseen: a recurring spike there violated the budget even with a
    perfect forecast."""
    step, delay = 600, 600
    policy = sim_policy(power_based={"cooldown_period": 300}, actuation_delay=delay)
    assert policy.risk_window_s == 2 * step and window_steps(policy, step, delay) == 3
    for spike in range(5, 14):  # the drop to 400 W invites a scale-in; where a spike comes back decides its risk
        trace = [3000.0] * 4 + [400.0] * 12
        trace[spike] = 3000.0
        moments = [START + timedelta(seconds=step * i) for i in range(len(trace))]
        result = simulate_series(policy, MODEL, moments, trace, step_s=step, actuation_delay_s=delay,
                                 forecast=perfect_forecast(trace, window_steps(policy, step, delay)))
        assert result.metrics.budget_violation_seconds == 0, (spike, [s.replicas for s in result.steps])


def test_the_replayed_window_reaches_the_replays_own_delay_where_the_policy_states_a_shorter_one():
    """A policy file stating no delay, replayed where a change takes 10 min: the next change may be decided a step
    after this one, and lands 10 min after that, so the window reaches 20 min, not the policy's own step."""
    policy = sim_policy(power_based={"cooldown_period": 300})
    assert policy.actuation_delay == 0 and window_steps(policy, 600, 0) == 1
    assert window_steps(policy, 600, 600) == 2
