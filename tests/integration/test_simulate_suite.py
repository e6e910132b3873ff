"""The simulation suite end to end through real Ray Train (configs/suite.simulate-smoke.yaml): a forecaster per case,
every transform and delay replayed three ways, per-case reports with ratios and targets, the aggregate and the
printed table."""

from __future__ import annotations

import json

import pytest

from autoscaler import simulate
from tests.paths import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_KEYS = {"budget_violation_seconds", "over_threshold_seconds", "replica_hours", "energy_kwh", "scale_events",
            "decisions", "forecast_decisions", "simulated_seconds", "max_per_node_watts", "forecast_used_fraction"}


def test_smoke_simulation_suite_end_to_end(tmp_path, ray_cluster, capsys):
    output = tmp_path / "suite.json"
    code = simulate.main(["--suite", str(REPO_ROOT / "configs" / "suite.simulate-smoke.yaml"),
                          "--output", str(output), "--quiet"])
    assert code == 0
    result = json.loads(output.read_text())
    assert result["complete"] is True and result["seeds"] == [0]
    replays = [(c["case"], c["transform"], c["actuation_delay_seconds"]) for c in result["cases"]]
    assert replays == [("upm_sample", "k40-w150", 120), ("upm_sample", "k40-w150", 600),
                       ("recurring_spikes", "k100-w35", 1800), ("recurring_spikes", "k100-w35", 3600)]
    for case in result["cases"]:
        report = case["report"]
        steps, settings = report["steps"], report["settings"]
        for name in ("predictive", "reactive", "reactive_margin"):
            assert RUN_KEYS <= set(report[name])
            assert report[name]["decisions"] == len(steps)
        assert settings["policy"]["actuation_delay"] == case["actuation_delay_seconds"]
        assert settings["horizon_steps"] * settings["step_seconds"] >= settings["risk_window_seconds"]
        assert settings["model"]["epochs_run"] >= settings["model"]["best_epoch"]
        assert settings["model"]["served_method"] in {"lstm", "lightgbm", "combined"}
        assert report["predictive"]["forecast_used_fraction"] > 0.5
        assert set(case["ratios"]) == {"vs_reactive", "vs_reactive_margin"}
        assert (case["targets"] is None) == (not case["reactive_violates"])
    totals = result["aggregate"]
    assert totals["replays"] == 4
    assert set(totals["vs_reactive"]) == {"budget_violation_seconds", "replica_hours", "scale_events"}
    printed = capsys.readouterr().out
    assert "| upm_sample | k40-w150 | 2min | 2min |" in printed and "targets met:" in printed
