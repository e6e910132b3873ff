"""PrometheusStore against a real Prometheus (Debian 2.42) fed through its remote-write receiver.

The series imitate what Kepler 0.7 (joules counters, label `instance`), current Kepler (`kepler_platform_watts`
per BMC power-control entry and `kepler_node_cpu_joules_total` per RAPL zone, label `node_name`),
dcgm-exporter (GPU gauges, label `Hostname`) and node-exporter (CPU seconds counters, memory gauges) expose,
15 s apart over the last 20 minutes. No Ray.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from core.stores.base import ReadOnlyStore, StoreUnavailable
from core.stores.prometheus import PrometheusStore
from core.telemetry_csv import CANONICAL_COLUMNS
from tests.factories import free_port
from tests.servers.prometheus import Prometheus

pytestmark = pytest.mark.integration

SCRAPE_MS = 15_000
POINTS = 80  # 20 minutes
GAP = range(24, 44)  # gpu-2's exporter is down for these 5 minutes


def gauge(labels: dict, value: float, now_ms: int, skip=()) -> tuple[dict, list]:
    return labels, [(now_ms - (POINTS - 1 - k) * SCRAPE_MS, value) for k in range(POINTS) if k not in skip]


def counter(labels: dict, per_second: float, now_ms: int) -> tuple[dict, list]:
    return labels, [(now_ms - (POINTS - 1 - k) * SCRAPE_MS, 1e6 + per_second * k * SCRAPE_MS / 1000)
                    for k in range(POINTS)]


def platform(node: str, control_id: str, control_name: str) -> dict:
    return {"__name__": "kepler_platform_watts", "node_name": node, "source": "redfish", "bmc_id": f"bmc-{node}",
            "chassis_id": "System.Embedded.1", "power_control_id": control_id, "power_control_name": control_name}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """A fresh Prometheus holding the exporters' series; yields (server, now_ms of the last sample)."""
    server = Prometheus(tmp_path_factory.mktemp("prometheus")).start()
    now_ms = int(time.time() * 1000)
    series = [
        counter({"__name__": "kepler_node_platform_joules_total", "instance": "gpu-1", "mode": "dynamic"}, 500, now_ms),
        counter({"__name__": "kepler_node_platform_joules_total", "instance": "gpu-1", "mode": "idle"}, 100, now_ms),
        gauge({"__name__": "DCGM_FI_DEV_POWER_USAGE", "Hostname": "gpu-1", "gpu": "0"}, 250, now_ms),
        gauge({"__name__": "DCGM_FI_DEV_GPU_UTIL", "Hostname": "gpu-1", "gpu": "0"}, 80, now_ms),
        gauge({"__name__": "DCGM_FI_DEV_GPU_UTIL", "Hostname": "gpu-1", "gpu": "1"}, 40, now_ms),
        gauge({"__name__": "DCGM_FI_DEV_GPU_TEMP", "Hostname": "gpu-1", "gpu": "0"}, 60, now_ms),
        gauge({"__name__": "DCGM_FI_DEV_GPU_TEMP", "Hostname": "gpu-1", "gpu": "1"}, 72, now_ms),
        counter({"__name__": "node_cpu_seconds_total", "instance": "gpu-1", "cpu": "0", "mode": "idle"}, 0.75, now_ms),
        counter({"__name__": "node_cpu_seconds_total", "instance": "gpu-1", "cpu": "1", "mode": "idle"}, 0.65, now_ms),
        counter({"__name__": "node_cpu_seconds_total", "instance": "gpu-1", "cpu": "0", "mode": "user"}, 0.25, now_ms),
        gauge({"__name__": "node_memory_MemAvailable_bytes", "instance": "gpu-1"}, 24e9, now_ms),
        gauge({"__name__": "node_memory_MemTotal_bytes", "instance": "gpu-1"}, 32e9, now_ms),
        # gpu-2: no Kepler, only dcgm-exporter, which misses 5 minutes
        gauge({"__name__": "DCGM_FI_DEV_POWER_USAGE", "Hostname": "gpu-2", "gpu": "0"}, 300, now_ms, GAP),
        gauge({"__name__": "DCGM_FI_DEV_POWER_USAGE", "Hostname": "gpu-2", "gpu": "1"}, 150, now_ms, GAP),
        gauge({"__name__": "DCGM_FI_DEV_GPU_UTIL", "Hostname": "gpu-2", "gpu": "0"}, 10, now_ms, GAP),
        # part-1: no node power; its GPU exporter misses 5 minutes while Kepler 0.7's CPU counter goes on
        gauge({"__name__": "DCGM_FI_DEV_POWER_USAGE", "Hostname": "part-1", "gpu": "0"}, 300, now_ms, GAP),
        counter({"__name__": "kepler_node_package_joules_total", "instance": "part-1"}, 100, now_ms),
        # dup-1: one GPU scraped by two jobs (a PodMonitor and a ServiceMonitor), each its own instance address
        *[gauge({"__name__": "DCGM_FI_DEV_POWER_USAGE", "Hostname": "dup-1", "gpu": "0", "UUID": "GPU-e",
                 "instance": address, "job": job}, 250, now_ms)
          for address, job in (("10.0.0.1:9400", "dcgm"), ("10.0.0.2:9400", "monitoring/dcgm"))],
        # a site that exports wall power as a gauge under its own names
        gauge({"__name__": "node_power_watts", "node": "gpu-3"}, 812.5, now_ms),
        # current Kepler: k-1 has Redfish platform power (the server and its CPU sub-system), k-2 only RAPL
        # zones and GPUs (dcgm-exporter's series relabelled with the node's name)
        gauge(platform("k-1", "PC1", "Server Power Control"), 450.5, now_ms),
        gauge(platform("k-1", "PC2", "CPU Sub-system Power"), 85.2, now_ms),
        counter({"__name__": "kepler_node_cpu_joules_total", "node_name": "k-1", "zone": "package"}, 100, now_ms),
        *[counter({"__name__": "kepler_node_cpu_joules_total", "node_name": "k-2", "zone": zone,
                   "path": "/sys/class/powercap/intel-rapl:0"}, watts, now_ms)
          for zone, watts in (("package", 120), ("core", 90), ("dram", 30))],
        gauge({"__name__": "DCGM_FI_DEV_POWER_USAGE", "node_name": "k-2", "gpu": "0"}, 200, now_ms),
        # mig-1: GPU 0 split into two MIG instances, each repeating the whole GPU's power, the second in a pod;
        # its idle CPU counter runs faster than wall time (a rate over 1, as node-exporter's can)
        *[gauge({"__name__": "DCGM_FI_DEV_POWER_USAGE", "Hostname": "mig-1", "gpu": "0", "UUID": "GPU-a",
                 "GPU_I_ID": instance, **extra}, 250, now_ms)
          for instance, extra in (("1", {}), ("2", {"pod": "train-0", "namespace": "ml", "container": "c"}))],
        gauge({"__name__": "DCGM_FI_DEV_POWER_USAGE", "Hostname": "mig-1", "gpu": "1", "UUID": "GPU-b"}, 100, now_ms),
        counter({"__name__": "node_cpu_seconds_total", "instance": "mig-1", "cpu": "0", "mode": "idle"}, 1.2, now_ms),
        # cmig-1: the same MIG layout, its GPU power exported as a joules counter under a site's own name
        *[counter({"__name__": "gpu_energy_joules_total", "Hostname": "cmig-1", "gpu": "0", "UUID": "GPU-c",
                   "GPU_I_ID": instance, **extra}, 250, now_ms)
          for instance, extra in (("1", {}), ("2", {"pod": "train-0", "namespace": "ml", "container": "c"}))],
        counter({"__name__": "gpu_energy_joules_total", "Hostname": "cmig-1", "gpu": "1", "UUID": "GPU-d"}, 100,
                now_ms),
    ]
    assert server.remote_write(series) == 204
    yield server, now_ms
    server.stop()


