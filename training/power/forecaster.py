"""PowerForecaster: a trained PowerLSTM with its feature pipeline and calibration, as one artifact,
and the served forecast built on it (training.power.blend: the LSTM, the direct LightGBM or both).

The same object serves the backtest, the CLI and the Serve deployment: `forecast` is what the service
answers with, `forecast_lstm` the LSTM alone. On disk it is a folder: `model.pt` (state dict),
`architecture.json`, `pipeline.json` (fitted scalers), `calibration.json` (the LSTM's), and for models
trained with a served blend `served.json` plus the LightGBM partner `lightgbm.txt`/`lightgbm.json` (saved
whenever one was fitted, so that the online blend can follow both; before, only when the static blend used it), and
`features_only.json` (the power estimator and its calibration: training.power.features_only). A folder without
`served.json` (an older model) serves the LSTM alone; one without `features_only.json` needs a power history.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightgbm.basic import LightGBMError
from pydantic import BaseModel, ConfigDict

from training.power.blend import ServedBlend
from training.power.calibration import CalibratedForecast, Calibration
from training.power.features import FeaturePipeline
from training.power.features_only import FeaturesOnly
from training.power.fit import build_model, predict_changes
from training.power.gbm import MODEL_FILE as GBM_FILE
from training.power.gbm import DirectLightGBM
from training.power.model import TargetCalendar

WEIGHTS_FILE = "model.pt"
ARCHITECTURE_FILE = "architecture.json"
PIPELINE_FILE = "pipeline.json"
CALIBRATION_FILE = "calibration.json"
SERVED_FILE = "served.json"
FEATURES_ONLY_FILE = "features_only.json"


class ArtifactError(ValueError):
    """A model folder that cannot be loaded; the message says which file and why."""


class ArtifactUnreadable(ArtifactError):
    """A model folder a storage error (other than a missing file) kept from being read just now: not corrupt."""


class Architecture(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_features: int
    sequence_length: int
    horizon: int
    hidden_size: int
    num_layers: int
    dropout: float
    target_calendar: TargetCalendar = ()  # the per-lead calendar head's inputs; () in models saved before it
    relative_power: bool = False  # the power input read relative to the window's last value (PowerLSTM)


class PowerForecaster:
    """Forecast power for every lead time with intervals and confidence."""

    def __init__(self, state_dict: dict[str, torch.Tensor], architecture: Architecture,
                 pipeline: FeaturePipeline, calibration: Calibration | None = None, device: str = "cpu",
                 served: ServedBlend | None = None, gbm: DirectLightGBM | None = None,
                 features_only: FeaturesOnly | None = None):
        self.architecture = architecture
        self.pipeline = pipeline
        self.calibration = calibration
        self.served = served
        self.gbm = gbm
        self.features_only = features_only
        self.device = torch.device(device)
        self.model = build_model(architecture.n_features, architecture.horizon, architecture.hidden_size,
                                 architecture.num_layers, architecture.dropout, architecture.target_calendar,
                                 architecture.relative_power)
        try:
            self.model.load_state_dict(state_dict)
        except RuntimeError as exc:  # tensors that do not fit the architecture (a device error is not this)
            raise ArtifactError(f"the weights do not fit the architecture ({exc})") from exc
        self.model.to(self.device).eval()

    def use_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Serve other weights of the same architecture (the refit on the whole training part)."""
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

    @property
    def served_method(self) -> str:
        return self.served.method if self.served is not None else "lstm"

    @property
    def served_calibration(self) -> Calibration | None:
        """The calibration behind the served forecast (intervals, confidence and the peak bound)."""
        return self.served.calibration if self.served is not None else self.calibration

    @property
    def interval_coverage(self) -> float:
        """Nominal coverage of the served interval (0 without a calibration)."""
        calibration = self.served.calibration if self.served is not None else self.calibration
        return calibration.coverage if calibration is not None else 0.0

    @property
    def confidence_tolerance(self) -> float | None:
        """The band (a fraction of the point forecast) whose hit `confidence` states the probability of (None
        without a calibration)."""
        calibration = self.served.calibration if self.served is not None else self.calibration
        return calibration.tolerance if calibration is not None else None

    @property
    def blends_online(self) -> bool:
        """Whether the served forecast can follow the online blend (training.power.online_blend): a served blend
        with the LightGBM partner beside the LSTM."""
        return self.served is not None and self.gbm is not None

    def forecast(self, inputs: np.ndarray, last_power: np.ndarray, lstm_weight: np.ndarray | None = None, *,
                 partner: bool = False) -> CalibratedForecast:
        """The served calibrated forecast for windows [N, T, F] whose last observed power is `last_power` [N]
        (`lstm_weight` [H] or [N, H]: the online blend's, for a model that `blends_online`). With `partner`, or
        weights, both models' points come with it (`CalibratedForecast.experts`) where the model has both."""
        return self.forecast_from(self.experts(inputs, last_power, partner=partner or lstm_weight is not None),
                                  lstm_weight)

    def experts(self, inputs: np.ndarray, last_power: np.ndarray, *,
                partner: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """The LSTM's uncalibrated (lower, median, upper) [N, H, 3] and the LightGBM partner's point [N, H]: None
        without one, where the LSTM serves without a served blend, and where the served mix does not use it and
        `partner` does not ask for it (what the online blend learns from)."""
        if self.served is not None and self.served.needs_gbm and self.gbm is None:
            raise ArtifactError(f"the served {self.served.method} forecast needs the LightGBM model")
        lstm = self.raw_quantiles(inputs, last_power)
        if self.served is None or self.gbm is None or not (partner or self.served.needs_gbm):
            return lstm, None
        return lstm, self.gbm.predict_arrays(inputs, last_power, self.horizon)

    def forecast_from(self, experts: tuple[np.ndarray, np.ndarray | None],
                      lstm_weight: np.ndarray | None = None) -> CalibratedForecast:
        """`forecast` of the models' forecasts `experts` (as `experts` gives them)."""
        lstm, gbm = experts
        if self.served is None:
            return self._lstm_alone(lstm)
        if lstm_weight is not None and gbm is None:
            raise ArtifactError("the online blend needs the LightGBM model, which this model was saved without")
        return self.served.apply(lstm, gbm, lstm_weight)

    def forecast_lstm(self, inputs: np.ndarray, last_power: np.ndarray) -> CalibratedForecast:
        """The LSTM's own calibrated forecast."""
        return self._lstm_alone(self.raw_quantiles(inputs, last_power))

    def _lstm_alone(self, lstm_quantiles: np.ndarray) -> CalibratedForecast:
        if self.calibration is None:
            raise ArtifactError("this model has no calibration; it cannot give intervals")
        return self.calibration.apply(lstm_quantiles)

    def forecast_features_only(self, inputs: np.ndarray, last_power: np.ndarray,
                               scale: np.ndarray) -> CalibratedForecast:
        """The LSTM on windows whose power was estimated from the features, with the mode's calibration;
        `scale` [N] is the estimate's typical error at each origin."""
        if self.features_only is None:
            raise ArtifactError("this model has no features-only mode (trained before it); send a power history")
        return self.features_only.calibration.apply(self.raw_quantiles(inputs, last_power), scale)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), folder / WEIGHTS_FILE)
        (folder / ARCHITECTURE_FILE).write_text(self.architecture.model_dump_json(indent=2))
        (folder / PIPELINE_FILE).write_text(self.pipeline.model_dump_json(indent=2))
        if self.calibration is not None:
            (folder / CALIBRATION_FILE).write_text(self.calibration.model_dump_json(indent=2))
        if self.served is not None:
            (folder / SERVED_FILE).write_text(self.served.model_dump_json(indent=2))
            if self.gbm is not None:
                self.gbm.save(folder)
        if self.features_only is not None:
            (folder / FEATURES_ONLY_FILE).write_text(self.features_only.model_dump_json(indent=2))

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> PowerForecaster:
        try:
            architecture = Architecture.model_validate_json((folder / ARCHITECTURE_FILE).read_text())
            pipeline = FeaturePipeline.model_validate_json((folder / PIPELINE_FILE).read_text())
            calibration_path = folder / CALIBRATION_FILE
            calibration = (Calibration.model_validate_json(calibration_path.read_text())
                           if calibration_path.exists() else None)
            state = torch.load(folder / WEIGHTS_FILE, map_location=device, weights_only=True)
            served_path = folder / SERVED_FILE
            served = ServedBlend.model_validate_json(served_path.read_text()) if served_path.exists() else None
            gbm = DirectLightGBM.load(folder) if (folder / GBM_FILE).exists() else None
            features_only_path = folder / FEATURES_ONLY_FILE
            features_only = (FeaturesOnly.model_validate_json(features_only_path.read_text())
                             if features_only_path.exists() else None)
        except (FileNotFoundError, IsADirectoryError, ValueError, RuntimeError, LightGBMError) as exc:
            raise ArtifactError(f"{folder}: not a loadable power model ({exc})") from exc
        except OSError as exc:
            raise ArtifactUnreadable(f"{folder}: cannot be read ({exc})") from exc
        if len(pipeline.feature_names) != architecture.n_features:
            raise ArtifactError(f"{folder}: pipeline has {len(pipeline.feature_names)} features, "
                                f"model expects {architecture.n_features}")
        if served is not None and served.needs_gbm and gbm is None:
            raise ArtifactError(f"{folder}: served.json asks for {served.method} but {GBM_FILE} is missing")
        try:
            return cls(state, architecture, pipeline, calibration, device, served=served, gbm=gbm,
                       features_only=features_only)
        except ArtifactError as exc:
            raise ArtifactError(f"{folder}: {exc}") from exc
