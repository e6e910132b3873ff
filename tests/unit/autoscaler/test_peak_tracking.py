"""The online correction of the peak bound (autoscaler.peak_tracking) and the replay's use of it (no Ray)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from autoscaler import sim_report, trace_replay
from autoscaler.forecast_view import ForecastView
from autoscaler.peak_tracking import MAX_FACTOR, PeakTracker
from autoscaler.sim_forecast import ReplaySeries
from autoscaler.trace_replay import DemandModel, LeadForecast, simulate_series
from tests.factories import make_policy

START = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _miss_share(tracker: PeakTracker, spread: float, windows: int, seed: int = 0) -> float:
    """Feed `windows` windows whose peak lies uniformly 0..10 W above an expected peak of 100 W, against a bound
    100 W + factor * `spread`; the share of the last half that were missed."""
    rng = random.Random(seed)
    misses = []
    for _ in range(windows):
        bound = 100.0 + tracker.factor * spread
        peak = 100.0 + rng.uniform(0.0, 10.0)
        misses.append(peak > bound)
        tracker.learn(bound, peak)
    tail = misses[windows // 2:]
    return sum(tail) / len(tail)


@pytest.mark.parametrize("spread", [2.5, 8.0, 9.9])
def test_the_share_of_missed_windows_comes_to_one_minus_the_level(spread):
    """Whether the static bound is far too narrow (75 % missed), about right or too wide (1 % missed)."""
    tracker = PeakTracker(level=0.8)
    assert _miss_share(tracker, spread, 6000) == pytest.approx(0.2, abs=0.03)
    assert tracker.factor * spread == pytest.approx(8.0, rel=0.1)  # the 80th percentile of the peaks' spread


def test_the_correction_stays_within_its_bounds():
    tracker = PeakTracker(level=0.9)
    for _ in range(1000):
        tracker.learn(bound=1.0, measured_peak=2.0)  # every window missed
    assert tracker.factor == pytest.approx(MAX_FACTOR)
    assert (tracker.windows, tracker.misses) == (1000, 1000)
    for _ in range(5000):
        tracker.learn(bound=2.0, measured_peak=1.0)
    assert tracker.factor == pytest.approx(1 / MAX_FACTOR)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5])
def test_a_level_outside_0_1_is_refused(level):
    with pytest.raises(ValueError, match="level"):
        PeakTracker(level=level)


def test_spread_scales_the_bound_above_the_expected_peak():
    view = ForecastView(upper_quantile_per_node_watts=[500.0, 300.0], expected_per_node_watts=[400.0, 300.0],
                        calibrated=True, peak_bound=True, window_s=600)
    wider = view.spread(2.5)
    assert wider.upper_quantile_per_node_watts == [650.0, 300.0]
    assert wider.expected_per_node_watts == view.expected_per_node_watts
    assert wider.spread_factor == 2.5 and view.spread_factor is None
    assert view.spread(0.5).upper_quantile_per_node_watts == [450.0, 300.0]
    for factor in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="spread factor"):
            view.spread(factor)


class _Spy(PeakTracker):
    """A tracker that records what it learned from and returns a fixed factor."""

    learned: list[tuple[float, float]]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.learned = []

    def learn(self, bound: float, measured_peak: float) -> None:
        self.learned.append((bound, measured_peak))
        super().learn(bound, measured_peak)


def _replay(trace: list[float], monkeypatch, *, online: bool = True):
    spies: list[_Spy] = []

    def make(level: float) -> _Spy:
        spies.append(_Spy(level))
        return spies[-1]

    monkeypatch.setattr(trace_replay, "PeakTracker", make)
    policy = make_policy(name="sim", predictive_scaling={"enabled": True, "lookahead_minutes": 3,
                                                         "online_bound": online})
    model = DemandModel(idle_watts=100.0, scale=1.0, offset=0.0)

    def forecast(i: int) -> LeadForecast:  # flat at the step's own value, bound 100 W above it
        return LeadForecast([trace[i]] * 3, [trace[i] + 50.0] * 3, [trace[i] + 100.0] * 3)

    run = simulate_series(policy, model, [START + timedelta(minutes=i) for i in range(len(trace))], trace,
                          step_s=60, actuation_delay_s=60, forecast=forecast)
    return run, spies


def test_each_window_is_learned_once_when_its_last_step_is_read(monkeypatch):
    """The bound decided on at step i covers steps i+1..i+3: it is scored at step i+3, against their highest demand
    at the replica count the bound was made for."""
    trace = [400.0, 400.0, 700.0, 400.0, 400.0, 400.0, 400.0, 400.0]
    run, spies = _replay(trace, monkeypatch)
    (spy,) = spies
    assert len(spy.learned) == len(trace) - 3  # origins 0..4: the later ones' windows run past the series
    model = DemandModel(idle_watts=100.0, scale=1.0, offset=0.0)
    for origin, (bound, peak) in enumerate(spy.learned):
        replicas = run.steps[origin].replicas
        assert peak == model.per_node(max(trace[origin + 1:origin + 4]), replicas)
        assert bound > model.per_node(trace[origin], replicas)
    assert [peak > bound for bound, peak in spy.learned][:3] == [True, True, False]  # the jump to 700 W missed


def test_no_decision_learns_from_the_future(monkeypatch):
    """Changing the trace after step t leaves every decision up to t as it was."""
    base = [400.0, 450.0, 900.0, 420.0, 400.0, 1300.0, 410.0, 400.0, 380.0, 900.0, 400.0, 400.0]
    changed = base[:7] + [1500.0, 100.0, 1400.0, 100.0, 2000.0]
    first, _ = _replay(base, monkeypatch)
    second, _ = _replay(changed, monkeypatch)
    assert [vars(step) for step in first.steps[:7]] == [vars(step) for step in second.steps[:7]]


def test_a_policy_without_online_bound_learns_nothing(monkeypatch):
    run, spies = _replay([400.0, 400.0, 700.0, 400.0, 400.0, 400.0], monkeypatch, online=False)
    assert spies == [] and len(run.steps) == 6


def test_the_replay_carries_the_correction_from_one_series_to_the_next_but_never_back_in_time(monkeypatch):
    """Series replayed in time order share the tracker; one that starts before the last has ended gets its own."""
    seen: dict[str, int] = {}
    real = sim_report.simulate_series

    def recording(policy, model, times, trace_watts, **kwargs):
        if "peak_tracker" in kwargs:  # the predictive run's
            seen[names[times[0]]] = id(kwargs["peak_tracker"])
        return real(policy, model, times, trace_watts, **kwargs)

    def series(name: str, start_minute: int) -> ReplaySeries:
        times = [START + timedelta(minutes=start_minute + i) for i in range(10)]
        return ReplaySeries(name, times, [400.0] * 10, [None] * 10)

    made = [series("late", 40), series("first", 0), series("overlapping", 45), series("second", 20)]
    names = {s.times[0]: s.node_id for s in made}
    data = SimpleNamespace(series=made, coverage=0.8, forecast_fn=lambda s, leads: (lambda i: None))
    monkeypatch.setattr(sim_report, "simulate_series", recording)
    policy = make_policy(name="sim", predictive_scaling={"enabled": True, "lookahead_minutes": 3})
    report = sim_report.replay(data, policy, DemandModel(100.0, 1.0, 0.0), step_s=60, actuation_delay_s=60,
                               margin=10)
    assert seen["first"] == seen["second"] == seen["late"] != seen["overlapping"]
    assert [step["series"] for step in report["steps"]][::10] == ["late", "first", "overlapping", "second"]


def test_a_window_the_run_changed_its_count_in_is_read_up_to_the_change_and_teaches_only_a_miss(monkeypatch):
    """As the controller scores it (autoscaler.policy_bounds): the steps from the first one at another replica
    count on no longer carry the load the bound was made for."""
    bounds: list[float] = []
    wait = trace_replay._BoundOutcomes.wait

    def recording(self, origin, view, leads, replicas):
        bounds.append(max(view.upper_quantile_per_node_watts))
        wait(self, origin, view, leads, replicas)

    monkeypatch.setattr(trace_replay._BoundOutcomes, "wait", recording)
    trace = [400.0] * 3 + [1300.0] * 6 + [400.0] * 8
    run, spies = _replay(trace, monkeypatch)
    model = DemandModel(idle_watts=100.0, scale=1.0, offset=0.0)
    counts = [step.replicas for step in run.steps]
    expected, cut = [], 0
    for origin in range(len(trace) - 3):
        seen = origin
        while seen < origin + 3 and counts[seen + 1] == counts[origin]:
            seen += 1
        cut += seen < origin + 3
        if seen > origin:  # some step read at the bound's count
            peak = model.per_node(max(trace[origin + 1:seen + 1]), counts[origin])
            if seen == origin + 3 or peak > bounds[origin]:
                expected.append((bounds[origin], peak))
    assert cut >= 2 and len(set(counts)) > 1  # the run scaled, and windows spanned its changes
    assert spies[0].learned == expected