def window_span(now_ms: int, minutes_back: int, minutes: int) -> tuple[datetime, datetime]:
    start = datetime.fromtimestamp(now_ms / 1000, tz=UTC).replace(second=0, microsecond=0)
    start -= timedelta(minutes=minutes_back)
    return start, start + timedelta(minutes=minutes)


def test_window_from_kepler_dcgm_and_node_exporter(prometheus):
    server, now_ms = prometheus
    store = PrometheusStore(server.url, kepler="0.7", min_rate_window_s=60)
    start, end = window_span(now_ms, 15, 10)
    frame = store.window("gpu-1", start, end, 60)
    assert list(frame.columns) == list(CANONICAL_COLUMNS)
    assert len(frame) == 10 and frame["timestamp"].iloc[0] == start
    assert frame["power_watts"].tolist() == pytest.approx([600.0] * 10)  # rate of Kepler's joules, summed
    assert frame["gpu_utilization"].tolist() == pytest.approx([60.0] * 10)
    assert frame["temperature"].tolist() == pytest.approx([72.0] * 10)
    assert frame["cpu_utilization"].tolist() == pytest.approx([30.0] * 10)  # 1 - mean idle share (0.75, 0.65)
    assert frame["memory_usage"].tolist() == pytest.approx([25.0] * 10)
    assert frame["npu_utilization"].isna().all() and frame["workload_type"].isna().all()


