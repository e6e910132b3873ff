"""Issue 12: the seed's config.yaml, verbatim (tests/data/seed/config.yaml), is accepted and means what it says;
its values are the defaults; the example files agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.settings import ServiceConfig, load_service_config
from core.settings import ConfigError
from tests.paths import REPO_ROOT, TEST_DATA

SEED = TEST_DATA / "seed" / "config.yaml"


@pytest.fixture(scope="module")
def seed() -> ServiceConfig:
    return load_service_config(SEED, environ={})


def test_the_seed_config_is_accepted_as_written(seed: ServiceConfig) -> None:
    raw = yaml.safe_load(SEED.read_text(encoding="utf-8"))
    assert set(raw) == {"predictor", "auto_scaling"} and {"models", "features"} <= set(raw["predictor"])
    assert raw["predictor"]["models"]["cost_predictor"]["type"] == "gradient_boosting"
    assert isinstance(seed, ServiceConfig)


def test_the_seed_config_means_what_it_says(seed: ServiceConfig) -> None:
    predictor, models = seed.predictor, seed.models
    assert (predictor.model_update_interval, predictor.prediction_horizon) == (3600, 3600)  # bare number: seconds
    power = models.power_predictor
    assert (power.type, power.sequence_length, power.hidden_size, power.batch_size) == ("lstm", 168, 128, 32)
    assert (models.cost_predictor.type, models.cost_predictor.n_estimators) == ("lightgbm", 100)
    assert seed.features == ("cpu_utilization", "memory_usage", "gpu_utilization", "npu_utilization",
                             "temperature", "workload_type")
    based, ahead = seed.auto_scaling.power_based, seed.auto_scaling.predictive_scaling
    assert (based.max_power_budget, based.scale_out_threshold, based.scale_in_threshold) == (10000, 80, 50)
    assert based.cooldown_period == 300
    assert (ahead.enabled, ahead.lookahead_minutes, ahead.confidence_threshold) == (True, 30, 0.8)
    hourly = max(predictor.resolutions, key=lambda r: r.step)
    assert hourly.sequence_length == 168  # the seed's window is the hourly model's


def test_the_seeds_values_are_the_defaults(seed: ServiceConfig) -> None:
    assert seed == ServiceConfig()


def test_the_seed_layout_and_the_flat_one_are_the_same(tmp_path: Path, seed: ServiceConfig) -> None:
    raw = yaml.safe_load(SEED.read_text(encoding="utf-8"))
    flat = {**raw, "predictor": {k: v for k, v in raw["predictor"].items() if k not in ("models", "features")},
            "models": raw["predictor"]["models"], "features": raw["predictor"]["features"]}
    path = tmp_path / "flat.yaml"
    path.write_text(yaml.safe_dump(flat), encoding="utf-8")
    assert load_service_config(path, environ={}) == seed
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump({**raw, "models": raw["predictor"]["models"]}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_service_config(both, environ={})
    assert str(caught.value).startswith(f"{both}: predictor.models and models: both given")


def test_a_bad_value_in_the_seed_layout_names_the_key_as_written(tmp_path: Path) -> None:
    text = SEED.read_text(encoding="utf-8").replace("hidden_size: 128", "hidden_size: -1")
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_service_config(path, environ={})
    assert str(caught.value) == (f"{path}: predictor.models.power_predictor.hidden_size: Input should be greater "
                                 "than or equal to 1 (got -1)")


def test_the_example_files(tmp_path: Path) -> None:
    """`cp config.example.yaml config.yaml` gives the defaults; configs/config.example.yaml points at it."""
    assert load_service_config(REPO_ROOT / "config.example.yaml", environ={}) == ServiceConfig()
    pointer = REPO_ROOT / "configs" / "config.example.yaml"
    assert load_service_config(pointer, environ={}) == ServiceConfig()
    assert "../config.example.yaml" in pointer.read_text(encoding="utf-8")
    assert "/config.yaml" in (REPO_ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
