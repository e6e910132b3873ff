"""The training settings: the config file's `predictor`, `models`, `features`, `model_path` and `storage_path`.

The defaults are the seed's config.yaml values (tests/data/seed/config.yaml); `models` and `features` may be
written under `predictor` as the seed does (core.settings.lift_predictor_keys), and the cost model's type
`gradient_boosting` is read as `lightgbm`, which it is.

`MODEL_PATH` overrides `model_path`, `KCLOUD_STORAGE_PATH` overrides `storage_path`. Load with
`load_training_config`; every failure is a `core.settings.ConfigError` naming the file (or variable), the
dotted key and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, field_validator, model_validator

from core.durations import format_duration
from core.registry_metadata import MODEL_ID_PATTERN
from core.settings import ConfigError, Duration, EnvSettings, Section, load_keys

# Canonical optional input columns; must match core.telemetry_csv.OPTIONAL_FEATURES (checked by the tests).
FeatureName = Literal[
    "cpu_utilization", "memory_usage", "gpu_utilization", "npu_utilization", "temperature", "workload_type"
]
ALL_FEATURES: tuple[str, ...] = get_args(FeatureName)


MIN_DEFAULT_MAX_GAP_S = 300
MAX_GAP_STEPS = 5


def default_max_gap(step_s: int) -> int:
    """`max_gap` when the config does not say: 5 steps, at least 5 minutes."""
    return max(MIN_DEFAULT_MAX_GAP_S, MAX_GAP_STEPS * step_s)


MAX_HORIZON_STEPS = 10_080  # a week at a 1-minute step: the model's output layer and every window grow with it


def too_many_steps(key: str, horizon: int, step: int) -> str | None:
    """Why a horizon of that many steps is refused, or None."""
    if horizon // step <= MAX_HORIZON_STEPS:
        return None
    return (f"{key} ({format_duration(horizon)}) is {horizon // step} steps of {format_duration(step)}: at most "
            f"{MAX_HORIZON_STEPS} (a coarser step forecasts further)")


class Resolution(Section):
    """One power model the service serves: its registry id, step, horizon and input window. A forecast request
    goes to the model of the finest step whose horizon covers it."""

    model_id: str = Field(pattern=MODEL_ID_PATTERN)
    step: Duration
    horizon: Duration
    sequence_length: int = Field(ge=2)

    def feature_spec(self) -> dict[str, int]:
        """Its shape as a trained version's `feature_spec` names it."""
        return {"step_s": self.step, "horizon_steps": self.horizon // self.step,
                "sequence_length": self.sequence_length}

    @model_validator(mode="after")
    def _whole_steps(self) -> Resolution:
        if self.horizon % self.step or self.horizon < 2 * self.step:
            raise ValueError(f"horizon ({format_duration(self.horizon)}) must be a whole multiple of step "
                             f"({format_duration(self.step)}), at least two steps")
        if problem := too_many_steps("horizon", self.horizon, self.step):
            raise ValueError(problem)
        return self


# A 1-minute model for the next hour, an hourly one with the seed's week-long window for a day and up to the
# API's longest horizon (7 days).
DEFAULT_RESOLUTIONS = (
    Resolution(model_id="power_lstm", step=60, horizon=3600, sequence_length=60),
    Resolution(model_id="power_lstm_1h", step=3600, horizon=7 * 86400, sequence_length=168),
)


class PredictorConfig(Section):
    """Series and forecasting cadence (`model_update_interval`: the retrain scheduler's interval). Without
    `max_gap`, it follows the step (`default_max_gap`); a `max_gap` given is kept as given."""

    model_update_interval: Duration = 3600
    prediction_horizon: Duration = 3600
    step: Duration = 60
    max_gap: Duration = Field(None, validate_default=False)  # type: ignore[assignment]  # None: set below
    resolutions: tuple[Resolution, ...] = Field(DEFAULT_RESOLUTIONS,
                                                description="the power models served, by step and horizon")

    def max_gap_at(self, step_s: int) -> int:
        """`max_gap` for series resampled at another step: the one given, else that step's default; at least a step."""
        return max(self.max_gap if "max_gap" in self.model_fields_set else default_max_gap(step_s), step_s)

    def resolution(self, model_id: str) -> Resolution | None:
        """The served resolution with this model id, if any."""
        return next((r for r in self.resolutions if r.model_id == model_id), None)

    @field_validator("resolutions")
    @classmethod
    def _distinct_ids(cls, value: tuple[Resolution, ...]) -> tuple[Resolution, ...]:
        ids = [r.model_id for r in value]
        if not ids:
            raise ValueError("list at least one model")
        if len(set(ids)) < len(ids):
            raise ValueError(f"model ids must differ: {ids}")
        return value

    @model_validator(mode="after")
    def _check_steps(self) -> PredictorConfig:
        if self.max_gap is None:  # not given (so not in model_fields_set): follows the step
            object.__setattr__(self, "max_gap", default_max_gap(self.step))
        step, problems = format_duration(self.step), []
        if self.max_gap < self.step:
            problems.append(f"max_gap ({format_duration(self.max_gap)}) must be at least step ({step})")
        if self.prediction_horizon % self.step:
            problems.append(f"prediction_horizon ({format_duration(self.prediction_horizon)}) "
                            f"must be a whole multiple of step ({step})")
        elif problem := too_many_steps("prediction_horizon", self.prediction_horizon, self.step):
            problems.append(problem)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def horizon_steps(self) -> int:
        """The forecast horizon in steps."""
        return self.prediction_horizon // self.step