def test_window_falls_back_to_gpu_power_and_keeps_gaps_missing(prometheus):
    server, now_ms = prometheus
    store = PrometheusStore(server.url, kepler="0.7", min_rate_window_s=60)
    start, end = window_span(now_ms, 18, 16)
    frame = store.window("gpu-2", start, end, 60)
    missing = frame["power_watts"].isna()
    assert 3 <= missing.sum() <= 5, frame  # the exporter's 5-minute hole (bin edges fall inside it)
    assert frame.loc[~missing, "power_watts"].tolist() == pytest.approx([450.0] * int((~missing).sum()))
    assert frame["cpu_utilization"].isna().all()  # no node-exporter for this node
    assert frame.loc[~missing, "gpu_utilization"].tolist() == pytest.approx([10.0] * int((~missing).sum()))


def test_a_device_missing_from_a_bin_is_a_gap_not_a_drop_to_the_other_devices_sum(prometheus):
    """Regression: the GPUs' power missing from a bin (a missed scrape, an exporter restart) left the CPU's alone as
    the node's power, a drop from 400 to 100 W the forecaster and the controller took for real."""
    server, now_ms = prometheus
    store = PrometheusStore(server.url, kepler="0.7", min_rate_window_s=60)
    start, end = window_span(now_ms, 18, 16)
    frame = store.window("part-1", start, end, 60)
    missing = frame["power_watts"].isna()
    assert 3 <= missing.sum() <= 5, frame  # the GPU exporter's hole, not 100 W
    assert frame.loc[~missing, "power_watts"].tolist() == pytest.approx([400.0] * int((~missing).sum()), rel=0.02)


def test_a_gpu_scraped_twice_counts_once(prometheus):
    """Regression: the series of two scrape jobs (or of an exporter before and after a restart, with a new pod
    address) were summed: the GPU's power doubled."""
    server, now_ms = prometheus
    store = PrometheusStore(server.url, kepler="0.7", min_rate_window_s=60)
    start, end = window_span(now_ms, 15, 10)
    assert store.window("dup-1", start, end, 60)["power_watts"].tolist() == pytest.approx([250.0] * 10)


def test_mig_instances_count_their_gpu_once_and_percentages_stay_in_range(prometheus):
    """Regression: every MIG instance's series carries its whole GPU's power, so summing series counted GPU 0
    twice (600 W for 350 W); an idle rate over 1 gave a negative CPU utilization that retraining refused."""
    server, now_ms = prometheus
    store = PrometheusStore(server.url, kepler="0.7", min_rate_window_s=60)
    start, end = window_span(now_ms, 15, 10)
    frame = store.window("mig-1", start, end, 60)
    assert frame["power_watts"].tolist() == pytest.approx([350.0] * 10)
    assert frame["cpu_utilization"].tolist() == pytest.approx([0.0] * 10)
    assert [(i.node_id, i.power_watts) for i in store.latest("mig-1")] == [("mig-1", pytest.approx(350.0))]


