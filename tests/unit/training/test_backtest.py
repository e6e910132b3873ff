"""The backtest report's features-only metrics: the same test points, the power history withheld
(Ray Train replaced by tests.fakes.trainer; windows, estimator, calibration and scoring are the real code)."""

from __future__ import annotations

import json

import pytest

from tests.fakes.trainer import untrained
from training import evaluate
from training.synthetic import generate_trace, write_csv


@pytest.mark.slow
def test_the_report_scores_the_features_only_mode_on_the_same_points(tmp_path, monkeypatch, capsys):
    """Regression (issue 12): the report had no features_only metrics."""
    monkeypatch.setattr("training.power.dataset.train_power_lstm", untrained(0.0))
    write_csv(generate_trace(nodes=2, duration_s=2 * 86400, step_s=300, seed=4), tmp_path / "trace.csv")
    output = tmp_path / "report.json"
    assert evaluate.main(["--data", str(tmp_path / "trace.csv"), "--step", "10min", "--horizon", "1h",
                          "--sequence-length", "12", "--epochs", "1", "--output", str(output), "--quiet"]) == 0
    report = json.loads(output.read_text())
    metrics = report["metrics"]
    assert set(metrics["features_only"]) == set(metrics["lstm"])
    assert metrics["features_only"]["nominal_coverage"] == metrics["lstm"]["nominal_coverage"]
    assert report["best_baseline"] not in {"lstm", "served", "features_only"}
    assert len(report["mae_by_lead"]["features_only"]) == report["horizon_steps"]
    assert "features only (power withheld): interval covers" in capsys.readouterr().err
