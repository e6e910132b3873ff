"""A node's stored-window forecasts corrected online by the outcomes of its earlier ones (no Ray)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.forecasts import PowerForecast, PowerHistory
from core.stores.sqlite import SqliteStore
from core.telemetry import TelemetrySample
from deployments.node_calibration import MAX_VERSIONS, WARM_ORIGINS, NodeCalibrations
from training.power.stored_history import StoredHistory, past_windows, stored_history

T0 = datetime(2026, 12, 1, tzinfo=UTC)
STEP = timedelta(minutes=1)


def window(end: datetime, watts: float, length: int = 5, measured: bool = True) -> StoredHistory:
    history = PowerHistory(power_watts=(watts,) * length, end_time=end, horizon_s=120, step_s=60)
    return StoredHistory(history, 0.0, end, measured=(measured,) * length)


def forecast(end: datetime, version: str = "power_lstm/1", leads: int = 2) -> PowerForecast:
    times = tuple(end + k * STEP for k in range(1, leads + 1))
    return PowerForecast(model_version=version, step_s=60, timestamps=times,
                         point=(100.0,) * leads, lower=(99.0,) * leads, upper=(101.0,) * leads,
                         confidence=(0.9,) * leads, window_coverage=1.0, padded_steps=0, interval_coverage=0.8,
                         confidence_tolerance=0.1, peak_upper=(101.5,) * leads)


def test_misses_widen_the_node_s_intervals_and_lower_its_confidence():
    calibrations = NodeCalibrations()
    answers = []
    for minute in range(120):  # asked every step; the node really draws 130 W, the model says 100 ± 1
        end = T0 + minute * STEP
        answers.append(calibrations.correct("n1", window(end, 130.0), forecast(end), horizon_steps=2))
    assert answers[0] == forecast(T0).model_copy(update={"online_calibration_points": 0})
    last = answers[-1]
    assert last.upper[0] > 101.0 and last.lower[0] < 99.0 and last.point == (100.0, 100.0)
    assert last.confidence[0] < 0.9  # every forecast missed the 10 % band
    assert last.peak_upper[1] >= max(last.upper)  # the peak bound stays above the corrected uppers
    assert last.online_calibration_points == 118 + 117  # leads 1 and 2 landing before the newest bin, once each


def test_the_newest_bin_is_not_scored_until_the_next_window():
    calibrations = NodeCalibrations()
    calibrations.correct("n1", window(T0, 130.0), forecast(T0), horizon_steps=2)
    # the next window ends at the first lead's bin, which may still be filling: nothing scored
    assert calibrations.correct("n1", window(T0 + STEP, 130.0), forecast(T0 + STEP), 2).online_calibration_points == 0
    # one more step: that bin is complete (lead 1 of the first forecast); its lead 2 is now the newest
    assert calibrations.correct("n1", window(T0 + 2 * STEP, 130.0), forecast(T0 + 2 * STEP),
                                2).online_calibration_points == 1


def test_a_node_asked_again_from_the_same_window_teaches_once():
    """Regression: every ask was kept and scored, so a node asked every 10 s learned 6 times as fast."""
    once, often = NodeCalibrations(), NodeCalibrations()
    for minute in range(30):
        end = T0 + minute * STEP
        a = once.correct("n1", window(end, 130.0), forecast(end), 2)
        for _ in range(6):
            b = often.correct("n1", window(end, 130.0), forecast(end), 2)
    assert a == b and a.online_calibration_points == 28 + 27


def test_an_origin_forecast_again_after_some_of_its_leads_were_scored_is_not_scored_at_them_twice():
    """Regression (review): a later forecast from an origin already followed (a workload cut back to an earlier
    bin) replaced the kept one with every lead unscored, so its scored leads were learned from again."""
    calibrations = NodeCalibrations()
    calibrations.correct("n1", window(T0, 130.0), forecast(T0, leads=4), horizon_steps=4)
    scored = calibrations.correct("n1", window(T0 + 3 * STEP, 130.0), forecast(T0 + 3 * STEP, leads=4), 4)
    assert scored.online_calibration_points == 2  # T0's leads 1 and 2 (its lead 3 is the newest bin)
    calibrations.correct("n1", window(T0, 130.0), forecast(T0, leads=4), horizon_steps=4)  # T0 asked again
    later = calibrations.correct("n1", window(T0 + 6 * STEP, 130.0), forecast(T0 + 6 * STEP, leads=4), 4)
    assert later.online_calibration_points == 2 + 2 + 2  # T0's leads 3, 4 and T0+3's 1, 2: T0's 1, 2 not again


def test_held_bins_teach_nothing_the_model_s_nodes_share_a_pooled_correction_and_versions_are_apart():
    """Regression: bins the store held over a gap (the last value repeated) were scored as measured power."""
    calibrations = NodeCalibrations()
    for minute in range(20):
        end = T0 + minute * STEP
        held = calibrations.correct("n1", window(end, 100.0, measured=False), forecast(end), 2)
        calibrations.correct("n2", window(end, 130.0), forecast(end), 2)
    assert len(calibrations._waiting[("power_lstm/1", "n1")]) <= 4  # expired unscored, not kept for good
    assert calibrations._models["power_lstm/1"].own["n1"].points == 0  # n1 itself taught nothing...
    assert held.upper[0] > 101.0  # ...but n2's misses, pooled, widen n1's intervals too
    fresh = calibrations.correct("n2", window(T0 + 20 * STEP, 130.0), forecast(T0 + 20 * STEP, "power_lstm/2"), 2)
    assert fresh.online_calibration_points == 0 and fresh.upper == (101.0, 101.0)  # a new version starts afresh


def test_a_version_answering_more_leads_than_first_seen_is_corrected_too():
    """Regression: a version first seen answering 2 leads failed every later forecast of 3 (a reload between routing
    and forecasting sized it by the model routed first)."""
    calibrations = NodeCalibrations()
    calibrations.correct("n1", window(T0, 100.0), forecast(T0), horizon_steps=2)
    longer = calibrations.correct("n1", window(T0 + STEP, 100.0), forecast(T0 + STEP, leads=3), horizon_steps=2)
    assert len(longer.upper) == 3


def test_the_series_kept_are_bounded():
    calibrations = NodeCalibrations(max_series=3)
    for node in ("a", "b", "c", "d"):
        calibrations.correct(node, window(T0, 100.0), forecast(T0), 2)
    assert [node for _, node in calibrations._waiting] == ["b", "c", "d"]


def test_a_version_forgotten_beyond_the_versions_kept_leaves_its_nodes_cold_to_be_warmed_again():
    """Regression (review): evicting a version dropped what it learned but kept its nodes' waiting forecasts, so
    they never counted as cold: the version, asked again, started from no points and was never warmed."""
    calibrations = NodeCalibrations()
    calibrations.correct("n", window(T0, 100.0), forecast(T0, "hourly/1"), 2)
    assert not calibrations.cold("hourly/1", "n")
    for number in range(MAX_VERSIONS):  # another resolution promoted often while the hourly model goes unasked
        calibrations.correct("m", window(T0, 100.0), forecast(T0, f"power_lstm/{number}"), 2)
    assert calibrations.cold("hourly/1", "n") and not calibrations.cold(f"power_lstm/{MAX_VERSIONS - 1}", "m")


def test_a_replica_warmed_from_the_store_answers_as_one_asked_at_every_step(tmp_path):
    """A replica that starts late replays the model on the node's stored windows since the version was registered
    (past_windows, then warm) and answers exactly as a replica that was asked at every one of those steps; the
    windows before the registration teach nothing."""
    start = T0 - 40 * STEP
    with SqliteStore(tmp_path / "telemetry") as store:
        store.write([TelemetrySample(timestamp=start + minute * STEP + timedelta(seconds=1), node_id="n1",
                                     source="ipmi", power_watts=100.0 + 3.0 * (minute % 4)) for minute in range(41)])

        def stored(end: datetime) -> StoredHistory:
            return stored_history(store, "n1", step_s=60, sequence_length=5, horizon_s=120, now=T0, until=end)

        registered = T0 - 20 * STEP
        asked = NodeCalibrations()  # a replica answering n1 at every step since the registration
        for minute in range(20):
            end = registered + minute * STEP
            asked.correct("n1", stored(end), echo(stored(end)), horizon_steps=2)
        current = stored(T0)
        windows = past_windows(store, "n1", current, sequence_length=5, count=WARM_ORIGINS, since=registered)
        assert [w.history.end_time for w in windows] == [registered + minute * STEP for minute in range(20)]
        assert windows[-1] == stored(T0 - STEP)  # each window as stored_history reads it
        assert len(past_windows(store, "n1", current, sequence_length=5, count=7, since=registered)) == 7
        assert past_windows(store, "n1", current, sequence_length=5, count=WARM_ORIGINS, since=T0) == []
        warmed = NodeCalibrations()
        assert warmed.cold("power_lstm/1", "n1")
        warmed.warm("n1", windows, [echo(w) for w in windows], horizon_steps=2)
        assert not warmed.cold("power_lstm/1", "n1")
        answer = warmed.correct("n1", current, echo(current), horizon_steps=2)
        assert answer == asked.correct("n1", current, echo(current), horizon_steps=2)
        assert answer.online_calibration_points > 0 and answer.upper != echo(current).upper


def echo(stored: StoredHistory) -> PowerForecast:
    """The window's last power for the next two steps, ± 2 W."""
    end, last = stored.history.end_time, stored.history.power_watts[-1]
    times = (end + STEP, end + 2 * STEP)
    return PowerForecast(model_version="power_lstm/1", step_s=60, timestamps=times, point=(last, last),
                         lower=(last - 2, last - 2), upper=(last + 2, last + 2), confidence=(0.9, 0.9),
                         window_coverage=1.0, padded_steps=0, interval_coverage=0.8, confidence_tolerance=0.1)


