"""The opt-in relative power input (`models.power_predictor.relative_power`): from the config to the trained model,
its saved architecture and its forecasts, and the input a power-input challenger kept (the Ray Train side:
tests/integration/test_backtest_suite.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from core.telemetry_csv import validate_telemetry
from tests.fakes.trainer import untrained
from training.power.dataset import PreparedData, prepare, train_forecaster
from training.power.forecaster import PowerForecaster
from training.settings import PowerPredictorConfig
from training.synthetic_patterns import generate_pattern

STEP = 600
SMALL = PowerPredictorConfig(hidden_size=8, num_layers=1, sequence_length=12, epochs=4, min_epochs=1)


def level_shifts() -> PreparedData:
    frame = validate_telemetry(generate_pattern("level_shifts", days=6, step_s=STEP))
    return prepare(frame, step_s=STEP, max_gap_s=STEP, features=(), sequence_length=12, horizon=3, train_fraction=0.8)


def test_the_config_s_relative_power_reaches_the_model_its_saved_architecture_and_its_forecasts(monkeypatch,
                                                                                                 tmp_path) -> None:
    monkeypatch.setattr("training.power.dataset.train_power_lstm", untrained(0.0))
    prepared = level_shifts()
    absolute, _ = train_forecaster(prepared, SMALL, verbose=False)
    relative, _ = train_forecaster(prepared, SMALL.model_copy(update={"relative_power": True}), verbose=False)
    assert not absolute.architecture.relative_power and not absolute.model.relative_power
    assert relative.architecture.relative_power and relative.model.relative_power

    inputs = np.random.default_rng(1).normal(size=(5, 12, relative.architecture.n_features)).astype(np.float32)
    higher = inputs.copy()
    higher[:, :, 0] += 3.0  # the same windows at another level
    last = np.full(5, 40.0)
    for forecaster, name in ((absolute, "absolute"), (relative, "relative")):
        torch.manual_seed(0)
        with torch.no_grad():
            for parameter in forecaster.model.parameters():
                parameter.normal_(0.0, 0.5)  # weights that read their inputs (the fake's barely do)
        forecaster.save(tmp_path / name)
        loaded = PowerForecaster.load(tmp_path / name)
        assert loaded.architecture.relative_power is (name == "relative")
        same = np.allclose(loaded.raw_quantiles(higher, last), loaded.raw_quantiles(inputs, last), atol=1e-4)
        assert same is (name == "relative")


def test_the_forecaster_reads_the_power_input_of_the_run_kept_not_the_config_s(monkeypatch) -> None:
    """Where the power-input challenger's run was kept, the weights read the other input: the model built for them
    and the architecture saved with them must too."""
    fake = untrained(0.0)

    def other_input_kept(*args: Any, **kwargs: Any):
        weights = fake(*args, **kwargs)
        return replace(weights, relative_power=not weights.relative_power)

    monkeypatch.setattr("training.power.dataset.train_power_lstm", other_input_kept)
    config = SMALL.model_copy(update={"power_input_challenger": True})
    forecaster, weights = train_forecaster(level_shifts(), config, verbose=False)
    assert weights.relative_power and forecaster.architecture.relative_power and forecaster.model.relative_power
