"""SqliteStore (embedded default), the shared window rule, and the store factory."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.stores import create_store
from core.stores.influx import InfluxStore
from core.stores.prometheus import PrometheusStore
from core.stores.sqlite import SqliteStore
from core.stores.window import replay_samples
from core.telemetry import TelemetrySample
from core.telemetry_csv import CANONICAL_COLUMNS, validate_telemetry
from training.power.features import resample

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sample(seconds: float, source: str, device: str = "node", node: str = "n1", **fields) -> TelemetrySample:
    return TelemetrySample(timestamp=at(seconds), node_id=node, source=source, device_id=device, **fields)


@pytest.fixture
def store(tmp_path):
    with SqliteStore(tmp_path / "telemetry") as opened:
        yield opened


def test_writing_the_same_samples_twice_stores_them_once(store):
    batch = [sample(i, "ipmi", power_watts=400 + i) for i in range(100)]
    assert store.write(batch) == 100
    assert store.write(batch) == 100
    assert store.write(batch[:10]) == 10
    assert store._conn.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0] == 100
    store.write([sample(0, "ipmi", power_watts=999)])  # same key, corrected value: the last write wins
    assert store.window("n1", at(0), at(1), 1)["power_watts"].tolist() == [999.0]


def test_window_builds_canonical_rows_by_the_documented_rule(store):
    rows = []
    for node in ("n1", "no-bmc"):
        for s in (0, 30, 60, 90):
            rows += [
                sample(s, "nvml", "0", node, power_watts=200, utilization=60, temperature=65),
                sample(s, "nvml", "1", node, power_watts=100, utilization=20, temperature=71),
                sample(s, "npu", "0", node, power_watts=80, utilization=30, temperature=50),
                sample(s, "xpu", "0", node, power_watts=70, utilization=50),
                sample(s, "host", "node", node, power_watts=50, utilization=25, memory_usage=40),
            ]
    rows += [sample(0, "ipmi", power_watts=700), sample(30, "ipmi", power_watts=720)]  # n1's BMC only in bin 0
    store.write(rows)
    frame = store.window("n1", at(0), at(180), 60)
    assert list(frame.columns) == list(CANONICAL_COLUMNS)
    assert frame["timestamp"].tolist() == [pd.Timestamp(at(s)) for s in (0, 60, 120)]
    first, second, empty = frame.to_dict("records")
    assert first["power_watts"] == 710.0  # the wall reading (mean within the bin)
    assert np.isnan(second["power_watts"])  # the BMC reported a bin before: a gap, not the lower devices' sum
    assert store.window("no-bmc", at(0), at(120), 60)["power_watts"].tolist() == [500.0] * 2  # the devices' sum
    assert first["gpu_utilization"] == 40.0 and first["npu_utilization"] == 40.0
    assert first["cpu_utilization"] == 25.0 and first["memory_usage"] == 40.0
    assert first["temperature"] == 71.0  # the hottest device
    assert first["node_id"] == "n1" and np.isnan(first["workload_type"])
    assert all(np.isnan(v) for k, v in empty.items() if k not in ("timestamp", "node_id"))


def test_a_numpy_integer_step_reads_the_same_window(store):
    """sqlite3 bound np.int64 as NULL: an all-NaN window, silently."""
    store.write([sample(5, "ipmi", power_watts=100)])
    assert store.window("n1", at(0), at(60), np.int64(60))["power_watts"].tolist() == [100.0]


def test_per_psu_bmc_sensors_are_summed_and_beat_device_sums(store):
    store.write([sample(5, "ipmi", "psu1", power_watts=300), sample(5, "ipmi", "psu2", power_watts=310),
                 sample(5, "nvml", "0", power_watts=250)])
    assert store.window("n1", at(0), at(60), 60)["power_watts"].tolist() == [610.0]


def test_window_bins_align_to_the_epoch_and_exclude_the_end(store):
    store.write([sample(s, "ipmi", power_watts=100 + s) for s in range(0, 300, 10)])
    frame = store.window("n1", at(45), at(150), 60)  # bins 0 (from 45 s on), 60, 120 (until 150 s)
    assert frame["timestamp"].tolist() == [pd.Timestamp(at(s)) for s in (0, 60, 120)]
    assert frame["power_watts"].tolist() == [150.0, 185.0, 230.0]
    assert store.window("other", at(0), at(120), 60)["power_watts"].isna().all()


def test_window_feeds_the_training_feature_pipeline(store):
    store.write([sample(s, "ipmi", power_watts=300 + s % 7) for s in range(0, 1800, 15) if not 600 <= s < 900])
    frame = store.window("n1", at(0), at(1800), 60)
    assert frame["power_watts"].isna().sum() == 5  # the 5-minute hole stays missing
    segments = resample(frame, step_s=60, max_gap_s=120)
    assert [len(s) for s in segments] == [10, 15]
    validate_telemetry(frame.dropna(subset=["power_watts"]))


def test_replay_samples_map_back_to_their_canonical_fields(store):
    row = {"power_watts": 512.5, "cpu_utilization": 33.0, "memory_usage": 61.0, "gpu_utilization": 88.0,
           "npu_utilization": float("nan"), "temperature": 70.5, "workload_type": "training"}
    store.write(replay_samples(at(0), "n9", row) + replay_samples(at(60), "n9", {"power_watts": 100.0}))
    frame = store.window("n9", at(0), at(120), 60)
    first = frame.iloc[0]
    for column in ("power_watts", "cpu_utilization", "memory_usage", "gpu_utilization", "temperature"):
        assert first[column] == row[column], column
    assert np.isnan(first["npu_utilization"])
    assert frame.iloc[1]["power_watts"] == 100.0 and np.isnan(frame.iloc[1]["gpu_utilization"])


def test_latest_prefers_the_wall_reading_and_reports_age(store):
    now = datetime.now(UTC).replace(microsecond=0)
    store.write([
        TelemetrySample(timestamp=now - timedelta(seconds=10), node_id="a", source="ipmi", power_watts=650),
        TelemetrySample(timestamp=now - timedelta(seconds=5), node_id="a", source="nvml", device_id="0",
                        power_watts=300),
        TelemetrySample(timestamp=now - timedelta(seconds=4), node_id="b", source="nvml", device_id="0",
                        power_watts=300),
        TelemetrySample(timestamp=now - timedelta(seconds=8), node_id="b", source="nvml", device_id="1",
                        power_watts=200),
        TelemetrySample(timestamp=now - timedelta(hours=2), node_id="b", source="ipmi", power_watts=999),
        TelemetrySample(timestamp=now - timedelta(seconds=1), node_id="b", source="host", utilization=5),
    ])
    latest = {item.node_id: item for item in store.latest()}
    assert latest["a"].power_watts == 650 and latest["a"].timestamp == now - timedelta(seconds=10)
    assert latest["b"].power_watts == 500  # the 2-hour-old BMC reading is stale: fresh devices summed
    assert latest["b"].timestamp == now - timedelta(seconds=8)  # oldest reading used
    assert 8 <= latest["b"].age_s < 60
    assert [item.node_id for item in store.latest("b")] == ["b"]
    assert store.latest("nobody") == []
    assert store.nodes() == ["a", "b"]
    # regression: `since` was ignored, so nodes gone within the retention counted towards a retraining's read
    store.write([TelemetrySample(timestamp=now - timedelta(days=20), node_id="gone", source="ipmi", power_watts=1)])
    assert store.nodes() == ["a", "b", "gone"] and store.nodes(now - timedelta(days=14)) == ["a", "b"]
    assert store.nodes(now - timedelta(seconds=2)) == ["b"]  # a's newest row is 5 s old, b's 1 s


def test_latest_leaves_out_a_device_sum_while_a_device_that_reported_minutes_ago_is_silent(store):
    """A hung NVML: the host's RAPL alone (300 W) was the node's latest power, read as a real drop from 1,700 W."""
    now = datetime.now(UTC).replace(microsecond=0)
    store.write([
        *(TelemetrySample(timestamp=now - timedelta(minutes=3), node_id="g", source="nvml", device_id=str(gpu),
                          power_watts=700) for gpu in (0, 1)),
        TelemetrySample(timestamp=now - timedelta(minutes=3), node_id="g", source="host", power_watts=300),
        TelemetrySample(timestamp=now - timedelta(seconds=2), node_id="g", source="host", power_watts=310),
        TelemetrySample(timestamp=now - timedelta(minutes=30), node_id="h", source="nvml", device_id="0",
                        power_watts=700),  # gone for good: no longer expected
        TelemetrySample(timestamp=now - timedelta(seconds=2), node_id="h", source="host", power_watts=320),
    ])
    assert {item.node_id: item.power_watts for item in store.latest()} == {"h": 320}


def test_a_node_whose_power_feed_stopped_shows_its_last_power_stale_not_gone(store):
    """The BMC stopped; the host collector still writes CPU utilization (no power) every few seconds."""
    now = datetime.now(UTC).replace(microsecond=0)
    store.write([TelemetrySample(timestamp=now - timedelta(minutes=3), node_id="c", source="ipmi", power_watts=640),
                 *(TelemetrySample(timestamp=now - timedelta(seconds=s), node_id="c", source="host", utilization=9)
                   for s in range(1, 120, 5))])
    (node,) = store.latest("c")
    assert node.power_watts == 640 and node.age_s >= 180
    store.write([TelemetrySample(timestamp=now - timedelta(seconds=s), node_id="vm", source="host", utilization=9)
                 for s in range(1, 120, 5)])
    assert store.latest("vm") == []  # a node that never reports power has no latest power


def test_concurrent_writers_and_readers_share_one_store(store):
    errors = []

    def writer(node: str) -> None:
        try:
            for start in range(0, 600, 60):
                store.write([sample(s, "ipmi", node=node, power_watts=1.0) for s in range(start, start + 60)])
                store.window(node, at(0), at(600), 60)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"n{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store._conn.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0] == 4 * 600
    assert store.nodes() == ["n0", "n1", "n2", "n3"]


def test_data_survives_reopening_and_the_journal_is_wal(tmp_path):
    with SqliteStore(tmp_path) as first:
        first.write([sample(0, "ipmi", power_watts=321)])
        assert first._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with SqliteStore(tmp_path) as second:
        assert second.window("n1", at(0), at(60), 60)["power_watts"].tolist() == [321.0]


@pytest.mark.parametrize(("start", "end", "step", "message"), [
    (at(0), at(60), 0, "step_s"),
    (at(60), at(0), 60, "after start"),
    (datetime(2025, 3, 1), at(60), 60, "time zone"),
    (at(0), at(86400 * 30), 1, "bins"),
])
def test_window_refuses_bad_arguments(store, start, end, step, message):
    with pytest.raises(ValueError, match=message):
        store.window("n1", start, end, step)


def test_factory_defaults_to_sqlite_under_the_data_dir(tmp_path):
    with create_store({"TELEMETRY_DATA_DIR": str(tmp_path / "tele")}) as chosen:
        assert isinstance(chosen, SqliteStore)
        assert chosen.path.parent == tmp_path / "tele"


def test_factory_picks_influx_and_never_shows_the_token(caplog):
    settings = {"INFLUX_HOST": "influx.example", "INFLUX_TOKEN": "s3cr3t-token", "INFLUX_ORG": "o",
                "INFLUX_BUCKET": "b", "PROMETHEUS_URL": "http://prom:9090"}
    with caplog.at_level(logging.DEBUG):
        chosen = create_store(settings)
    assert isinstance(chosen, InfluxStore)
    assert chosen.url == "http://influx.example:8086"
    assert "s3cr3t-token" not in repr(chosen) and "s3cr3t-token" not in caplog.text
    chosen.close()
    assert create_store({**settings, "INFLUX_HOST": "https://influx:9999"}).url == "https://influx:9999"
    with pytest.raises(ValueError, match="INFLUX_BUCKET"):
        create_store({"INFLUX_HOST": "influx", "INFLUX_ORG": "o"})


def test_factory_picks_read_only_prometheus_with_overrides():
    chosen = create_store({"PROMETHEUS_URL": "http://prom:9090/",
                           "PROMETHEUS_METRICS": '{"node_power": "node_power_watts"}'})
    assert isinstance(chosen, PrometheusStore) and chosen.read_only
    assert chosen.metrics["node_power"] == "node_power_watts" and chosen.url == "http://prom:9090"
    with pytest.raises(ValueError, match="PROMETHEUS_NODE_LABELS"):
        create_store({"PROMETHEUS_URL": "http://prom:9090", "PROMETHEUS_NODE_LABELS": "[1]"})
    with pytest.raises(ValueError, match="unknown Prometheus metric"):
        create_store({"PROMETHEUS_URL": "http://prom:9090", "PROMETHEUS_METRICS": '{"watts": "x"}'})


def test_a_store_opened_only_to_read_deletes_no_expired_rows(tmp_path, monkeypatch):
    """Regression: `train_lstm --from-store` without Ray opened the service's SQLite file with the environment's
    retention (30 days by default) and deleted the rows the service, set to keep 90 days, still kept."""
    folder = tmp_path / "telemetry"
    old = datetime.now(UTC) - timedelta(days=60)
    with SqliteStore(folder) as writer:
        writer.write([TelemetrySample(timestamp=old, node_id="n1", source="ipmi", device_id="node",
                                      power_watts=500.0)])
    from core.stores import frame

    monkeypatch.setenv("TELEMETRY_DATA_DIR", str(folder))
    monkeypatch.setenv("TELEMETRY_RETENTION", "30d")
    monkeypatch.setattr("ray.is_initialized", lambda: False)  # a command line without Ray (the suite's Ray runs)
    with frame.open_store() as reader:
        assert isinstance(reader, SqliteStore) and reader.retention_s is None
    with SqliteStore(folder) as check:
        window = check.window("n1", old - timedelta(minutes=1), old + timedelta(minutes=1), 60)
        assert window["power_watts"].dropna().tolist() == [500.0]  # still there
    with create_store({"TELEMETRY_DATA_DIR": str(folder), "TELEMETRY_RETENTION": "30d"}) as writer:
        assert writer.retention_s == 30 * 86400  # the store actor's, which writes: it deletes, as before


def test_a_damaged_store_file_is_refused_naming_it_without_a_traceback(tmp_path):
    """Regression: `train_lstm --from-store` printed sqlite3's traceback ("file is not a database")."""
    from core.stores.base import StoreUnavailable

    folder = tmp_path / "telemetry"
    folder.mkdir()
    (folder / "telemetry.sqlite3").write_bytes(b"not a database" * 512)
    with pytest.raises(StoreUnavailable, match=r"the embedded telemetry store .*telemetry.sqlite3 cannot be opened: "
                                               r"file is not a database \(a damaged file: move it aside"):
        SqliteStore(folder)
    (folder / "telemetry.sqlite3").unlink()
    (folder / "telemetry.sqlite3").mkdir()  # no file can be opened there: no advice to move anything
    with pytest.raises(StoreUnavailable, match=r"cannot be opened: unable to open database file$"):
        SqliteStore(folder)


