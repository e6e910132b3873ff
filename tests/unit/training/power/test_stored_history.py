"""A node's stored window as a forecaster input: its age is the newest reading's, whatever the model's step, and the
steps held over a gap are counted (they are not real history); a client's short history completed from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from core.forecasts import PowerHistory
from core.stores.base import StoreUnavailable, TelemetrySample
from core.stores.sqlite import SqliteStore
from training.power.stored_history import PowerStopped, UnknownNode, fill_from_store, stored_history

NOW = datetime(2026, 1, 5, 12, 59, 50, tzinfo=UTC)  # 59 min 50 s into an hourly bin


@pytest.mark.parametrize("step_s", [60, 3600])
def test_the_age_is_the_newest_readings_not_its_bins_start(tmp_path, step_s: int):
    with SqliteStore(tmp_path) as store:
        store.write([TelemetrySample(timestamp=NOW - timedelta(seconds=5 * k), node_id="n", source="ipmi",
                                     power_watts=400.0 + k) for k in range(1, 240)])
        stored = stored_history(store, "n", step_s=step_s, sequence_length=4, horizon_s=4 * step_s, now=NOW)
    assert stored.age_s == pytest.approx(5.0)
    assert stored.history.power_watts[-1] > 0


def test_a_window_whose_last_bin_has_no_power_is_as_old_as_its_newest_bin_with_power(tmp_path):
    with SqliteStore(tmp_path) as store:
        store.write([TelemetrySample(timestamp=NOW - timedelta(minutes=m), node_id="n", source="ipmi",
                                     power_watts=500.0) for m in range(3, 10)])
        latest = store.latest("n")[0].model_copy(update={"timestamp": NOW - timedelta(seconds=20)})
        stored = stored_history(store, "n", step_s=60, sequence_length=5, horizon_s=300, now=NOW, latest=latest)
    assert stored.age_s >= 180.0


def test_steps_held_over_a_gap_are_counted_and_marked(tmp_path):
    minutes = [0, 1, 2, 7, 8, 9]  # no reading 3 to 6 minutes ago: a 4-step gap
    with SqliteStore(tmp_path) as store:
        store.write([TelemetrySample(timestamp=NOW - timedelta(minutes=m, seconds=5), node_id="n", source="ipmi",
                                     power_watts=300.0 + m) for m in minutes])
        stored = stored_history(store, "n", step_s=60, sequence_length=10, horizon_s=600, now=NOW)
    assert len(stored.history.power_watts) == 10 and stored.history.filled_steps == 4
    assert stored.history.power_watts[3:7] == (307.0,) * 4  # held from the value before the gap
    assert stored.measured == (True,) * 3 + (False,) * 4 + (True,) * 3  # which bins online calibration may score


def test_a_feature_missing_only_in_the_first_bin_is_kept_from_its_first_reading(tmp_path):
    """The feature was dropped for the whole window when its first bin with power had no reading of it."""
    with SqliteStore(tmp_path) as store:
        store.write([TelemetrySample(timestamp=NOW - timedelta(minutes=m, seconds=5), node_id="n", source="ipmi",
                                     power_watts=300.0 + m) for m in range(10)])
        store.write([TelemetrySample(timestamp=NOW - timedelta(minutes=m, seconds=5), node_id="n", source="host",
                                     utilization=40.0 + m) for m in range(9)])  # none in the oldest minute
        stored = stored_history(store, "n", step_s=60, sequence_length=10, horizon_s=600, now=NOW)
    assert stored.history.numeric["cpu_utilization"] == tuple(48.0 - k for k in range(9))


def test_a_node_whose_clock_runs_ahead_is_not_read_as_fresher_than_now(tmp_path):
    """Regression: samples stamped 4 min ahead gave a negative age and a window ending in the future."""
    with SqliteStore(tmp_path) as store:
        store.write([TelemetrySample(timestamp=NOW + timedelta(seconds=240 - 10 * k), node_id="n", source="ipmi",
                                     power_watts=400.0) for k in range(60)])
        stored = stored_history(store, "n", step_s=60, sequence_length=5, horizon_s=300, now=NOW)
    assert stored.age_s == 0.0 and stored.newest == NOW
    assert stored.history.end_time <= NOW


def test_a_known_node_whose_power_readings_stopped_is_not_unknown(tmp_path):
    """Regression: power last read 90 min ago (beyond the store's look-back), CPU still read: the API answered 404
    "no telemetry stored", as if the id were mistyped, instead of saying its power stopped."""
    now = datetime.now(UTC)
    with SqliteStore(tmp_path) as store:
        store.write([TelemetrySample(timestamp=now - timedelta(minutes=90), node_id="n", source="ipmi",
                                     power_watts=400.0),
                     TelemetrySample(timestamp=now - timedelta(seconds=5), node_id="n", source="host",
                                     utilization=30.0)])
        with pytest.raises(PowerStopped, match="its power readings stopped"):
            stored_history(store, "n", step_s=60, sequence_length=5, horizon_s=300, tell_stopped=True)
        with pytest.raises(UnknownNode):
            stored_history(store, "nobody", step_s=60, sequence_length=5, horizon_s=300, tell_stopped=True)
        with pytest.raises(UnknownNode):  # the controller's ticks do not pay for the extra read
            stored_history(store, "n", step_s=60, sequence_length=5, horizon_s=300)


def test_a_store_that_cannot_list_its_nodes_is_unavailable_not_an_unknown_node(tmp_path):
    """Review: a failed node list was taken for "not known": the API answered 404 for a node it knows while the
    store was down, and the replica counted the read as the store answering, ending its pause of reads."""
    class NodesDown(SqliteStore):
        def nodes(self, since=None):
            raise StoreUnavailable("connection refused")

    with NodesDown(tmp_path) as store, pytest.raises(StoreUnavailable):
        stored_history(store, "n", step_s=60, sequence_length=5, horizon_s=300, tell_stopped=True)


def test_a_feature_whose_source_stopped_is_held_no_longer_than_training_fills_it(tmp_path):
    """Regression: GPU utilization last stored 45 min ago at 95 % was fed as 95 % for all 45 steps, looking fresh;
    training fills a feature for at most 5 steps (the default max_gap) and reads the rest as missing."""
    with SqliteStore(tmp_path) as store:
        store.write([TelemetrySample(timestamp=NOW - timedelta(minutes=m, seconds=5), node_id="n", source="ipmi",
                                     power_watts=500.0) for m in range(60)])
        store.write([TelemetrySample(timestamp=NOW - timedelta(minutes=m, seconds=5), node_id="n", source="nvml",
                                     device_id="GPU-1", utilization=95.0) for m in range(45, 60)])
        stored = stored_history(store, "n", step_s=60, sequence_length=60, horizon_s=600, now=NOW)
    utilization = np.array(stored.history.numeric["gpu_utilization"])
    assert (utilization[:15] == 95.0).all()  # read, minutes 59 to 45 ago
    assert (utilization[15:20] == 95.0).all()  # held over the first 5 steps of the gap
    assert np.isnan(utilization[20:]).all()  # then missing, as training reads it
    assert stored.history.power_watts[-1] == 500.0


def test_a_window_starts_after_the_last_outage_training_would_have_split_the_series_at(tmp_path):
    """Regression: power was held across any gap, however long: 100-102 W then an 8-minute outage then 300 W came
    as 100, 101, 102, 102 x 8, 300, a flat level and a jump no training window ever held (training splits the series
    at a gap longer than max_gap)."""
    minutes = [11, 10, 9, 0]  # readings 11-9 minutes ago, nothing for 8 minutes, then the newest
    with SqliteStore(tmp_path) as store:
        store.write([TelemetrySample(timestamp=NOW - timedelta(minutes=m, seconds=5), node_id="n", source="ipmi",
                                     power_watts=300.0 if m == 0 else 100.0 + 11 - m) for m in minutes])
        stored = stored_history(store, "n", step_s=60, sequence_length=12, horizon_s=600, now=NOW, max_gap_s=300)
    assert stored.history.power_watts == (300.0,) and stored.history.filled_steps == 0
    assert stored.measured == (True,)


def test_a_feature_is_held_as_long_as_the_models_own_max_gap(tmp_path):
    """A model trained with `max_gap: 10min` filled a feature over 10 steps; its stored window holds it as long."""
    with SqliteStore(tmp_path) as store:
        store.write([TelemetrySample(timestamp=NOW - timedelta(minutes=m, seconds=5), node_id="n", source="ipmi",
                                     power_watts=500.0) for m in range(60)])
        store.write([TelemetrySample(timestamp=NOW - timedelta(minutes=m, seconds=5), node_id="n", source="nvml",
                                     device_id="GPU-1", utilization=95.0) for m in range(45, 60)])
        stored = stored_history(store, "n", step_s=60, sequence_length=60, horizon_s=600, now=NOW, max_gap_s=600)
    utilization = np.array(stored.history.numeric["gpu_utilization"])
    assert (utilization[15:25] == 95.0).all()
    assert np.isnan(utilization[25:]).all()


def _request(power: tuple[float, ...], **numeric: tuple[float, ...]) -> PowerHistory:
    end = datetime(2026, 1, 5, 12, 59, 0, tzinfo=UTC)  # the client's last value: the 12:59 bin
    return PowerHistory(power_watts=power, numeric=numeric, end_time=end, horizon_s=600)


def test_a_short_client_history_is_completed_at_the_front_from_the_store(tmp_path):
    """The design's contract: a short power list with a node_id is filled from recent stored telemetry (it was
    padded by repeating its first value, and the window said so in window_coverage)."""
    with SqliteStore(tmp_path) as store:  # stored: 12:40 .. 12:57, minute bins, one 2-minute gap (12:50, 12:51)
        store.write([TelemetrySample(timestamp=datetime(2026, 1, 5, 12, m, 5, tzinfo=UTC), node_id="n",
                                     source="ipmi", power_watts=float(m)) for m in range(40, 58) if m not in (50, 51)])
        store.write([TelemetrySample(timestamp=datetime(2026, 1, 5, 12, m, 5, tzinfo=UTC), node_id="n",
                                     source="host", utilization=float(m)) for m in range(40, 58)])
        request = _request((1000.0, 1001.0, 1002.0), cpu_utilization=(7.0,))  # 12:57..12:59; cpu at 12:59
        filled, from_store = fill_from_store(store, "n", request, step_s=60, sequence_length=15)
        unknown, none = fill_from_store(store, "other", request, step_s=60, sequence_length=15)
        long_enough, zero = fill_from_store(store, "n", request, step_s=60, sequence_length=3)
    # 15 steps end at 12:59: 12:45 .. 12:56 from the store (12 steps), then the client's three
    assert from_store == 12 and filled.power_watts == (45.0, 46.0, 47.0, 48.0, 49.0, 49.0, 49.0, 52.0, 53.0, 54.0,
                                                       55.0, 56.0, 1000.0, 1001.0, 1002.0)
    assert filled.filled_steps == 2  # 12:50 and 12:51 held over the gap: not real history
    # the feature from the same first bin; its 12:58 bin held from 12:57 (within max_gap); its own 12:59 value kept
    assert filled.numeric["cpu_utilization"] == (*(float(m) for m in range(45, 58)), 57.0, 7.0)
    assert filled.end_time == request.end_time and filled.horizon_s == request.horizon_s
    assert (unknown, none) == (request, 0) and (long_enough, zero) == (request, 0)


def test_nothing_stored_before_the_client_history_leaves_it_as_it_is(tmp_path):
    with SqliteStore(tmp_path) as store:  # only after the client's first value
        store.write([TelemetrySample(timestamp=datetime(2026, 1, 5, 12, 58, 5, tzinfo=UTC), node_id="n",
                                     source="ipmi", power_watts=5.0)])
        request = _request((1000.0, 1001.0, 1002.0))
        assert fill_from_store(store, "n", request, step_s=60, sequence_length=15) == (request, 0)


def test_stored_power_that_stopped_long_before_the_client_history_is_not_held_up_to_it(tmp_path):
    """A node whose readings stopped 10 minutes before the client's first value: holding its last reading over
    those minutes would feed the model a frozen value as history."""
    with SqliteStore(tmp_path) as store:  # stored 12:40 .. 12:46; the client's values 12:57 .. 12:59
        store.write([TelemetrySample(timestamp=datetime(2026, 1, 5, 12, m, 5, tzinfo=UTC), node_id="n",
                                     source="ipmi", power_watts=float(m)) for m in range(40, 47)])
        request = _request((1000.0, 1001.0, 1002.0))
        assert fill_from_store(store, "n", request, step_s=60, sequence_length=15, max_gap_s=300) == (request, 0)
        filled, from_store = fill_from_store(store, "n", request, step_s=60, sequence_length=15, max_gap_s=900)
    assert from_store == 12 and filled.filled_steps == 10  # within a 15-minute max_gap: held, and counted so


def test_the_fill_starts_after_the_last_gap_training_would_have_split_at(tmp_path):
    with SqliteStore(tmp_path) as store:  # 12:45 .. 12:46, nothing for 7 minutes, then 12:54 .. 12:56
        store.write([TelemetrySample(timestamp=datetime(2026, 1, 5, 12, m, 5, tzinfo=UTC), node_id="n",
                                     source="ipmi", power_watts=float(m)) for m in (45, 46, 54, 55, 56)])
        request = _request((1000.0, 1001.0, 1002.0))
        filled, from_store = fill_from_store(store, "n", request, step_s=60, sequence_length=15, max_gap_s=300)
        assert from_store == 3 and filled.power_watts[:3] == (54.0, 55.0, 56.0) and filled.filled_steps == 0
        # the last stored reading exactly max_gap (5 steps) before the client's first value: still taken
        later = request.model_copy(update={"end_time": datetime(2026, 1, 5, 13, 4, 0, tzinfo=UTC)})
        held, held_steps = fill_from_store(store, "n", later, step_s=60, sequence_length=15, max_gap_s=300)
        assert held_steps == 8 and held.filled_steps == 5  # 12:54 .. 13:01, 12:57 .. 13:01 held
        too_late = request.model_copy(update={"end_time": datetime(2026, 1, 5, 13, 5, 0, tzinfo=UTC)})
        assert fill_from_store(store, "n", too_late, step_s=60, sequence_length=15, max_gap_s=300) == (too_late, 0)
