"""Tests for the SYNTHETIC telemetry generator (training.synthetic)."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pandas as pd
import pytest

from training.synthetic import COLUMNS, PATTERNS, WORKLOADS, generate_trace, main
from training.synthetic_patterns import Pattern, generate_pattern

DAY = 86400


@pytest.fixture(scope="module")
def two_days() -> pd.DataFrame:
    return generate_trace()  # 4 nodes, 2 days from Monday 2026-01-05, 1 min steps


def test_columns_rows_and_node_mix(two_days: pd.DataFrame) -> None:
    assert tuple(two_days.columns) == COLUMNS
    assert len(two_days) == 4 * 2 * 1440
    assert sorted(two_days.node_id.unique()) == ["syn-gpu-01", "syn-gpu-02", "syn-idle-01", "syn-npu-01"]
    assert two_days.timestamp.iloc[0] == pd.Timestamp("2026-01-05T00:00:00Z")
    assert two_days.timestamp.is_monotonic_increasing
    ids = generate_trace(nodes=8, duration_s=3600).node_id.unique()
    assert [sum(i.startswith(f"syn-{k}-") for i in ids) for k in ("gpu", "npu", "idle")] == [4, 2, 2]


def test_deterministic_by_seed() -> None:
    options = {"duration_s": 6 * 3600, "seed": 7, "drop_fraction": 0.05, "gaps": 2}
    first = generate_trace(**options)
    pd.testing.assert_frame_equal(first, generate_trace(**options))
    other = generate_trace(duration_s=6 * 3600, seed=8)
    assert not np.array_equal(first.power_watts.to_numpy()[:100], other.power_watts.to_numpy()[:100])


def test_values_in_range(two_days: pd.DataFrame) -> None:
    assert (two_days.power_watts > 0).all()
    assert two_days.power_watts.dtype == np.int64
    for column in ("cpu_utilization", "memory_usage", "gpu_utilization", "npu_utilization"):
        values = two_days[column].dropna()
        assert values.between(0, 100).all(), column
    assert two_days.temperature.between(20, 95).all()
    assert set(two_days.workload_type) <= set(WORKLOADS)
    power = two_days.groupby("node_id").power_watts
    assert 4000 <= power.max()["syn-gpu-01"] <= 6000 and 700 <= power.min()["syn-gpu-01"] <= 900
    assert 3000 <= power.max()["syn-npu-01"] <= 4000
    assert power.max()["syn-idle-01"] < 1.2 * power.min()["syn-idle-01"]


def test_blank_cells_follow_the_hardware(two_days: pd.DataFrame) -> None:
    by_node = two_days.groupby("node_id")
    gpu_known, npu_known = by_node.gpu_utilization.count(), by_node.npu_utilization.count()
    assert gpu_known["syn-gpu-01"] == 2880 and npu_known["syn-gpu-01"] == 0
    assert gpu_known["syn-npu-01"] == 0 and npu_known["syn-npu-01"] == 2880
    assert gpu_known["syn-idle-01"] == 0 and npu_known["syn-idle-01"] == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_training_shows_periodic_checkpoint_dips(seed: int) -> None:
    step = 15
    frame = generate_trace(nodes=1, duration_s=DAY, step_s=step, seed=seed)  # syn-gpu-01 trains
    training = (frame.workload_type == "training").to_numpy()
    power = frame.power_watts.to_numpy()
    low = training & (power < 0.45 * np.median(power[training]))  # far below all-reduce dips
    starts = np.flatnonzero(low & ~np.r_[False, low[:-1]])
    assert len(starts) >= 10
    assert frame.cpu_utilization[low].mean() > frame.cpu_utilization[training & ~low].mean() + 15
    job = np.cumsum(np.r_[True, training[1:] != training[:-1]])  # one number per contiguous job
    periodic_jobs = 0
    for number in np.unique(job[starts]):
        mine = starts[job[starts] == number]
        spacing = np.diff(mine)[1:] * step / 60  # skip the first: job warm-up or trace start
        if len(spacing) >= 2:
            assert spacing.max() - spacing.min() <= 1, spacing  # same interval every time
            assert 10 <= spacing.mean() <= 90
            periodic_jobs += 1
    assert periodic_jobs >= 1


def test_inference_follows_a_daily_cycle(two_days: pd.DataFrame) -> None:
    node = two_days[two_days.node_id == "syn-gpu-02"]
    assert (node.workload_type == "inference").all()
    hour = node.timestamp.dt.hour
    afternoon = node.power_watts[hour.between(12, 17)].mean()
    night = node.power_watts[hour.between(0, 5)].mean()
    assert afternoon > 1.3 * night


def test_temperature_follows_power(two_days: pd.DataFrame) -> None:
    node = two_days[two_days.node_id == "syn-gpu-01"]
    assert np.corrcoef(node.power_watts, node.temperature)[0, 1] > 0.7


def test_drop_fraction_and_gaps() -> None:
    full = 4 * 2 * 1440
    dropped = generate_trace(drop_fraction=0.1)
    assert abs(len(dropped) / full - 0.9) < 0.015
    gapped = generate_trace(gaps=3)
    assert full - 3 * 120 <= len(gapped) < full
    widest = gapped.groupby("node_id").timestamp.diff().max()
    assert widest >= pd.Timedelta(minutes=10)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="drop_fraction"):
        generate_trace(drop_fraction=1.0)
    with pytest.raises(ValueError, match="nodes"):
        generate_trace(nodes=0)


def test_cli_writes_a_csv(tmp_path, capsys) -> None:
    out = tmp_path / "trace.csv"
    assert main(["--output", str(out), "--nodes", "4", "--duration", "1h", "--step", "1min"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert len(lines) == 1 + 4 * 60
    assert lines[1].startswith("2026-01-05T00:00:00Z,syn-gpu-01,")
    assert ",,," in next(line for line in lines if ",syn-idle-01," in line)  # blank accelerator cells
    err = capsys.readouterr().err
    assert "wrote 240 rows for 4 nodes" in err and "SYNTHETIC" in err
    assert [p.name for p in tmp_path.iterdir()] == ["trace.csv"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--nodes", "-1"], "--nodes"),
        (["--drop-fraction", "1"], "--drop-fraction"),
        (["--duration", "soon"], "--duration"),
        (["--seed", "-3"], "--seed"),
        (["--step", "1h", "--duration", "1min"], "--duration"),
        (["--nodes", "100000000"], "--nodes"),  # these three ran until killed
        (["--duration", "520w", "--step", "1s"], "--duration"),
        (["--gaps", "1000000000"], "--gaps"),
        (["--nodes", "2", "--duration", "1d", "--step", "10min", "--gaps", "100000"], "--gaps"),  # an empty file, rc 0
    ],
)
def test_cli_rejects_bad_arguments(tmp_path, capsys, argv: list[str], flag: str) -> None:
    out = tmp_path / "trace.csv"
    assert main(["--output", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err
    assert not out.exists()


def test_cli_writes_a_failure_mode_pattern_of_the_suites(tmp_path, capsys) -> None:
    """The suites' synthetic cases come from training.synthetic too (`--pattern`), not only from Python."""
    assert PATTERNS == get_args(Pattern)
    output = tmp_path / "spikes.csv"
    assert main(["--output", str(output), "--pattern", "recurring_spikes", "--duration", "3d", "--step", "10min",
                 "--seed", "2"]) == 0
    written = pd.read_csv(output)
    expected = generate_pattern("recurring_spikes", days=3, step_s=600, seed=2)
    assert len(written) == 3 * 144 and written["power_watts"].tolist() == expected["power_watts"].tolist()
    assert main(["--output", str(output), "--pattern", "level_shifts", "--duration", "36h"]) == 2
    assert "not a whole number of days" in capsys.readouterr().err


