"""Fixtures of the retraining tests: the real sample, a temporary registry, and the fake Ray Train step."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd
import pytest
import torch

from core.registry import ModelRegistry
from core.telemetry_csv import load_telemetry_csv
from tests.fakes.trainer import serve_lstm_alone, untrained
from tests.paths import TEST_DATA


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return load_telemetry_csv(TEST_DATA / "upm_sample.csv")


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


@pytest.fixture
def shift(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[float], None]]:
    """`shift(units)`: the next trainings return an untrained model whose median is off by `units`, served alone
    (no LightGBM blend to make up for it), so a version's quality is its shift's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    serve_lstm_alone(monkeypatch)
    yield lambda units: monkeypatch.setattr("training.power.dataset.train_power_lstm", untrained(units))
    torch.set_num_threads(threads)
