"""The controller's online correction of each policy's peak bound (autoscaler/policy_bounds.py), without a store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from autoscaler.actuators import Actuators
from autoscaler.controller import ScalingController
from autoscaler.forecast_view import ForecastView
from autoscaler.policy_bounds import PolicyBounds
from autoscaler.schema import PowerObservation
from autoscaler.state import ControllerState
from tests.factories import make_policy
from tests.unit.autoscaler.doubles import FixedForecaster, RecordingActuator, policy_data, write_power

START = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
STEP_S = 60
POLICY = make_policy(name="web", aggregation="max", predictive_scaling={"enabled": True, "lookahead_minutes": 3,
                                                                        "confidence_threshold": 0.8})


def view(bound: float = 600.0, expected: float = 500.0) -> ForecastView:
    return ForecastView(upper_quantile_per_node_watts=[bound, bound - 50.0], expected_per_node_watts=[expected] * 2,
                        calibrated=True, peak_bound=True, window_s=180)


def seen(watts: list[float], replicas: int = 2, age_s: float = 5.0, missing: list[str] | None = None):
    return PowerObservation(measured_per_node_watts=watts, age_s=age_s, replicas=replicas,
                            missing_nodes=missing or [])


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def run(bounds: PolicyBounds, readings: list[PowerObservation], forecast: ForecastView | None = None) -> list[float]:
    """One tick per minute: observe, then correct the view (the bounds each tick decided on)."""
    used = []
    for minute, observation in enumerate(readings):
        bounds.observe(POLICY, observation, at(minute))
        corrected = bounds.correct(POLICY, forecast or view(), observation.replicas, at(minute), STEP_S)
        used.extend(corrected.upper_quantile_per_node_watts[:1])
    return used


def test_windows_under_their_bound_narrow_it_and_exceeded_ones_widen_it():
    calm, wild = PolicyBounds(), PolicyBounds()
    calm_bounds = run(calm, [seen([500.0, 480.0])] * 40)
    wild_bounds = run(wild, [seen([700.0, 480.0])] * 40)  # every window peaks at 700 W, above the 600 W bound
    assert calm_bounds[0] == wild_bounds[0] == 600.0  # uncorrected until a window has ended
    assert calm_bounds[-1] < 600.0 and wild_bounds[-1] >= 690.0  # widened until it (nearly) holds the peaks
    assert calm.tracker("web").misses == 0 and calm.tracker("web").windows == 37  # windows of 3 min ended
    assert wild.tracker("web").windows == 37 and wild.tracker("web").misses > 20


def test_a_window_is_judged_on_the_load_re_spread_to_the_count_it_was_made_for():
    """Scaled out from 2 to 4 replicas, each node draws half: 350 W on 4 is 700 W on the bound's 2, a miss."""
    bounds = PolicyBounds()
    run(bounds, [seen([500.0, 500.0])] + [seen([350.0, 350.0], replicas=4)] * 3)
    assert (bounds.tracker("web").windows, bounds.tracker("web").misses) == (1, 1)


def test_readings_that_are_missing_or_stale_are_not_counted_and_an_empty_window_teaches_nothing():
    bounds = PolicyBounds()
    run(bounds, [seen([500.0, 500.0]), seen([900.0], missing=["n2"]), seen([900.0, 900.0], age_s=10_000),
                 seen([500.0, 500.0]), seen([500.0, 500.0])])
    # the first window (0, 3] saw one usable reading (500 W, under its bound); the second (1, 4] two
    assert (bounds.tracker("web").windows, bounds.tracker("web").misses) == (2, 0)


def test_one_bound_waits_per_model_step_however_often_the_controller_ticks():
    bounds = PolicyBounds()
    for second in range(0, 600, 10):  # a tick every 10 s for 10 min, always over the bound
        now = START + timedelta(seconds=second)
        bounds.observe(POLICY, seen([900.0, 900.0]), now)
        bounds.correct(POLICY, view(), 2, now, STEP_S)
    assert bounds.tracker("web").windows == 7  # origins at minutes 0..6 have ended by 9:50


def test_an_uncalibrated_view_is_left_alone_and_waits_for_nothing():
    bounds = PolicyBounds()
    unavailable = ForecastView.unavailable("no model")
    assert bounds.correct(POLICY, unavailable, 2, START, STEP_S) is unavailable
    run(bounds, [seen([900.0, 900.0])] * 5, forecast=unavailable)
    assert bounds.tracker("web") is None


def test_a_new_confidence_level_or_a_deleted_policy_starts_afresh():
    bounds = PolicyBounds()
    run(bounds, [seen([900.0, 900.0])] * 10)
    assert bounds.tracker("web").factor > 1
    stricter = POLICY.model_copy(update={"predictive_scaling": POLICY.predictive_scaling.model_copy(
        update={"confidence_threshold": 0.95})})
    assert bounds.correct(stricter, view(), 2, at(10), STEP_S).upper_quantile_per_node_watts[0] == 600.0
    bounds.retain(["other"])
    assert bounds.tracker("web") is None


def test_the_controller_widens_a_policy_bound_that_its_nodes_keep_exceeding(tmp_path, store):
    """Through real ticks on a store: power alternating 400/500 W against a forecast bounded near the last reading,
    so every window from a 400 W origin is exceeded; the events say the bound was widened."""
    start = datetime.now(UTC) - timedelta(minutes=40)  # a timeline in the past, a tick a minute
    clock = [start]
    made = ScalingController(ControllerState(tmp_path / "state.sqlite"), store, FixedForecaster(upper_watts=450.0),
                             Actuators([RecordingActuator(2)]), clock=lambda: clock[0])
    made.put_policy(policy_data(stale_after_s="1h"))
    write_power(store, {"n1": 400.0, "n2": 400.0}, minutes=15, end=start)
    events = []
    for minute in range(1, 24):  # (from minute 24 the live coverage fallback takes the forecast away)
        clock[0] = start + timedelta(minutes=minute)
        watts = 400.0 + 100.0 * (minute % 2)
        write_power(store, {"n1": watts, "n2": watts}, minutes=1, end=clock[0])
        events += made.tick()
    tracker = made.bounds.tracker("web")
    assert tracker is not None and tracker.windows == 18 and tracker.misses >= 9
    assert "(its spread x1.00, corrected online)" in events[0].reason
    factor = float(events[-1].reason.split("(its spread x")[1].split(",")[0])
    assert factor > 1.2, events[-1].reason