MAX_SEQUENCE_LENGTH = 100_000
MAX_HIDDEN_SIZE = 4096
MAX_EPOCHS = 10_000


class PowerPredictorConfig(Section):
    """The LSTM power forecaster: sizes, optimizer and interval settings."""

    type: Literal["lstm"] = "lstm"
    # upper bounds: beyond them a model only exhausts memory or time (a week at 1 s is 604,800 steps)
    sequence_length: int = Field(168, ge=2, le=MAX_SEQUENCE_LENGTH)
    hidden_size: int = Field(128, ge=1, le=MAX_HIDDEN_SIZE)
    num_layers: int = Field(2, ge=1, le=4)
    batch_size: int = Field(32, ge=1, le=65_536)
    windows_per_epoch: int | None = Field(4096, ge=1)  # a fresh random sample each epoch; none: every window
    epochs: int = Field(60, ge=1, le=MAX_EPOCHS)
    min_epochs: int = Field(4, ge=1)  # a retraining asking for fewer epochs is refused
    patience: int = Field(8, ge=1)
    learning_rate: float = Field(0.002, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    relative_power: bool = False  # read the power input relative to the window's last value (training/power/model.py)
    power_input_challenger: bool = False  # also train with the other power input; keep the lower CALIB MAE
    seed: int = Field(42, ge=0, lt=2**32)  # numpy and LightGBM take 0 .. 2**32 - 1
    interval_coverage: float = Field(0.8, gt=0, lt=1)
    confidence_tolerance: float = Field(0.1, gt=0, lt=1)


COST_MODEL_TYPES = {"lightgbm": "lightgbm", "gradient_boosting": "lightgbm"}
"""Names the config may give the cost model's type -> the type loaded (the seed says gradient_boosting)."""


def _cost_model_type(value: Any) -> Any:
    if isinstance(value, str) and value in COST_MODEL_TYPES:
        return COST_MODEL_TYPES[value]
    raise ValueError(f"{value!r} is not a cost model type; use lightgbm (or gradient_boosting, the same model)")


class CostPredictorConfig(Section):
    """The LightGBM cost model (gradient-boosted trees)."""

    type: Annotated[Literal["lightgbm"], BeforeValidator(_cost_model_type)] = "lightgbm"
    n_estimators: int = Field(100, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(31, ge=2)


class ModelsConfig(Section):
    power_predictor: PowerPredictorConfig = PowerPredictorConfig()
    cost_predictor: CostPredictorConfig = CostPredictorConfig()


class TrainingConfig(Section):
    """The config file's keys the training jobs and the model registry read."""

    predictor: PredictorConfig = PredictorConfig()
    models: ModelsConfig = ModelsConfig()
    features: tuple[FeatureName, ...] = ALL_FEATURES  # type: ignore[assignment]
    model_path: str = Field("trained_models", min_length=1)
    storage_path: str | None = Field(
        None, min_length=1, description="where Ray Train keeps a run's checkpoints: a filesystem path every node "
        "mounts at the same place, or an object-store URI (s3://, gs://, ...); none: a temporary local folder, "
        "for clusters on one machine (training.power.checkpoint_storage)")

    def with_storage_path(self, storage_path: str | None) -> TrainingConfig:
        """This config with `storage_path` replaced (None keeps it). Raises ConfigError for an empty path."""
        if storage_path is None:
            return self
        if not storage_path.strip():
            raise ConfigError("storage_path: must not be empty")
        return self.model_copy(update={"storage_path": storage_path})

    @field_validator("features")
    @classmethod
    def _no_duplicates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"duplicate feature(s) {repeated}")
        return value

    @model_validator(mode="after")
    def _seed_window_for_the_coarsest_model(self) -> TrainingConfig:
        """Without `predictor.resolutions`, `models.power_predictor.sequence_length` (the seed's 168: a week of
        hours) is the input window of the coarsest resolution, the hourly model."""
        resolutions, window = self.predictor.resolutions, self.models.power_predictor.sequence_length
        coarsest = max(range(len(resolutions)), key=lambda i: resolutions[i].step)
        if "resolutions" in self.predictor.model_fields_set or resolutions[coarsest].sequence_length == window:
            return self
        predictor = self.predictor.model_copy()  # still without "resolutions" given: they follow the window
        object.__setattr__(predictor, "resolutions", tuple(r.model_copy(update={"sequence_length": window})
                                                           if i == coarsest else r for i, r in enumerate(resolutions)))
        object.__setattr__(self, "predictor", predictor)
        return self


class TrainingOverrides(EnvSettings):
    """Environment overrides of the training keys."""

    model_path: str | None = Field(None, alias="MODEL_PATH")
    storage_path: str | None = Field(None, alias="KCLOUD_STORAGE_PATH")


def load_training_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> TrainingConfig:
    """The training keys of the config file (found as `core.settings.config_path` says, else defaults), with
    MODEL_PATH and KCLOUD_STORAGE_PATH applied. Raises ConfigError."""
    return load_keys(TrainingConfig, path, environ, overrides=[TrainingOverrides])
