"""The backtest report's features-only metrics: the same test points, the power history withheld
(Ray Train replaced by tests.fakes.trainer; windows, estimator, calibration and scoring are the real code)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from core.telemetry_csv import load_telemetry_csv
from tests.fakes.trainer import untrained
from training import backtest, evaluate, train_lstm
from training.backtest import prepare_training
from training.power.windows import NotEnoughData, Role
from training.synthetic import generate_trace, write_csv


def test_evaluate_trains_the_window_its_shape_is_served_with(upm_sample):
    """Regression: `make evaluate` (the shipped sample at 1 min / 1 h, no --sequence-length) trained the config's
    168-step window, which left the sample's series no training window, and failed after starting Ray."""
    sample = str(upm_sample)

    def window(*flags: str) -> int:
        args = evaluate.parse_args(["--data", sample, "--output", "r.json", *flags])
        return evaluate.backtest_config(args).models.power_predictor.sequence_length

    assert window() == 60  # power_lstm's, as train_lstm trains it
    assert window("--sequence-length", "30") == 30
    assert window("--step", "10min") == 168  # no resolution serves 10 min / 1 h: the model's default
    config = evaluate.backtest_config(evaluate.parse_args(["--data", sample, "--output", "r.json"]))
    prepared = prepare_training(load_telemetry_csv(sample), config, train_fraction=0.8)
    assert all(len(prepared.windows(role)) for role in Role)
    with pytest.raises(NotEnoughData, match="no training windows: .* window of 168 steps and 60 leads; pass a "
                                            "smaller --sequence-length"):
        prepare_training(load_telemetry_csv(sample), evaluate.backtest_config(evaluate.parse_args(
            ["--data", sample, "--output", "r.json", "--sequence-length", "168"])), train_fraction=0.8)


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


@pytest.mark.slow
def test_the_refitted_lstm_serves_and_the_early_stopped_one_is_calibrated(tmp_path, monkeypatch):
    """The choice and the calibration rest on the early-stopped weights' held-out forecasts; the weights that
    forecast the test part are the refit's. Here the refit is made much worse, and only the forecasts show it."""
    trace = tmp_path / "trace.csv"
    write_csv(generate_trace(nodes=2, duration_s=2 * 86400, step_s=300, seed=4), trace)
    reports = {}
    for name, refit_units in (("same", 0.0), ("worse", 3.0)):
        monkeypatch.setattr("training.power.dataset.train_power_lstm", untrained(0.0, refit_units=refit_units))
        output = tmp_path / f"{name}.json"
        assert evaluate.main(["--data", str(trace), "--step", "10min", "--horizon", "1h", "--sequence-length", "12",
                              "--epochs", "1", "--output", str(output), "--quiet"]) == 0
        reports[name] = json.loads(output.read_text())
    same, worse = reports["same"], reports["worse"]
    assert same["model"]["refit_epochs"] == worse["model"]["refit_epochs"] == 1
    assert same["served"] == worse["served"]  # chosen and calibrated before the refit went in
    assert worse["metrics"]["lstm"]["mae"] > 1.5 * same["metrics"]["lstm"]["mae"]


@pytest.mark.slow
def test_a_registered_model_is_scored_against_its_own_interval_settings(tmp_path, monkeypatch, capsys):
    """Regression: `evaluate --model` scored a registered model's intervals against the config's nominal coverage and
    its confidence against the config's tolerance, not the ones it was calibrated with, and its windows were filled
    over the config's `max_gap`, not its own; and a training part without windows for the LightGBM baseline failed
    inside LightGBM, with a traceback."""
    monkeypatch.setattr("training.power.dataset.train_power_lstm", untrained(0.0))
    gaps = []
    prepare = backtest.prepare
    monkeypatch.setattr(backtest, "prepare", lambda *a, **kw: gaps.append(kw["max_gap_s"]) or prepare(*a, **kw))
    trace, models = tmp_path / "trace.csv", tmp_path / "models"
    write_csv(generate_trace(nodes=2, duration_s=3 * 86400, step_s=600, seed=4), trace)
    shape = ["--step", "10min", "--horizon", "1h"]
    (tmp_path / "wide.yaml").write_text("predictor:\n  max_gap: 2h\nmodels:\n  power_predictor:\n"
                                        "    interval_coverage: 0.9\n    confidence_tolerance: 0.05\n")
    assert train_lstm.main(["--data", str(trace), *shape, "--sequence-length", "12", "--epochs", "4",
                            "--model-path", str(models), "--config", str(tmp_path / "wide.yaml"), "--quiet"]) == 0
    output = tmp_path / "report.json"
    assert evaluate.main(["--data", str(trace), *shape, "--model", "power_lstm", "--model-path", str(models),
                          "--output", str(output), "--quiet"]) == 0
    for name in ("lstm", "served", "features_only"):
        assert json.loads(output.read_text())["metrics"][name]["nominal_coverage"] == 0.9, name
    assert gaps == [7200]  # the model's own, where the config's default is 50 min

    short = tmp_path / "short.csv"  # 12 steps of window and 6 leads leave a 1-day training part no LightGBM window
    write_csv(generate_trace(nodes=1, duration_s=86400, step_s=600, seed=5,
                             start=datetime(2031, 1, 1, tzinfo=UTC)), short)
    code = evaluate.main(["--data", str(short), *shape, "--model", "power_lstm", "--model-path", str(models),
                          "--train-fraction", "0.1", "--output", str(tmp_path / "short.json"), "--quiet"])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "no training windows: " in error and "pass a larger --train-fraction or a longer" in error
