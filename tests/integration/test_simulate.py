"""The simulator end to end on the real sample: Ray Train forecaster, both runs, the report and the plot."""

from __future__ import annotations

import json

import pytest

from autoscaler import simulate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POLICY = """\
name: sim-test
target: {kind: ray_serve, app: llm, deployment: Model}
min_replicas: 1
max_replicas: 30
power_based: {max_power_budget: 1000, scale_out_threshold: 80, scale_in_threshold: 50, cooldown_period: 4min}
predictive_scaling: {enabled: true, lookahead_minutes: 25, confidence_threshold: 0.9}
"""
KEYS = {"budget_violation_seconds", "over_threshold_seconds", "replica_hours", "energy_kwh", "scale_events",
        "forecast_used_fraction"}


def test_simulation_report_on_real_sample(tmp_path, ray_cluster, upm_sample):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    output, plot = tmp_path / "sim.json", tmp_path / "sim.png"
    code = simulate.main(["--trace", str(upm_sample), "--policy", str(policy), "--step", "2min",
                          "--sequence-length", "15", "--epochs", "3", "--quiet", "--idle-watts", "300",
                          "--demand-scale", "40", "--demand-offset", "150", "--actuation-delay", "4min",
                          "--output", str(output), "--plot", str(plot)])
    assert code == 0
    report = json.loads(output.read_text())
    settings = report["settings"]
    assert settings["horizon_steps"] == 13  # 25 min at 2 min steps, rounded up
    assert settings["policy"]["name"] == "sim-test" and settings["actuation_delay_seconds"] == 240
    steps = report["steps"]
    assert {s["series"] for s in steps} == {"hybrid_1", "radiance_1", "sysbench_2"}
    assert settings["margin_points"] == 10
    for name in ("predictive", "reactive", "reactive_margin"):
        run = report[name]
        assert KEYS <= set(run), name
        assert run["decisions"] == len(steps)
        assert run["simulated_seconds"] == 120 * len(steps)
        assert 0 <= run["budget_violation_seconds"] <= run["over_threshold_seconds"] <= run["simulated_seconds"]
        assert run["replica_hours"] == pytest.approx(sum(s[name]["charged_replicas"] for s in steps) * 120 / 3600,
                                                     rel=1e-4)
        over = sum(120 for s in steps if s[name]["per_node_watts"] > 1000)
        assert run["budget_violation_seconds"] == over
        assert run["energy_kwh"] > 0
    assert report["reactive"]["forecast_used_fraction"] == report["reactive_margin"]["forecast_used_fraction"] == 0.0
    # the margin only ever adds capacity: never fewer replica-hours than the plain reactive run
    assert report["reactive_margin"]["replica_hours"] >= report["reactive"]["replica_hours"]
    assert report["predictive"]["forecast_used_fraction"] > 0.5  # the forecast drives most decisions
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