def test_a_window_starting_with_microseconds_leaves_out_the_rows_before_it(store):
    """Regression: the start was rounded down to the millisecond, so a row stored at .000 came back for a window
    starting at .0005 (InfluxDB, filtering on the full time, leaves it out)."""
    store.write([sample(0, "ipmi", power_watts=100.0), sample(30, "ipmi", power_watts=200.0)])
    late_start = store.window("n1", at(0) + timedelta(microseconds=500), at(120), 60)
    assert late_start["power_watts"].dropna().tolist() == [200.0]
    assert store.window("n1", at(0), at(120), 60)["power_watts"].dropna().tolist() == [150.0]


def test_a_judged_window_reads_the_look_back_before_it_so_its_first_bin_is_a_gap_not_a_drop(store):
    """A window's own look-back starts at its first bin: a one-bin read of a bin the BMC missed gave the GPU sum."""
    from core.stores.window import judged_window

    store.write([sample(60 * m, "nvml", "0", power_watts=300.0) for m in range(-5, 3)]
                + [sample(60 * m, "ipmi", power_watts=900.0) for m in range(-5, 3) if m != 1])
    assert store.window("n1", at(60), at(120), 60)["power_watts"].tolist() == [300.0]
    judged = judged_window(store, "n1", at(60), at(180), 60)
    assert judged["timestamp"].tolist() == [pd.Timestamp(at(60)), pd.Timestamp(at(120))]
    assert np.isnan(judged["power_watts"][0]) and judged["power_watts"][1] == 900.0
