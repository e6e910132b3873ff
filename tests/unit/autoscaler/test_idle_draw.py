"""autoscaler.idle_draw: a node's idle draw is the median power of its readings with nothing running, told apart by
its accelerators' utilization, else its CPU's; a node without either has none."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from autoscaler.idle_draw import main, measure
from training.synthetic import write_csv

START = pd.Timestamp("2026-01-05T00:00:00Z")


def readings(node: str, power: list[float], *, gpu: list[float] | None = None, npu: list[float] | None = None,
             cpu: list[float] | None = None) -> pd.DataFrame:
    n = len(power)
    blank = [np.nan] * n
    return pd.DataFrame({"timestamp": pd.date_range(START, periods=n, freq="30s"), "node_id": node,
                         "power_watts": power, "cpu_utilization": cpu or blank, "memory_usage": blank,
                         "gpu_utilization": gpu or blank, "npu_utilization": npu or blank, "temperature": blank,
                         "workload_type": "training"})


def fleet() -> pd.DataFrame:
    """An 8-GPU node idle at about 604 W between fine-tuning runs (as alpaca_h100_gpu_30s records it), an NPU node, a
    CPU-only node, a node that reports no utilization, and a GPU node that never idled."""
    rng = np.random.default_rng(0)
    idle_gpu = list(604.4 + rng.normal(0, 0.2, 20))
    busy_gpu = list(2100 + rng.normal(0, 200, 40))
    return pd.concat([
        readings("gpu-a", idle_gpu + busy_gpu, gpu=[0.0] * 20 + [48.0] * 40),
        readings("npu-b", [310.0] * 15 + [900.0] * 15, npu=[0.5] * 15 + [70.0] * 15),
        readings("cpu-c", [150.0] * 12 + [260.0] * 12, cpu=[3.0] * 12 + [90.0] * 12),
        readings("bmc-d", [250.0] * 30),
        readings("gpu-e", [2000.0] * 30, gpu=[60.0] * 30),
    ], ignore_index=True)


def test_each_node_is_measured_by_what_it_reports():
    report = measure(fleet())
    nodes = {node.node_id: node for node in report.nodes}
    assert nodes["gpu-a"].basis == "accelerator" and nodes["gpu-a"].idle_readings == 20
    assert nodes["gpu-a"].idle_watts == pytest.approx(604.4, abs=0.2)
    assert nodes["gpu-a"].p10_watts <= nodes["gpu-a"].idle_watts <= nodes["gpu-a"].p90_watts
    assert nodes["gpu-a"].median_watts > 1500  # the busy readings are not the idle draw
    assert (nodes["npu-b"].basis, nodes["npu-b"].idle_watts) == ("accelerator", 310.0)
    assert (nodes["cpu-c"].basis, nodes["cpu-c"].idle_watts) == ("cpu", 150.0)
    assert (nodes["bmc-d"].basis, nodes["bmc-d"].idle_watts) == ("none", None)
    assert (nodes["gpu-e"].idle_readings, nodes["gpu-e"].idle_watts) == (0, None)
    assert report.suggested_idle_power_watts == 150.0  # the lowest measured


def test_a_node_needs_enough_idle_readings_and_a_blank_accelerator_reading_is_not_idle():
    frame = readings("gpu-a", [600.0] * 8 + [2000.0] * 10, gpu=[0.0] * 8 + [np.nan] * 10)
    assert measure(frame).nodes[0].idle_watts is None  # 8 idle readings; the 10 blank ones are not idle
    assert measure(frame, min_readings=8).nodes[0].idle_watts == 600.0
    assert measure(frame, min_readings=8).suggested_idle_power_watts == 600.0


def test_the_thresholds_decide_what_is_idle():
    frame = readings("cpu-c", [150.0] * 12 + [180.0] * 12, cpu=[3.0] * 12 + [8.0] * 12)
    assert measure(frame).nodes[0].idle_watts == 150.0
    assert measure(frame, max_cpu_utilization=10.0).nodes[0].idle_watts == 165.0


def test_the_command_prints_the_table_or_json(tmp_path, capsys):
    path = tmp_path / "fleet.csv"
    write_csv(fleet(), path)
    assert main(["--data", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| gpu-a | accelerator | 60 | 20 | 604." in out and "none: no utilization reported" in out
    assert "suggested power_based.idle_power_watts: 150 (the lowest idle draw measured)" in out
    assert main(["--data", str(path), "--node", "gpu-a", "--node", "npu-b", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [node["node_id"] for node in report["nodes"]] == ["gpu-a", "npu-b"]
    assert report["suggested_idle_power_watts"] == 310.0


@pytest.mark.parametrize(("argv", "says"), [
    (["--step", "1min"], "--step: applies to --from-store only"),
    (["--since", "1d"], "--since: applies to --from-store only"),
    (["--max-utilization", "100"], "--max-utilization"),
    (["--min-readings", "0"], "--min-readings"),
])
def test_a_bad_flag_is_a_usage_error_naming_it(tmp_path, capsys, argv, says):
    with pytest.raises(SystemExit) as exited:
        main(["--data", str(tmp_path / "fleet.csv"), *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


@pytest.mark.parametrize(("node", "says"), [
    ("gpu-z", "idle_draw: error: --node: no readings of 'gpu-z'"),
    ("bmc-d", "idle_draw: no node has an idle draw"),
])
def test_nodes_without_an_idle_draw_exit_2_saying_why(tmp_path, capsys, node, says):
    path = tmp_path / "fleet.csv"
    write_csv(fleet(), path)
    assert main(["--data", str(path), "--node", node]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_an_unreadable_csv_is_one_line(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("idle_draw: error:") and "Traceback" not in err
