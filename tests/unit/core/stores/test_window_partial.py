"""The device-sum tier never reports a partial sum as node power (core.stores.window)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from core.stores.window import (
    DEVICE_BIN_COLUMNS,
    EXPECT_DEVICE_S,
    LATEST_COLUMNS,
    combine_latest,
    node_frame,
    to_ms,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
FULL = (("nvml", "0", 700.0), ("nvml", "1", 700.0), ("host", "node", 300.0))


def frame(bins: dict[int, tuple], step_s: int = 60) -> pd.DataFrame:
    """node_frame over bins 0..max(bins) from {bin index: ((source, device, watts), ...)}."""
    n_bins = max(bins) + 1
    rows = [(index * step_s + int(T0.timestamp()), source, device, watts, np.nan, np.nan, np.nan)
            for index, devices in bins.items() for source, device, watts in devices]
    device_bins = pd.DataFrame(rows, columns=list(DEVICE_BIN_COLUMNS))
    return node_frame(device_bins, "n1", T0, T0 + timedelta(seconds=n_bins * step_s), step_s)


def test_a_bin_missing_a_device_that_just_reported_is_no_reading_not_a_drop():
    host_only = (("host", "node", 300.0),)
    power = frame({0: FULL, 1: host_only, 2: FULL, 3: FULL[:2]})["power_watts"].tolist()
    assert power[0] == 1700.0 and power[2] == 1700.0
    assert np.isnan(power[1]) and np.isnan(power[3])


def test_a_device_gone_for_good_stops_being_expected_after_the_look_back():
    step_s = 60
    lookback = EXPECT_DEVICE_S // step_s
    bins = {0: FULL, **{i: FULL[:2] for i in range(1, lookback + 3)}}
    power = frame(bins, step_s)["power_watts"].to_numpy()
    assert np.isnan(power[1:lookback + 1]).all()
    assert (power[lookback + 1:] == 1400.0).all()


def test_a_long_step_still_expects_the_devices_of_the_bin_before():
    power = frame({0: FULL, 1: FULL[1:]}, step_s=3600)["power_watts"].tolist()
    assert power[0] == 1700.0 and np.isnan(power[1])


def test_the_wall_reading_and_the_first_bin_of_a_window_are_unchanged():
    ipmi = (("ipmi", "node", 1900.0),)
    power = frame({0: FULL[:1], 1: FULL + ipmi, 2: FULL[:1] + ipmi})["power_watts"].tolist()
    assert power == [700.0, 1900.0, 1900.0]  # bin 0 has no earlier bin in the window to expect from


def test_a_bin_without_the_bmc_that_just_reported_is_no_reading_not_the_lower_device_sum():
    """A flaky BMC backs off for minutes: its bins fell to the GPU sum (2,000 of 3,000 W), a false drop."""
    gpus, bmc = (("nvml", "0", 1000.0), ("nvml", "1", 1000.0)), (("ipmi", "node", 3000.0),)
    power = frame({0: gpus + bmc, 1: gpus + bmc, 2: gpus, 3: gpus + bmc})["power_watts"].tolist()
    assert power[0] == power[1] == power[3] == 3000.0 and np.isnan(power[2])
    psus = (("ipmi", "psu1", 1500.0), ("ipmi", "psu2", 1500.0))  # a BMC without a node sensor: its PSUs summed
    power = frame({0: gpus + psus, 1: gpus})["power_watts"].tolist()
    assert power[0] == 3000.0 and np.isnan(power[1])


def test_a_bmc_silent_past_the_look_back_leaves_the_device_sum():
    step_s = 60
    lookback = EXPECT_DEVICE_S // step_s
    gpus, bmc = (("nvml", "0", 1000.0),), (("ipmi", "node", 3000.0),)
    power = frame({0: gpus + bmc, **{i: gpus for i in range(1, lookback + 3)}}, step_s)["power_watts"].to_numpy()
    assert np.isnan(power[1:lookback + 1]).all() and (power[lookback + 1:] == 1000.0).all()


def test_an_empty_window_stays_empty():
    empty = pd.DataFrame(columns=list(DEVICE_BIN_COLUMNS))
    assert node_frame(empty, "n1", T0, T0 + timedelta(minutes=3), 60)["power_watts"].isna().all()


def latest(*readings: tuple) -> dict:
    """combine_latest of (node, source, device, seconds after T0, watts), read at T0 + 1 hour."""
    rows = [(node, source, device, int((T0 + timedelta(seconds=s)).timestamp() * 1000), watts)
            for node, source, device, s, watts in readings]
    found = combine_latest(pd.DataFrame(rows, columns=list(LATEST_COLUMNS)), now=T0 + timedelta(hours=1))
    return {item.node_id: item for item in found}


def test_latest_leaves_out_a_device_sum_missing_a_device_that_reported_recently():
    found = latest(("hung", "nvml", "0", 0, 700.0), ("hung", "nvml", "1", 300, 700.0),
                   ("hung", "host", "node", 300, 300.0),
                   ("fine", "nvml", "0", 290, 700.0), ("fine", "host", "node", 300, 300.0))
    assert "hung" not in found  # GPU 0's last reading is 5 minutes older: the sum would drop 700 W
    assert found["fine"].power_watts == 1000.0


def test_latest_forgets_a_device_after_the_look_back_and_keeps_higher_tiers():
    found = latest(("gone", "nvml", "0", 0, 700.0), ("gone", "host", "node", EXPECT_DEVICE_S + 1, 300.0),
                   ("bmc", "nvml", "0", 0, 700.0), ("bmc", "host", "node", 300, 300.0),
                   ("bmc", "ipmi", "node", 290, 1900.0))
    assert found["gone"].power_watts == 300.0
    assert found["bmc"].power_watts == 1900.0


def test_latest_keeps_the_bmc_s_reading_while_it_is_expected_however_old():
    """Its last reading 4 minutes older than the GPUs': the GPU sum (2,000 of 3,000 W) was the node's latest."""
    found = latest(("flaky", "ipmi", "node", 60, 3000.0), ("flaky", "nvml", "0", 300, 1000.0),
                   ("flaky", "nvml", "1", 300, 1000.0),
                   ("gone", "ipmi", "node", 0, 3000.0), ("gone", "nvml", "0", EXPECT_DEVICE_S + 1, 1000.0))
    assert found["flaky"].power_watts == 3000.0
    assert found["flaky"].timestamp == T0 + timedelta(seconds=60)  # its age shows how old it is
    assert found["gone"].power_watts == 1000.0  # silent past the look-back: no longer expected


def test_the_host_s_per_package_rows_are_parts_of_its_total_not_more_power():
    """HostSource(per_package=True) writes the RAPL total ("node") and each package: both were summed (400 W for
    200 W of CPU)."""
    now = datetime.now(UTC)
    readings = pd.DataFrame([("n", "host", device, to_ms(now), watts)
                             for device, watts in (("node", 200.0), ("package-0", 120.0), ("package-1", 80.0))],
                            columns=list(LATEST_COLUMNS))
    assert [item.power_watts for item in combine_latest(readings, now)] == [200.0]


def test_a_bmc_sum_of_supplies_missing_one_is_a_gap_not_a_drop(tmp_path):
    """Regression: with per-supply IPMI readings (no "node" total), a bin or a latest reading missing one supply
    summed the others: half the node's power, read as a drop (the device sums had the gap rule, the BMC's not)."""
    from datetime import UTC, datetime, timedelta

    import numpy as np

    from core.stores.sqlite import SqliteStore
    from core.telemetry import TelemetrySample

    store = SqliteStore(tmp_path)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)

    def supply(minute: int, psu: str) -> TelemetrySample:
        return TelemetrySample(timestamp=start + timedelta(minutes=minute, seconds=5), node_id="n", source="ipmi",
                               device_id=psu, power_watts=500.0)

    store.write([supply(m, "psu2") for m in range(10)] + [supply(m, "psu1") for m in range(8) if m != 4])
    power = store.window("n", start, start + timedelta(minutes=10), 60)["power_watts"].to_numpy()
    assert power[:4].tolist() == [1000.0] * 4 and np.isnan(power[4]) and power[5:8].tolist() == [1000.0] * 3
    assert np.isnan(power[8:]).all()  # psu1 silent since minute 7: a gap while it is still expected
    assert store.latest("n") == []  # no power rather than half of it
    store.close()
