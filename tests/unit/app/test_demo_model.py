"""The demo registry `make run` builds: every served resolution, each on data the project ships or generates
(training is replaced by a recorder here; the real runs are in tests/test_api.py and `make run`)."""

from __future__ import annotations

import pandas as pd
import pytest

from app import demo_model
from core.registry import ModelRegistry
from core.telemetry_csv import load_telemetry_csv
from tests.paths import TEST_DATA
from training.settings import DEFAULT_RESOLUTIONS

SAMPLE = str(TEST_DATA / "upm_sample.csv")


def test_the_shipped_sample_trains_the_fine_model_and_the_hourly_one_needs_weeks():
    fine, hourly = DEFAULT_RESOLUTIONS
    assert demo_model.needs_generated_data(fine, SAMPLE) is False
    assert demo_model.needs_generated_data(hourly, SAMPLE) is True


def test_every_missing_resolution_is_trained_and_the_hourly_one_on_a_synthetic_trace(tmp_path, monkeypatch):
    runs: list[tuple[list[str], pd.DataFrame]] = []

    def train(argv: list[str]) -> int:
        runs.append((argv, load_telemetry_csv(argv[argv.index("--data") + 1])))
        return 0

    monkeypatch.setattr(demo_model.train_lstm, "main", train)
    monkeypatch.setattr(demo_model.train_gbm, "main", lambda argv: 0)
    assert demo_model.main(["--data", SAMPLE, "--model-path", str(tmp_path / "models")]) == 0
    (fine, sample), (hourly, generated) = runs
    flags = {argv[argv.index("--model-id") + 1]: argv for argv, _ in runs}
    assert set(flags) == {"power_lstm", "power_lstm_1h"}
    assert fine[fine.index("--step") + 1] == "60s" and fine[fine.index("--horizon") + 1] == "3600s"
    assert hourly[hourly.index("--step") + 1] == "3600s" and hourly[hourly.index("--horizon") + 1] == "604800s"
    assert hourly[hourly.index("--sequence-length") + 1] == "168"  # the seed's window
    assert len(sample) == len(load_telemetry_csv(SAMPLE))
    # node ids of training.synthetic mark the registered model as trained on generated data (retrain_power)
    assert generated["node_id"].str.startswith("syn-").all()
    span = generated["timestamp"].max() - generated["timestamp"].min()
    assert span >= pd.Timedelta(weeks=demo_model.SYNTHETIC_WEEKS) - pd.Timedelta(hours=1)


@pytest.mark.parametrize("failing", ["power_lstm", "power_lstm_1h"])
def test_a_failed_training_stops_with_its_code(tmp_path, monkeypatch, failing):
    monkeypatch.setattr(demo_model.train_lstm, "main",
                        lambda argv: 2 if argv[argv.index("--model-id") + 1] == failing else 0)
    monkeypatch.setattr(demo_model.train_gbm, "main", lambda argv: 0)
    assert demo_model.main(["--data", SAMPLE, "--model-path", str(tmp_path / "models")]) == 2


def test_the_state_path_reaches_every_training_so_the_service_lists_the_runs(tmp_path, monkeypatch):
    seen: list[list[str]] = []
    monkeypatch.setattr(demo_model.train_lstm, "main", lambda argv: seen.append(argv) or 0)
    monkeypatch.setattr(demo_model.train_gbm, "main", lambda argv: seen.append(argv) or 0)
    state = str(tmp_path / "state")
    assert demo_model.main(["--data", SAMPLE, "--model-path", str(tmp_path / "models"), "--state-path", state]) == 0
    assert len(seen) == 3 and all(argv[argv.index("--state-path") + 1] == state for argv in seen)


@pytest.mark.parametrize("problem", ["missing data", "unknown config key"])
def test_regression_bad_input_is_one_line_and_exit_2_not_a_traceback(tmp_path, capsys, problem):
    """`make run` starts with this command: a missing trace or a typo in the config ended it in a traceback."""
    config = tmp_path / "config.yaml"
    config.write_text("predictor:\n  stepp: 1min\n")
    args = (["--data", str(tmp_path / "nope.csv")] if problem == "missing data"
            else ["--data", str(TEST_DATA / "upm_sample.csv"), "--config", str(config)])
    assert demo_model.main([*args, "--model-path", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("demo_model: error: ") and "Traceback" not in err
    assert ("nope.csv" in err) if problem == "missing data" else ("stepp" in err)


def test_the_cost_model_trained_is_the_one_the_service_serves(tmp_path, monkeypatch):
    """Regression: it always checked and trained cost_gbm (and dropped --config), so a service serving another id
    answered 503 after the demo said the models were ready."""
    seen: list[list[str]] = []
    monkeypatch.setattr(demo_model.train_lstm, "main", lambda argv: 0)
    monkeypatch.setattr(demo_model.train_gbm, "main", lambda argv: seen.append(argv) or 0)
    config = tmp_path / "config.yaml"
    config.write_text("{}\n")
    assert demo_model.main(["--data", SAMPLE, "--model-path", str(tmp_path / "models"), "--config", str(config),
                            "--cost-model-id", "cost_gbm_eu"]) == 0
    [argv] = seen
    assert argv[argv.index("--model-id") + 1] == "cost_gbm_eu" and argv[argv.index("--config") + 1] == str(config)


@pytest.mark.parametrize("pointer", ["none", "missing"])
def test_regression_a_model_with_versions_but_none_active_is_left_alone(tmp_path, monkeypatch, pointer):
    """A model registered with `--no-activate` (ACTIVE says none), or whose ACTIVE file is missing (its newest
    version is served), got a demo trained: activated over it, or compared with its newest version on the demo's
    own data."""
    trained: list[str] = []
    monkeypatch.setattr(demo_model.train_lstm, "main",
                        lambda argv: trained.append(argv[argv.index("--model-id") + 1]) or 0)
    monkeypatch.setattr(demo_model.train_gbm, "main",
                        lambda argv: trained.append(argv[argv.index("--model-id") + 1]) or 0)
    registry = ModelRegistry(tmp_path / "models")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.bin").write_bytes(b"x")
    for model_id in ("power_lstm", "cost_gbm"):
        registry.publish(model_id, weights, model_type="lstm", activate=False)
        if pointer == "missing":
            (tmp_path / "models" / model_id / "ACTIVE").unlink(missing_ok=True)
    assert registry.active_version("power_lstm") is None
    assert demo_model.main(["--data", SAMPLE, "--model-path", str(tmp_path / "models")]) == 0
    assert trained == ["power_lstm_1h"]
