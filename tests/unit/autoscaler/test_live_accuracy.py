"""The live-accuracy ledger's maths on hand-made forecasts and actuals (autoscaler/live_accuracy.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from autoscaler.live_accuracy import ActualsRead, LiveLedger
from autoscaler.live_tracker import LiveTracker
from autoscaler.settings import LiveAccuracyConfig
from core.forecasts import PowerForecast

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
STEP = 60


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def forecast(origin: float = 0, points=(100.0, 100.0, 100.0), version: str = "power_lstm/1",
             coverage: float = 0.8) -> PowerForecast:
    """Leads at origin+1.. minutes, interval point ± 10 W, confidence 0.5, 0.6, 0.7, ..."""
    leads = len(points)
    times = tuple(at(origin + k) for k in range(1, leads + 1))
    return PowerForecast(model_version=version, step_s=STEP, timestamps=times,
                         point=tuple(points), lower=tuple(p - 10 for p in points), upper=tuple(p + 10 for p in points),
                         confidence=tuple(0.5 + 0.1 * k for k in range(leads)), window_coverage=1.0, padded_steps=0,
                         interval_coverage=coverage)


def scored(ledger: LiveLedger, newest: datetime, actuals: dict[datetime, float], node: str = "n1") -> int:
    return sum(ledger.score(read, actuals) for read in ledger.due({node: newest}))


def config(**changes) -> LiveAccuracyConfig:
    return LiveAccuracyConfig(**{"min_points": 3, "min_bins": 3, **changes})


def test_points_are_scored_for_error_coverage_hits_and_confidence():
    ledger = LiveLedger(config())
    ledger.record("n1", forecast())
    # 105: inside, a hit (|5| <= 10 % of 100); 120: outside, a miss; 95: inside, a hit
    assert scored(ledger, at(4), {at(1): 105.0, at(2): 120.0, at(3): 95.0}) == 3
    (version,) = ledger.report(at(4)).versions
    assert version.model_version == "power_lstm/1" and version.points == 3
    assert (version.mae, version.coverage, version.hit_rate) == (10.0, pytest.approx(0.6667), pytest.approx(0.6667))
    assert (version.mean_confidence, version.nominal_coverage) == (pytest.approx(0.6), 0.8)
    assert [n.node_id for n in version.nodes] == ["n1"] and version.nodes[0].mae == 10.0
    assert ledger.report(at(4)).pending_forecasts == 0  # every lead scored: the forecast is done
    assert version.points_by_lead == {1: 1, 2: 1, 3: 1}


def test_a_lead_is_scored_only_once_its_bin_is_complete():
    ledger = LiveLedger(config())
    ledger.record("n1", forecast())
    (read,) = ledger.due({"n1": at(2.5)})  # bin [1, 2) complete, [2, 3) not yet
    assert read == ActualsRead("n1", STEP, at(1), at(2))
    assert ledger.score(read, {at(1): 100.0, at(2): 500.0}) == 1
    assert ledger.due({"n1": at(2.5)}) == [] and ledger.due({}) == []  # nothing new; unknown nodes wait
    assert scored(ledger, at(4), {at(2): 100.0, at(3): 100.0}) == 2
    assert ledger.report(at(4)).versions[0].points == 3


def test_a_bin_without_measurement_is_dropped_unscored():
    ledger = LiveLedger(config())
    ledger.record("n1", forecast())
    assert scored(ledger, at(4), {at(1): 100.0, at(2): float("nan")}) == 1
    assert ledger.report(at(4)).pending_forecasts == 0


def test_the_same_origin_is_recorded_once_and_a_longer_forecast_adds_its_leads():
    ledger = LiveLedger(config())
    ledger.record("n1", forecast(points=(100.0, 100.0)))
    ledger.record("n1", forecast(points=(100.0, 100.0)))  # a second policy over the same node
    ledger.record("n1", forecast(points=(100.0, 100.0, 100.0)))  # a policy with a longer risk window
    assert scored(ledger, at(4), {at(1): 100.0, at(2): 100.0, at(3): 100.0}) == 3
    ledger.record("n2", forecast())
    ledger.record("n1", forecast(version="power_lstm/2"))
    assert len(ledger.pending) == 2  # other node, other version: other forecasts


def test_a_newer_forecast_from_the_same_origin_is_the_one_scored_and_no_lead_twice():
    """The next tick's forecast from the same origin is what the policies act on: it replaces the leads still
    waiting (a shorter one keeps the longer one's later leads); a lead already scored is not scored again."""
    ledger = LiveLedger(config())
    ledger.record("n1", forecast(points=(100.0, 100.0, 100.0)))
    ledger.record("n1", forecast(points=(150.0, 150.0)))  # later, with more of the last input bin
    assert scored(ledger, at(2.5), {at(1): 150.0}) == 1
    ledger.record("n1", forecast(points=(170.0, 170.0)))  # lead 1 is scored already: only lead 2 is updated
    assert scored(ledger, at(4), {at(1): 0.0, at(2): 170.0, at(3): 100.0}) == 2
    (version,) = ledger.report(at(4)).versions
    assert (version.points, version.mae) == (3, 0.0)


def test_pending_forecasts_are_capped_oldest_first_and_the_evictions_counted():
    ledger = LiveLedger(config(max_pending_forecasts=2))
    for origin in range(3):
        ledger.record("n1", forecast(origin))
    assert [key[2] for key in ledger.pending] == [at(2), at(3)]
    assert ledger.report(at(3)).evicted_forecasts == 1
    assert list(ledger.by_series[("n1", STEP)]) == list(ledger.pending)  # the index follows
    assert scored(ledger, at(10), {at(m): 100.0 for m in range(10)}) == 6 and ledger.by_series == {}


def test_scores_roll_out_of_the_window_and_stale_forecasts_expire():
    ledger = LiveLedger(config(window=600))  # 10 min, buckets of 10 s
    ledger.record("n1", forecast())
    scored(ledger, at(4), {at(1): 100.0, at(2): 100.0, at(3): 100.0})
    assert ledger.report(at(10)).versions[0].points == 3  # [0, 10] holds every point
    assert ledger.report(at(11.5)).versions[0].points == 2  # the point at 1 min left the window
    ledger.expire(at(20))
    assert ledger.scores == {} and ledger.report(at(20)).versions == []
    ledger.record("n1", forecast(origin=30))
    ledger.expire(at(45))  # its last lead (33 min) is older than the window: it can never count
    assert not ledger.pending


def test_versions_and_nodes_are_reported_apart_and_pooled():
    ledger = LiveLedger(config())
    ledger.record("n1", forecast())
    ledger.record("n2", forecast(points=(200.0, 200.0, 200.0)))
    ledger.record("n1", forecast(version="power_lstm/2"))
    for node, actual in (("n1", 110.0), ("n2", 230.0)):
        scored(ledger, at(4), dict.fromkeys((at(1), at(2), at(3)), actual), node)
    report = ledger.report(at(4))
    assert report.served_version == "power_lstm/2"
    first, second = report.versions
    assert (first.model_version, second.model_version) == ("power_lstm/1", "power_lstm/2")
    assert [(n.node_id, n.mae, n.coverage, n.hit_rate) for n in first.nodes] == [("n1", 10.0, 1.0, 1.0),
                                                                                   ("n2", 30.0, 0.0, 0.0)]
    assert (first.points, first.mae, first.coverage, first.hit_rate) == (6, 20.0, 0.5, 0.5)
    assert second.points == 3 and second.nodes[0].node_id == "n1"


def test_collapsed_coverage_says_why_and_needs_enough_points():
    ledger = LiveLedger(config())
    ledger.record("n1", forecast())
    scored(ledger, at(4), {at(1): 100.0, at(2): 130.0, at(3): 60.0})  # 1 of 3 inside: 33 % < 80 % - 20 %
    reason = ledger.collapse("power_lstm/1", "n1", at(4))
    assert reason == ("live interval coverage 33% over 3 points (3 measured bins) in the last 1h for node n1 < 60% "
                      "(nominal 80% - margin 20%, power_lstm/1)")
    assert ledger.report(at(4)).versions[0].nodes[0].fallback == (
        "live interval coverage 33% over 3 points (3 measured bins) in the last 1h for node n1 < 70% (nominal 80% - "
        "half the margin, to trust it again; not trusted since 2025-03-01T12:04:00Z, power_lstm/1)")
    assert ledger.collapse("power_lstm/2", "n1", at(4)) is None  # another version starts afresh
    assert ledger.collapse("power_lstm/1", "n2", at(4)) is None
    assert LiveLedger(config(min_points=4)).collapse("power_lstm/1", "n1", at(4)) is None
    for changes, expected in (({"min_points": 4}, None), ({"fallback": False}, None),
                              ({"coverage_margin": 0.5}, None), ({}, reason)):
        other = LiveLedger(config(**changes))
        other.record("n1", forecast())
        scored(other, at(4), {at(1): 100.0, at(2): 130.0, at(3): 60.0})
        assert other.collapse("power_lstm/1", "n1", at(4)) == expected, changes


def test_coverage_at_the_threshold_keeps_the_forecast():
    ledger = LiveLedger(config(min_points=5, coverage_margin=0.2))
    ledger.record("n1", forecast(points=(100.0,) * 5))
    actuals = {at(1): 100.0, at(2): 100.0, at(3): 100.0, at(4): 500.0, at(5): 500.0}  # 60 % = 80 % - 20 %
    assert scored(ledger, at(6), actuals) == 5
    assert ledger.collapse("power_lstm/1", "n1", at(6)) is None


def test_a_hit_uses_the_band_the_model_calibrated_its_confidence_to():
    """A model calibrated to a 20 % band: 115 W against 100 W is a hit for it, though outside the 10 %
    hit_tolerance that forecasts without a band are judged by."""
    ledger = LiveLedger(config())
    ledger.record("n1", forecast(points=(100.0,)).model_copy(update={"confidence_tolerance": 0.2}))
    ledger.record("n2", forecast(points=(100.0,)))
    for node in ("n1", "n2"):
        assert scored(ledger, at(2), {at(1): 115.0}, node=node) == 1
    (version,) = ledger.report(at(2)).versions
    assert {node.node_id: node.hit_rate for node in version.nodes} == {"n1": 1.0, "n2": 0.0}


def test_overlapping_forecasts_of_few_measured_bins_are_not_enough_to_distrust_a_node():
    """Regression: each tick's forecast scores the same bins again, so 100 points could come from 14 minutes of
    measurements; the fall now also needs `min_bins` distinct bins."""
    ledger = LiveLedger(config(min_points=6, min_bins=4))
    for origin in range(3):  # three origins over the same three bins: 6 points, 3 bins
        ledger.record("n1", forecast(origin=origin, points=(100.0,) * (3 - origin)))
    assert scored(ledger, at(4), {at(1): 500.0, at(2): 500.0, at(3): 500.0}) == 6
    (node,) = ledger.report(at(4)).versions[0].nodes
    assert (node.points, node.bins, node.coverage) == (6, 3, 0.0)
    assert ledger.collapse("power_lstm/1", "n1", at(4)) is None
    ledger.record("n1", forecast(origin=3, points=(100.0,)))
    scored(ledger, at(5), {at(4): 500.0})
    assert ledger.collapse("power_lstm/1", "n1", at(5)) is not None  # a fourth bin


def test_a_distrusted_node_is_trusted_again_only_above_the_nominal_minus_half_the_margin():
    """No flapping at the threshold: fallen at 0 % coverage, the node stays on measured power at 62.5 % (above the
    60 % that made it fall, below 70 %) and is trusted again at 79.5 %."""
    ledger = LiveLedger(config(min_points=4, min_bins=4))
    ledger.record("n1", forecast(points=(100.0,) * 4))
    scored(ledger, at(5), {at(k): 500.0 for k in range(1, 5)})
    assert ledger.collapse("power_lstm/1", "n1", at(5)) is not None
    ledger.record("n1", forecast(origin=5, points=(100.0,) * 20))
    scored(ledger, at(26), {at(5 + k): (100.0 if k <= 15 else 500.0) for k in range(1, 21)})  # 15 of 24 inside
    reason = ledger.collapse("power_lstm/1", "n1", at(26))
    assert reason is not None and "62% over 24 points" in reason and "< 70%" in reason, reason
    ledger.record("n1", forecast(origin=25, points=(100.0,) * 20))
    scored(ledger, at(46), {at(25 + k): 100.0 for k in range(1, 21)})  # 35 of 44
    assert ledger.collapse("power_lstm/1", "n1", at(46)) is None
    assert ledger.fallen == {}


def test_a_new_model_version_starts_trusted_and_a_rollout_keeps_the_old_one_s_verdict():
    ledger = LiveLedger(config())
    ledger.record("n1", forecast())
    scored(ledger, at(4), {at(1): 500.0, at(2): 500.0, at(3): 500.0})
    assert ledger.collapse("power_lstm/1", "n1", at(4)) is not None
    ledger.record("n1", forecast(origin=4, version="power_lstm/2"))
    assert ledger.collapse("power_lstm/2", "n1", at(5)) is None
    ledger.record("n1", forecast(origin=5))  # replicas of both versions answer during a rollout
    ledger.expire(at(6))
    assert "not trusted since" in ledger.collapse("power_lstm/1", "n1", at(6))  # hysteresis kept, not reset
    ledger.record("n1", forecast(origin=6, version="power_lstm/2"))
    ledger.expire(at(6) + timedelta(hours=2))  # version 1's points have left the window: its verdict goes too
    assert ledger.fallen == {}


def test_a_lead_that_is_not_finite_is_not_scored():
    """Regression: a NaN point made the node's MAE NaN for a whole window and counted as a coverage miss."""
    ledger = LiveLedger(config())
    ledger.record("n1", forecast(points=(100.0, float("nan"), 100.0)))
    assert scored(ledger, at(4), {at(1): 100.0, at(2): 100.0, at(3): 100.0}) == 2
    (node,) = ledger.report(at(4)).versions[0].nodes
    assert (node.points, node.mae, node.coverage) == (2, 0.0, 1.0)


def test_a_forecast_that_cannot_be_kept_never_stops_the_tick():
    """Regression: an exception in the bookkeeping failed the whole tick, for every policy, on every tick."""
    tracker = LiveTracker(store=None, config=config())
    tracker.record(["n1", "n2"], [forecast().model_copy(update={"point": (100.0,)}), forecast()])
    assert tracker.report(at(0)).pending_forecasts == 1  # n2's; n1's lists differ in length


def test_a_bin_the_bmc_missed_is_not_scored_against_the_lower_device_sum(tmp_path):
    """Regression (review): each tick reads the few bins just completed, and the store's look-back for a missing
    source stayed inside that read: a bin the BMC missed read as the GPUs' 300 W under a 900 W wall, scored as a
    600 W error (and a coverage miss) where it is a gap."""
    from core.stores.base import NodeLatest
    from core.stores.sqlite import SqliteStore
    from core.telemetry import TelemetrySample

    with SqliteStore(tmp_path / "telemetry") as store:
        store.write([TelemetrySample(timestamp=at(minute), node_id="n1", source="nvml", device_id="0",
                                     power_watts=300.0) for minute in range(-5, 4)]
                    + [TelemetrySample(timestamp=at(minute), node_id="n1", source="ipmi", power_watts=900.0)
                       for minute in range(-5, 4) if minute != 1])
        tracker = LiveTracker(store, config())
        tracker.record(["n1"], [forecast(points=(900.0, 900.0, 900.0))])
        newest = NodeLatest(node_id="n1", timestamp=at(4), power_watts=900.0, age_s=0.0)
        assert tracker.score({"n1": newest}, at(4)) == 2  # lead 1's bin is a gap
        (node,) = tracker.report(at(4)).versions[0].nodes
        assert (node.points, node.mae, node.coverage) == (2, 0.0, 1.0)
