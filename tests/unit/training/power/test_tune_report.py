"""tune.json: the completed trial of the lowest validation MAE, the default's score, and reading the best settings
back into a config."""

from __future__ import annotations

import logging

import pytest

from core.settings import ConfigError
from training.power.tune_report import DataFacts, SearchFacts, TrialOutcome, TuneReport, with_best_settings
from training.settings import TrainingConfig

DEFAULTS = {"learning_rate": 0.002, "hidden_size": 64, "num_layers": 2, "sequence_length": 60, "dropout": 0.1,
            "batch_size": 64}
DATA = DataFacts(source="x.csv", series=3, step_s=60, horizon_steps=60, features=["cpu_utilization"],
                 holdout_fraction=0.1, holdout_points=1000)
SEARCH = SearchFacts(trials_requested=4, time_budget_s=1200, elapsed_s=600.0, num_workers=1, max_concurrent_trials=2,
                     scheduler="ASHA", seed=42)


def trial(name: str, score: float | None, status: str = "completed", default: bool = False, **settings) -> TrialOutcome:
    return TrialOutcome(trial_id=name, config={**DEFAULTS, **settings}, default=default, status=status, score=score,
                        val_mae=score, epochs=10)


def report(*trials: TrialOutcome) -> TuneReport:
    return TuneReport.from_trials(list(trials), DATA, SEARCH)


def test_best_is_the_lowest_validation_mae_and_the_default_is_its_baseline():
    result = report(trial("t0", 10.0, default=True), trial("t1", 8.0, hidden_size=128),
                    trial("t2", None, "early_stopped", num_layers=1), trial("t3", 12.0, dropout=0.2))
    assert result.best_score == 8.0 and result.best_config["hidden_size"] == 128
    assert result.default_score == 10.0 and result.gain_percent == 20.0
    lines = result.summary_lines()
    assert lines[0] == "4 trial(s), 3 completed, in 10min"
    assert lines[1] == "holdout MAE: chosen 8.00 W, default 10.00 W, spread 8.00..12.00 W over 3 scored trial(s)"


def test_nothing_completed_means_no_best():
    result = report(trial("t0", None, "stopped", default=True), trial("t1", None, "error"))
    assert result.best_config is None and result.best_score is None and result.default_score is None
    assert result.gain_percent is None


def test_the_report_round_trips_through_json(tmp_path):
    path = tmp_path / "tune.json"
    path.write_text(report(trial("t0", 10.0, default=True)).model_dump_json(indent=2))
    text = path.read_text()
    assert '"best_config"' in text and '"default_score": 10.0' in text and '"gain_percent": 0.0' in text


def test_best_settings_replace_the_configured_ones(tmp_path):
    path = tmp_path / "tune.json"
    path.write_text(report(trial("t0", 10.0, default=True),
                           trial("t1", 9.0, learning_rate=0.004, sequence_length=30, batch_size=128)).model_dump_json())
    config = with_best_settings(TrainingConfig(), path)
    model = config.models.power_predictor
    assert (model.learning_rate, model.sequence_length, model.batch_size, model.hidden_size) == (0.004, 30, 128, 64)
    assert model.epochs == TrainingConfig().models.power_predictor.epochs  # untuned keys stay


def test_a_search_at_another_step_is_warned_about(tmp_path, caplog):
    path = tmp_path / "tune.json"
    path.write_text(report(trial("t0", 10.0, default=True)).model_dump_json())
    with caplog.at_level(logging.WARNING):
        with_best_settings(TrainingConfig(), path, step_s=120)
    assert "was searched at a 1min step; this run uses 2min" in caplog.text


def test_unusable_reports_are_config_errors(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match="missing.json: cannot read"):
        with_best_settings(TrainingConfig(), missing)
    empty = tmp_path / "empty.json"
    empty.write_text(report(trial("t0", None, "stopped", default=True)).model_dump_json())
    with pytest.raises(ConfigError, match="no trial completed"):
        with_best_settings(TrainingConfig(), empty)
    broken = tmp_path / "broken.json"
    broken.write_text('{"trials": []}')
    with pytest.raises(ConfigError, match="broken.json"):
        with_best_settings(TrainingConfig(), broken)
    hostile = tmp_path / "hostile.json"
    hostile.write_text(report(trial("t0", 5.0, default=True)).model_dump_json().replace('"num_layers":2',
                                                                                      '"num_layers":9'))
    with pytest.raises(ConfigError, match="num_layers"):
        with_best_settings(TrainingConfig(), hostile)