def test_cli_pattern_takes_nodes_drops_and_gaps(tmp_path, capsys) -> None:
    """`--nodes`, `--drop-fraction` and `--gaps` were ignored without a word with `--pattern`."""
    output = tmp_path / "spikes.csv"
    assert main(["--output", str(output), "--pattern", "recurring_spikes", "--duration", "3d", "--step", "10min",
                 "--seed", "2", "--nodes", "3", "--drop-fraction", "0.1", "--gaps", "2"]) == 0
    assert "for 3 node(s)" in capsys.readouterr().err
    written = pd.read_csv(output, parse_dates=["timestamp"])
    assert written["node_id"].unique().tolist() == ["syn-recurring-spikes", "syn-recurring-spikes-02",
                                                    "syn-recurring-spikes-03"]
    assert 0.75 * 3 * 432 < len(written) < 0.95 * 3 * 432
    assert written["timestamp"].is_monotonic_increasing
    first = written[written["node_id"] == "syn-recurring-spikes"]
    alone = generate_pattern("recurring_spikes", days=3, step_s=600, seed=2).set_index("timestamp")
    assert first["power_watts"].tolist() == alone.loc[first["timestamp"], "power_watts"].tolist()  # node 1 as alone
    by_node = written.pivot(index="timestamp", columns="node_id", values="power_watts").dropna()
    assert (by_node.iloc[:, 0] != by_node.iloc[:, 1]).mean() > 0.9  # each server its own noise
    assert main(["--output", str(output), "--pattern", "recurring_spikes", "--duration", "1d", "--step", "10min",
                 "--gaps", "100000"]) == 2
    assert "--gaps" in capsys.readouterr().err