def test_mig_instances_of_a_gpu_energy_counter_count_their_gpu_once(prometheus):
    """A GPU power read as the rate of a joules counter is merged per GPU too, before the node's sum."""
    server, now_ms = prometheus
    store = PrometheusStore(server.url, kepler="0.7", metric_names={"gpu_power": "gpu_energy_joules_total"},
                            min_rate_window_s=60)
    start, end = window_span(now_ms, 15, 10)
    assert store.window("cmig-1", start, end, 60)["power_watts"].tolist() == pytest.approx([350.0] * 10)
    assert [(i.node_id, i.power_watts) for i in store.latest("cmig-1")] == [("cmig-1", pytest.approx(350.0))]


def test_latest_nodes_and_configurable_names(prometheus):
    server, now_ms = prometheus
    store = PrometheusStore(server.url, kepler="0.7", min_rate_window_s=60)
    latest = {item.node_id: item for item in store.latest()}
    assert set(latest) == {"gpu-1", "gpu-2", "mig-1", "part-1", "dup-1"}
    assert latest["gpu-1"].power_watts == pytest.approx(600.0)
    assert latest["gpu-2"].power_watts == pytest.approx(450.0)
    assert latest["dup-1"].power_watts == pytest.approx(250.0)  # scraped twice, counted once
    assert latest["gpu-1"].timestamp == datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    assert 0 <= latest["gpu-1"].age_s < 60
    assert store.nodes() == ["dup-1", "gpu-1", "gpu-2", "mig-1", "part-1"]

    custom = PrometheusStore(server.url, metric_names={"node_power": "node_power_watts"},
                             node_labels={"node_power": "node"})
    start, end = window_span(now_ms, 10, 5)
    assert custom.window("gpu-3", start, end, 60)["power_watts"].tolist() == pytest.approx([812.5] * 5)
    assert [(i.node_id, i.power_watts) for i in custom.latest("gpu-3")] == [("gpu-3", 812.5)]
    assert "gpu-3" in custom.nodes()


def test_current_kepler_names_by_default(prometheus):
    server, now_ms = prometheus
    store = PrometheusStore(server.url, node_labels={"gpu_power": "node_name"}, min_rate_window_s=60)
    start, end = window_span(now_ms, 15, 10)
    # the BMC's whole-server entry, not the sum with its CPU sub-system; RAPL is not added to it
    assert store.window("k-1", start, end, 60)["power_watts"].tolist() == pytest.approx([450.5] * 10)
    # no platform power: the device sum, CPU package (not its core and DRAM zones) plus the GPU
    assert store.window("k-2", start, end, 60)["power_watts"].tolist() == pytest.approx([320.0] * 10)
    assert {i.node_id: i.power_watts for i in store.latest()} == pytest.approx({"k-1": 450.5, "k-2": 320.0})
    assert store.nodes() == ["k-1", "k-2"]


def test_long_windows_are_split_under_the_point_limit(prometheus):
    server, now_ms = prometheus
    store = PrometheusStore(server.url, kepler="0.7", min_rate_window_s=60)
    start, _ = window_span(now_ms, 15, 0)
    frame = store.window("gpu-1", start - timedelta(days=8), start + timedelta(minutes=10), 60)  # 11,530 bins
    assert len(frame) == 8 * 1440 + 10
    assert frame["power_watts"].iloc[-10:].tolist() == pytest.approx([600.0] * 10)
    assert frame["power_watts"].iloc[:-21].isna().all()  # nothing before the 20 minutes of data
    # The 20 minutes of samples overlap the window by 825-885 s, depending on where in its minute the fixture
    # ran, and a rate needs a minute of counter samples first: 12 to 16 minute bins carry power.
    assert 12 <= frame["power_watts"].notna().sum() <= 16


def test_prometheus_store_is_read_only_and_reports_errors(prometheus):
    server, _ = prometheus
    store = PrometheusStore(server.url)
    with pytest.raises(ReadOnlyStore, match="read-only"):
        store.write([])
    bad = PrometheusStore(server.url, metric_names={"gpu_power": "bad metric name"})
    with pytest.raises(StoreUnavailable, match="HTTP 400"):
        bad.window("gpu-1", *window_span(int(time.time() * 1000), 5, 5), 60)
    with pytest.raises(StoreUnavailable, match="unreachable"):
        PrometheusStore(f"http://127.0.0.1:{free_port()}").nodes()


