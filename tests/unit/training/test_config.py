"""Unit tests for the service config model and loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.telemetry_csv import OPTIONAL_FEATURES
from tests.paths import REPO_ROOT
from training.config import (
    ALL_FEATURES,
    ConfigError,
    PowerPredictorConfig,
    PredictorConfig,
    ServiceConfig,
    load_config,
)

EXAMPLE = REPO_ROOT / "configs" / "config.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None = None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={} if environ is None else environ)
    return str(caught.value)


@pytest.fixture()
def in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_are_valid(in_empty_dir: Path) -> None:
    config = load_config(environ={})
    assert config == ServiceConfig()
    assert config.predictor == PredictorConfig(model_update_interval=3600, prediction_horizon=3600,
                                               step=60, max_gap=300)
    assert config.predictor.horizon_steps == 60
    assert config.models.power_predictor.hidden_size == 64
    assert config.features == ALL_FEATURES
    assert config.auto_scaling.power_based.cooldown_period == 300
    assert (config.model_path, config.influx_host, config.gpu_monitoring_enabled, config.ipmi_hosts) == (
        "trained_models", None, True, ())


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing\n"), environ={}) == ServiceConfig()


def test_feature_names_match_the_data_loader() -> None:
    assert ALL_FEATURES == OPTIONAL_FEATURES


def test_example_file_documents_the_defaults() -> None:
    assert load_config(EXAMPLE, environ={}) == ServiceConfig()
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert raw["predictor"] == {"model_update_interval": "1h", "prediction_horizon": "1h", "step": "1min",
                                "max_gap": "5min"}
    assert raw["models"]["power_predictor"] == PowerPredictorConfig().model_dump()


def test_default_path_and_env_path(in_empty_dir: Path, tmp_path: Path) -> None:
    (in_empty_dir / "configs").mkdir()
    (in_empty_dir / "configs" / "config.yaml").write_text("model_path: from_default\n", encoding="utf-8")
    assert load_config(environ={}).model_path == "from_default"
    other = tmp_path / "other.yaml"
    other.write_text("model_path: from_env\n", encoding="utf-8")
    assert load_config(environ={"KCLOUD_CONFIG": str(other)}).model_path == "from_env"


@pytest.mark.parametrize(("text", "expected"), [("30m", 1800), ("10min", 600), ("1h", 3600), ("90", 90)])
def test_durations(tmp_path: Path, text: str, expected: int) -> None:
    path = write(tmp_path, f"auto_scaling:\n  power_based:\n    cooldown_period: {text}\n")
    assert load_config(path, environ={}).auto_scaling.power_based.cooldown_period == expected


def test_bad_duration_names_key(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "predictor:\n  step: 5 parsecs\n"))
    assert message.startswith(f"{tmp_path / 'config.yaml'}: predictor.step: ")
    assert "parsecs" in message


def test_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "model_path: in_file\ngpu_monitoring_enabled: true\nipmi_hosts: [bmc0]\n")
    environ = {"MODEL_PATH": "/srv/models", "INFLUX_HOST": "influx:8086", "GPU_MONITORING_ENABLED": "No",
               "IPMI_HOSTS": "bmc1, bmc2:623"}
    config = load_config(path, environ=environ)
    assert config.model_path == "/srv/models"
    assert config.influx_host == "influx:8086"
    assert config.gpu_monitoring_enabled is False
    assert config.ipmi_hosts == ("bmc1", "bmc2:623")
    assert load_config(path, environ={"GPU_MONITORING_ENABLED": "TRUE"}).gpu_monitoring_enabled is True
    assert load_config(path, environ={"GPU_MONITORING_ENABLED": "0"}).gpu_monitoring_enabled is False
    assert load_config(path, environ={"MODEL_PATH": ""}).model_path == "in_file"


def test_bad_gpu_flag_names_variable() -> None:
    message = error_of(environ={"GPU_MONITORING_ENABLED": "maybe"})
    assert message.startswith("GPU_MONITORING_ENABLED: ")
    assert "'maybe'" in message


@pytest.mark.parametrize("value", ["bmc1,,bmc2", "bmc1:0", "bmc1:70000", "bmc1:ipmi", ":623"])
def test_bad_ipmi_hosts_env_refused(value: str) -> None:
    assert error_of(environ={"IPMI_HOSTS": value}).startswith("IPMI_HOSTS: ")


def test_bad_ipmi_hosts_file_entry_refused(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "ipmi_hosts: [bmc1, 'bmc2:99999']\n"))
    assert "ipmi_hosts[1]: 'bmc2:99999' has an invalid port" in message


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


def test_duplicate_features_refused(tmp_path: Path) -> None:
    assert "duplicate feature(s) ['memory_usage']" in error_of(
        write(tmp_path, "features: [memory_usage, temperature, memory_usage]\n"))


def test_thresholds_cross_check(tmp_path: Path) -> None:
    path = write(tmp_path, "auto_scaling:\n  power_based:\n    scale_in_threshold: 80\n")
    message = error_of(path)
    expected = "auto_scaling.power_based: scale_in_threshold (80) must be below scale_out_threshold (80)"
    assert expected in message


def test_max_gap_below_step_refused(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "predictor:\n  step: 5min\n  max_gap: 1min\n"))
    assert "predictor: max_gap (1min) must be at least step (5min)" in message


def test_horizon_must_be_multiple_of_step(tmp_path: Path) -> None:
    path = write(tmp_path, "predictor:\n  step: 10min\n  max_gap: 10min\n  prediction_horizon: 45min\n")
    message = error_of(path)
    assert "prediction_horizon (45min) must be a whole multiple of step (10min)" in message
    path = write(tmp_path, "predictor:\n  step: 15min\n  max_gap: 15min\n  prediction_horizon: 45min\n")
    assert load_config(path, environ={}).predictor.horizon_steps == 3


def test_missing_file_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert error_of(missing) == f"{missing}: config file not found"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(environ={"KCLOUD_CONFIG": str(missing)})


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_yaml_refused(tmp_path: Path, text: str) -> None:
    message = error_of(write(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'config.yaml'}: top level must be a mapping")


def test_unparsable_yaml_refused(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "predictor: [unclosed\n"))
    assert message.startswith(f"{tmp_path / 'config.yaml'}: not valid YAML")


def test_config_is_frozen_and_round_trips() -> None:
    config = ServiceConfig()
    with pytest.raises(ValueError):
        config.model_path = "elsewhere"  # type: ignore[misc]
    assert ServiceConfig.model_validate(config.model_dump()) == config
