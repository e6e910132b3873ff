"""`predictor.resolutions`: the power models the service serves, by step and horizon (training.settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import ConfigError
from training.settings import DEFAULT_RESOLUTIONS, load_training_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_by_default_a_fine_model_for_the_hour_and_an_hourly_one_with_the_seed_s_window():
    fine, hourly = load_training_config(environ={}, path=None).predictor.resolutions
    assert (fine.model_id, fine.step, fine.horizon) == ("power_lstm", 60, 3600)
    assert (hourly.model_id, hourly.step, hourly.horizon, hourly.sequence_length) == ("power_lstm_1h", 3600,
                                                                                     7 * 86400, 168)
    assert DEFAULT_RESOLUTIONS == (fine, hourly)


def test_a_config_lists_its_own(tmp_path):
    path = write(tmp_path, "predictor:\n  resolutions:\n"
                           "    - {model_id: power_10m, step: 10min, horizon: 6h, sequence_length: 36}\n")
    (only,) = load_training_config(path, environ={}).predictor.resolutions
    assert (only.model_id, only.step, only.horizon, only.sequence_length) == ("power_10m", 600, 21600, 36)


@pytest.mark.parametrize(("entry", "phrase"), [
    ("{model_id: a, step: 1h, horizon: 90min, sequence_length: 24}", "whole multiple of step (1h)"),
    ("{model_id: a, step: 1h, horizon: 1h, sequence_length: 24}", "at least two steps"),
    ("{model_id: A b, step: 1min, horizon: 1h, sequence_length: 24}", "predictor.resolutions[0].model_id"),
    ("{model_id: a, step: 1min, horizon: 1h}", "sequence_length"),
])
def test_a_bad_resolution_is_refused_naming_the_key(tmp_path, entry, phrase):
    with pytest.raises(ConfigError, match="predictor.resolutions") as refused:
        load_training_config(write(tmp_path, f"predictor:\n  resolutions:\n    - {entry}\n"), environ={})
    assert phrase in str(refused.value)


def test_model_ids_must_differ_and_one_at_least_is_listed(tmp_path):
    entry = "{model_id: a, step: 1min, horizon: 1h, sequence_length: 24}"
    with pytest.raises(ConfigError, match="at least one model"):
        load_training_config(write(tmp_path, "predictor:\n  resolutions: []\n"), environ={})
    with pytest.raises(ConfigError, match="model ids must differ"):
        load_training_config(write(tmp_path, f"predictor:\n  resolutions:\n    - {entry}\n    - {entry}\n"),
                             environ={})