def blended(end: datetime, lstm: float, gbm: float, version: str = "power_lstm/1") -> PowerForecast:
    """A forecast whose point blended the LSTM's `lstm` and the LightGBM's `gbm` (the LSTM alone served)."""
    return forecast(end, version).model_copy(update={"point": (lstm, lstm), "blend_experts": ((lstm,) * 2,
                                                                                             (gbm,) * 2)})


def test_the_blend_learns_from_the_store_s_windows_and_moves_to_the_more_accurate_model():
    calibrations = NodeCalibrations()
    assert calibrations.lstm_weight("power_lstm/1") is None  # nothing learned: the calibration split's weights
    for minute in range(60):  # the node draws 100 W: the LightGBM says 100, the LSTM 130
        end = T0 + minute * STEP
        calibrations.correct("n1", window(end, 100.0), blended(end, 130.0, 100.0), 2, blend_start=(1.0, 1.0))
    assert calibrations.lstm_weight("power_lstm/1").tolist() == [0.0, 0.0]
    assert calibrations.lstm_weight("power_lstm/2") is None  # each version learns its own


def test_a_forecast_without_both_models_or_not_followed_teaches_the_blend_nothing():
    calibrations = NodeCalibrations()
    for minute in range(60):
        end = T0 + minute * STEP
        calibrations.correct("n1", window(end, 100.0), forecast(end), 2, blend_start=(1.0, 1.0))  # no experts
        calibrations.correct("n2", window(end, 100.0), blended(end, 130.0, 100.0), 2, follow=False,
                             blend_start=(1.0, 1.0))
    assert calibrations.lstm_weight("power_lstm/1") is None


def test_a_version_s_blend_is_let_go_with_its_calibration():
    calibrations = NodeCalibrations()
    for version in range(1, 10):
        calibrations.correct("n1", window(T0, 100.0), blended(T0, 130.0, 100.0, f"m/{version}"), 2,
                             blend_start=(1.0, 1.0))
    assert set(calibrations._blends) == set(calibrations._models) and len(calibrations._blends) == 8
