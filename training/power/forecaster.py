"""PowerForecaster: a trained PowerLSTM with its feature pipeline and calibration, as one artifact.

The same object serves the backtest, the CLI and the Serve deployment. On disk it is a folder:
`model.pt` (state dict), `architecture.json`, `pipeline.json` (fitted scalers) and `calibration.json`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from training.power.calibration import CalibratedForecast, Calibration
from training.power.features import FeaturePipeline
from training.power.fit import build_model, predict_changes

WEIGHTS_FILE = "model.pt"
ARCHITECTURE_FILE = "architecture.json"
PIPELINE_FILE = "pipeline.json"
CALIBRATION_FILE = "calibration.json"


class ArtifactError(ValueError):
    """A model folder that cannot be loaded; the message says which file and why."""


class Architecture(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_features: int
    sequence_length: int
    horizon: int
    hidden_size: int
    num_layers: int
    dropout: float


class PowerForecaster:
    """Forecast power for every lead time with intervals and confidence."""

    def __init__(self, state_dict: dict[str, torch.Tensor], architecture: Architecture,
                 pipeline: FeaturePipeline, calibration: Calibration | None = None, device: str = "cpu"):
        self.architecture = architecture
        self.pipeline = pipeline
        self.calibration = calibration
        self.device = torch.device(device)
        self.model = build_model(architecture.n_features, architecture.horizon, architecture.hidden_size,
                                 architecture.num_layers, architecture.dropout)
        self.model.load_state_dict(state_dict)
        self.model.to(self.device).eval()

    @property
    def horizon(self) -> int:
        return self.architecture.horizon

    @property
    def sequence_length(self) -> int:
        return self.architecture.sequence_length

    def raw_quantiles(self, inputs: np.ndarray, last_power: np.ndarray) -> np.ndarray:
        """Uncalibrated (lower, median, upper) in watts: [N, H, 3]."""
        changes = predict_changes(self.model, inputs, self.device)
        return last_power[:, None, None] + changes * self.pipeline.power_std

    def forecast(self, inputs: np.ndarray, last_power: np.ndarray) -> CalibratedForecast:
        """Calibrated forecast for windows [N, T, F] whose last observed power is `last_power` [N]."""
        if self.calibration is None:
            raise ArtifactError("this model has no calibration; it cannot give intervals")
        return self.calibration.apply(self.raw_quantiles(inputs, last_power))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), folder / WEIGHTS_FILE)
        (folder / ARCHITECTURE_FILE).write_text(self.architecture.model_dump_json(indent=2))
        (folder / PIPELINE_FILE).write_text(self.pipeline.model_dump_json(indent=2))
        if self.calibration is not None:
            (folder / CALIBRATION_FILE).write_text(self.calibration.model_dump_json(indent=2))

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> PowerForecaster:
        try:
            architecture = Architecture.model_validate_json((folder / ARCHITECTURE_FILE).read_text())
            pipeline = FeaturePipeline.model_validate_json((folder / PIPELINE_FILE).read_text())
            calibration_path = folder / CALIBRATION_FILE
            calibration = (Calibration.model_validate_json(calibration_path.read_text())
                           if calibration_path.exists() else None)
            state = torch.load(folder / WEIGHTS_FILE, map_location=device, weights_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ArtifactError(f"{folder}: not a loadable power model ({exc})") from exc
        if len(pipeline.feature_names) != architecture.n_features:
            raise ArtifactError(f"{folder}: pipeline has {len(pipeline.feature_names)} features, "
                                f"model expects {architecture.n_features}")
        return cls(state, architecture, pipeline, calibration, device)