def test_latest_power_missing_a_part_that_reported_recently_is_a_gap_not_the_other_parts(tmp_path):
    """Regression: `latest()` summed whatever reported within Prometheus' 5-minute look-back, so a node whose meter
    (or GPU exporter) stopped 7 minutes ago read as its devices' (or CPU's) lower power, which the controller took
    for a real drop."""
    server = Prometheus(tmp_path).start()
    try:
        now_ms = int(time.time() * 1000)
        stopped, gone = range(POINTS - 28, POINTS), range(POINTS - 60, POINTS)  # 7 and 15 minutes ago

        def watts(metric: str, node: str, value: float, skip=()) -> tuple[dict, list]:
            return gauge({"__name__": metric, "node": node}, value, now_ms, skip)

        assert server.remote_write([
            watts("meter_watts", "steady", 700), watts("gpu_watts", "steady", 300),
            watts("meter_watts", "meter-stopped", 700, stopped), watts("gpu_watts", "meter-stopped", 300),
            watts("gpu_watts", "gpu-stopped", 300, stopped), watts("cpu_watts", "gpu-stopped", 100),
            watts("gpu_watts", "gpu-gone", 300, gone), watts("cpu_watts", "gpu-gone", 100),  # a device removed
            watts("gpu_watts", "devices", 300), watts("cpu_watts", "devices", 100),
        ]) == 204
        store = PrometheusStore(server.url, metric_names={"node_power": "meter_watts", "gpu_power": "gpu_watts",
                                                          "cpu_power": "cpu_watts"},
                                node_labels={key: "node" for key in ("node_power", "gpu_power", "cpu_power")})
        latest = {item.node_id: item.power_watts for item in store.latest()}
        assert latest == pytest.approx({"steady": 700.0, "gpu-gone": 100.0, "devices": 400.0})
        assert store.latest("gpu-stopped") == []
    finally:
        server.stop()


def test_the_dashboards_measured_power_follows_the_stores_rule(tmp_path):
    """Regression: it took any `device_id="node"` series as the wall reading, so a GPU node without a BMC showed
    its host's RAPL total (CPU packages) instead of its accelerators plus that total."""
    import json
    import urllib.parse
    import urllib.request

    from tests.paths import REPO_ROOT

    dashboard = json.loads((REPO_ROOT / "deploy" / "grafana" / "kcloud-dashboard.json").read_text())
    [expr] = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
              if target.get("legendFormat") == "measured"]
    server = Prometheus(tmp_path).start()
    try:
        now_ms = int(time.time() * 1000)

        def power(node: str, source: str, device: str, watts: float) -> tuple[dict, list]:
            return gauge({"__name__": "ray_kcloud_power_watts", "node_id": node, "source": source,
                          "device_id": device}, watts, now_ms)

        assert server.remote_write([
            power("bmc", "ipmi", "node", 900), power("bmc", "nvml", "0", 300), power("bmc", "host", "node", 150),
            power("rapl", "nvml", "0", 300), power("rapl", "nvml", "1", 300), power("rapl", "host", "node", 150),
            power("rapl", "host", "package-0", 80), power("rapl", "host", "package-1", 70),
            power("psu", "ipmi", "PSU1", 400), power("psu", "ipmi", "PSU2", 420), power("psu", "nvml", "0", 300),
            power("replayed", "replay", "node", 500),
        ]) == 204
        query = urllib.parse.urlencode({"query": expr.replace("$node", ".*"), "time": now_ms / 1000})
        with urllib.request.urlopen(f"{server.url}/api/v1/query?{query}", timeout=30) as response:
            result = json.loads(response.read())["data"]["result"]
    finally:
        server.stop()
    assert {r["metric"]["node_id"]: float(r["value"][1]) for r in result} == {
        "bmc": 900.0, "rapl": 750.0, "psu": 820.0, "replayed": 500.0}
