"""The training settings: `predictor`, `models`, `features`, `model_path` (MODEL_PATH) of the config file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.settings import ConfigError
from core.telemetry_csv import OPTIONAL_FEATURES
from tests.paths import REPO_ROOT
from training.power.retrain_spec import ModelOverrides
from training.settings import (
    ALL_FEATURES,
    PowerPredictorConfig,
    PredictorConfig,
    TrainingConfig,
    load_training_config,
)

EXAMPLE = REPO_ROOT / "config.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None = None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_training_config(path, environ={} if environ is None else environ)
    return str(caught.value)


@pytest.fixture()
def in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_are_valid(in_empty_dir: Path) -> None:
    config = load_training_config(environ={})
    assert config == TrainingConfig()
    assert config.predictor == PredictorConfig(model_update_interval=3600, prediction_horizon=3600,
                                               step=60, max_gap=300)
    assert config.predictor.horizon_steps == 60
    assert config.models.power_predictor.hidden_size == 128  # the seed's
    assert config.features == ALL_FEATURES
    assert config.model_path == "trained_models"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_training_config(write(tmp_path, "# nothing\n"), environ={}) == TrainingConfig()


def test_feature_names_match_the_data_loader() -> None:
    assert ALL_FEATURES == OPTIONAL_FEATURES


def test_example_file_documents_the_defaults() -> None:
    assert load_training_config(EXAMPLE, environ={}) == TrainingConfig()
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert raw["predictor"] == {"model_update_interval": "1h", "prediction_horizon": "1h", "step": "1min"}
    # max_gap is left out (commented), so that a copy of the example still lets it follow --step
    assert raw["models"]["power_predictor"] == PowerPredictorConfig().model_dump()


def test_default_path_and_env_path(in_empty_dir: Path, tmp_path: Path) -> None:
    (in_empty_dir / "configs").mkdir()
    (in_empty_dir / "configs" / "config.yaml").write_text("model_path: from_default\n", encoding="utf-8")
    assert load_training_config(environ={}).model_path == "from_default"
    other = tmp_path / "other.yaml"
    other.write_text("model_path: from_env\n", encoding="utf-8")
    assert load_training_config(environ={"KCLOUD_CONFIG": str(other)}).model_path == "from_env"


def test_bad_duration_names_key(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "predictor:\n  step: 5 parsecs\n"))
    assert message.startswith(f"{tmp_path / 'config.yaml'}: predictor.step: ")
    assert "parsecs" in message


def test_model_path_env_override(tmp_path: Path) -> None:
    path = write(tmp_path, "model_path: in_file\n")
    assert load_training_config(path, environ={"MODEL_PATH": "/srv/models"}).model_path == "/srv/models"
    assert load_training_config(path, environ={"MODEL_PATH": ""}).model_path == "in_file"


def test_other_packages_keys_are_left_to_them(tmp_path: Path) -> None:
    path = write(tmp_path, "model_path: here\nauto_scaling:\n  evaluation_interval: 5 parsecs\n")
    assert load_training_config(path, environ={}).model_path == "here"


def test_unknown_key_refused_with_dotted_path(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "models:\n  power_predictor:\n    hiden_size: 32\n"))
    assert message == f"{tmp_path / 'config.yaml'}: models.power_predictor.hiden_size: unknown key"


def test_bad_value_names_key_and_all_errors_listed(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  power_predictor:\n    hidden_size: -3\n    num_layers: 9\n"
                           "features: [cpu_utilization, bogus]\n")
    lines = error_of(path).splitlines()
    assert lines[0] == (f"{path}: models.power_predictor.hidden_size: "
                        "Input should be greater than or equal to 1 (got -3)")
    assert lines[1].startswith(f"{path}: models.power_predictor.num_layers: ")
    assert lines[2].startswith(f"{path}: features[1]: ") and "'bogus'" in lines[2]
    assert len(lines) == 3


@pytest.mark.parametrize(("key", "limit"), [("hidden_size", 4096), ("sequence_length", 100_000),
                                          ("epochs", 10_000), ("batch_size", 65_536)])
def test_regression_a_model_size_only_memory_would_stop_is_refused(tmp_path: Path, key: str, limit: int) -> None:
    """`hidden_size: 100000000` was reported valid and failed only once a run allocated it."""
    message = error_of(write(tmp_path, f"models:\n  power_predictor:\n    {key}: {limit + 1}\n"))
    assert message.endswith(f"models.power_predictor.{key}: Input should be less than or equal to {limit} "
                            f"(got {limit + 1})")


def test_duplicate_features_refused(tmp_path: Path) -> None:
    assert "duplicate feature(s) ['memory_usage']" in error_of(
        write(tmp_path, "features: [memory_usage, temperature, memory_usage]\n"))


def test_max_gap_below_step_refused(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "predictor:\n  step: 5min\n  max_gap: 1min\n"))
    assert "predictor: max_gap (1min) must be at least step (5min)" in message


def test_horizon_must_be_multiple_of_step(tmp_path: Path) -> None:
    path = write(tmp_path, "predictor:\n  step: 10min\n  max_gap: 10min\n  prediction_horizon: 45min\n")
    message = error_of(path)
    assert "prediction_horizon (45min) must be a whole multiple of step (10min)" in message
    path = write(tmp_path, "predictor:\n  step: 15min\n  max_gap: 15min\n  prediction_horizon: 45min\n")
    assert load_training_config(path, environ={}).predictor.horizon_steps == 3


def test_a_horizon_of_more_than_a_week_of_minute_steps_is_refused_naming_the_key(tmp_path: Path) -> None:
    """Regression: 7 days at a 10 s step (60,480 outputs and as many targets per window) was accepted, through the
    retrain API too (its horizon bound is in time, and a retraining keeps the served step)."""
    path = write(tmp_path, "predictor:\n  step: 10s\n  max_gap: 1min\n  prediction_horizon: 7d\n")
    assert ("prediction_horizon (7d) is 60480 steps of 10s: at most 10080 (a coarser step forecasts further)"
            in error_of(path))
    path = write(tmp_path, "predictor:\n  step: 1min\n  prediction_horizon: 7d\n")
    assert load_training_config(path, environ={}).predictor.horizon_steps == 10_080
    path = write(tmp_path, "predictor:\n  resolutions:\n    - {model_id: fine, step: 1s, horizon: 1d, "
                           "sequence_length: 60}\n")
    assert "horizon (1d) is 86400 steps of 1s: at most 10080" in error_of(path)


def test_config_is_frozen_and_round_trips() -> None:
    config = TrainingConfig()
    with pytest.raises(ValueError):
        config.model_path = "elsewhere"  # type: ignore[misc]
    assert TrainingConfig.model_validate(config.model_dump()) == config


# --- issue 12: defaults for any step, the seed's names ----------------------------------------------------------
@pytest.mark.parametrize(("step", "max_gap"), [("1s", 300), ("30s", 300), ("1min", 300), ("10min", 3000),
                                               ("1h", 18000)])
def test_max_gap_defaults_to_five_steps_and_at_least_five_minutes(step: str, max_gap: int) -> None:
    """Issue 12: --step 10min failed with "max_gap (5min) must be at least step (10min)" without a config."""
    predictor = PredictorConfig(step=step, prediction_horizon="1h" if step != "1h" else "2h")
    assert predictor.max_gap == max_gap and "max_gap" not in predictor.model_fields_set


def test_a_given_max_gap_is_kept_and_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "predictor:\n  step: 10min\n  max_gap: 20min\n")
    assert load_training_config(path, environ={}).predictor.max_gap == 1200
    assert "max_gap (5min) must be at least step (10min)" in error_of(
        write(tmp_path, "predictor:\n  step: 10min\n  max_gap: 5min\n"))


def test_command_line_step_without_a_config_file(in_empty_dir: Path) -> None:
    """`python -m training.evaluate --step 10min --horizon 1h` with no config file (training.cli's overrides)."""
    config = ModelOverrides(step="10min", horizon="1h").apply(load_training_config(environ={"MODEL_PATH": "/m"}))
    assert (config.predictor.step, config.predictor.max_gap, config.predictor.horizon_steps) == (600, 3000, 6)
    assert ModelOverrides(step="30s").apply(TrainingConfig()).predictor.max_gap == 300
    given = TrainingConfig(predictor={"max_gap": "5min"})
    with pytest.raises(ConfigError, match=r"max_gap \(5min\) must be at least step \(10min\)"):
        ModelOverrides(step="10min").apply(given)  # a max_gap the file gives is the user's: kept, and checked


def test_gradient_boosting_is_the_lightgbm_cost_model(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  cost_predictor:\n    type: gradient_boosting\n")
    assert load_training_config(path, environ={}).models.cost_predictor.type == "lightgbm"
    message = error_of(write(tmp_path, "models:\n  cost_predictor:\n    type: xgboost\n"))
    assert message == (f"{tmp_path / 'config.yaml'}: models.cost_predictor.type: 'xgboost' is not a cost model "
                       "type; use lightgbm (or gradient_boosting, the same model)")


def test_the_power_window_is_the_hourly_models_unless_resolutions_are_given() -> None:
    default = TrainingConfig()
    assert default.models.power_predictor.sequence_length == 168  # the seed's: a week of hours
    hourly = max(default.predictor.resolutions, key=lambda r: r.step)
    assert (hourly.step, hourly.sequence_length) == (3600, 168)
    longer = TrainingConfig(models={"power_predictor": {"sequence_length": 336}})
    assert [r.sequence_length for r in longer.predictor.resolutions] == [
        r.sequence_length if r is not hourly else 336 for r in default.predictor.resolutions]
    assert "resolutions" not in longer.predictor.model_fields_set
    assert TrainingConfig.model_validate(longer.model_dump()) == longer
    own = [{"model_id": "power_lstm", "step": 60, "horizon": 3600, "sequence_length": 30}]
    explicit = TrainingConfig(predictor={"resolutions": own}, models={"power_predictor": {"sequence_length": 336}})
    assert explicit.predictor.resolutions[0].sequence_length == 30
