"""The tune command line: a real two-trial Ray Tune search on the carried sample writes its report."""

from __future__ import annotations

import json

import pytest

from tests.paths import TEST_DATA
from training import tune

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAMPLE = str(TEST_DATA / "upm_sample.csv")
SMALL = ["--step", "2min", "--horizon", "20min", "--sequence-length", "15", "--hidden-size", "8", "--quiet"]


def test_a_two_trial_search_writes_its_report(tmp_path, ray_cluster, capsys):
    output = tmp_path / "tune.json"
    code = tune.main(["--data", SAMPLE, *SMALL, "--epochs", "4", "--trials", "2", "--time-budget", "10m",
                      "--output", str(output)])
    assert code == 0
    report = json.loads(output.read_text())
    assert len(report["trials"]) == 2
    default = [trial for trial in report["trials"] if trial["default"]]
    assert len(default) == 1 and default[0]["status"] == "completed"
    assert default[0]["config"] == {"learning_rate": 0.002, "hidden_size": 8, "num_layers": 2, "sequence_length": 15,
                                    "dropout": 0.1, "batch_size": 32, "relative_power": False}
    assert report["default_score"] == default[0]["score"] > 0
    completed = [trial for trial in report["trials"] if trial["status"] == "completed"]
    chosen = min(completed, key=lambda trial: trial["val_mae"])  # never on the holdout it reports
    assert (report["best_config"], report["best_score"]) == (chosen["config"], chosen["score"])
    for trial in report["trials"]:
        assert trial["status"] in ("completed", "early_stopped") and 1 <= trial["epochs"] <= 4
        assert (trial["score"] is not None) == (trial["status"] == "completed")
    assert report["data"]["step_s"] == 120 and report["data"]["holdout_points"] > 0
    assert report["search"]["trials_requested"] == 2 and report["search"]["time_budget_s"] == 600
    assert "tune: holdout MAE: chosen " in capsys.readouterr().err
