"""What one retraining of the power forecaster is asked to do: its data, config overrides and run options."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from core.durations import format_duration
from core.registry import ModelRegistry
from core.registry_metadata import ModelId
from core.settings import ConfigError, Duration, format_errors
from training.power.scaling import TrainScaling
from training.power.windows import Split
from training.settings import TrainingConfig

FrameSource = pd.DataFrame | Callable[[int], pd.DataFrame]
"""Validated telemetry in the canonical schema (core.telemetry_csv), or a callable returning it for a step in
seconds: the caller decides where the data comes from (a CSV, the telemetry store, ...)."""

Activation = Literal["if_better", "force", "never"]
"""Promote the new version if its MAE is no higher than the active one's on the same holdout, always, or never."""

MIN_SERVED_HORIZON_STEPS = 2
"""The shortest horizon, in steps, of a model that may be served (activation other than "never")."""


class RetrainRefused(ConfigError):
    """A run the service will not do (too little training, a horizon too short to serve); `field` names the value."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):  # survives pickling across Ray tasks
        return (RetrainRefused, (self.field, self.message))


class ModelOverrides(BaseModel):
    """Values that replace the config's for one run (command-line flags, API request fields); None keeps it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: Duration | None = None
    horizon: Duration | None = None
    sequence_length: PositiveInt | None = None
    epochs: PositiveInt | None = None
    hidden_size: PositiveInt | None = None
    seed: int | None = None

    def keeping_shape(self, feature_spec: Mapping[str, Any]) -> ModelOverrides:
        """These overrides, with the step, horizon and input window of the version a run retrains
        (`feature_spec` of its metadata) where they leave them unset: a challenger answers what its champion
        answered and is compared with it on the same points."""
        try:
            step, horizon_steps = int(feature_spec["step_s"]), int(feature_spec["horizon_steps"])
        except (KeyError, TypeError, ValueError):
            return self  # not a power forecaster's spec: nothing to keep
        window = feature_spec.get("sequence_length")
        return self.model_copy(update={
            "step": self.step or step, "horizon": self.horizon or step * horizon_steps,
            "sequence_length": self.sequence_length or (int(window) if window else None)})

    def with_served_window(self, config: TrainingConfig) -> ModelOverrides:
        """These overrides, with the input window `predictor.resolutions` serves at the run's step and horizon where
        they leave the window unset: `--step 1min --horizon 1h` trains power_lstm's 60 steps, not
        `models.power_predictor`'s 168 (the hourly model's). Unchanged when no resolution has that step and horizon."""
        if self.sequence_length is not None:
            return self
        predictor = config.predictor
        shape = (self.step or predictor.step, self.horizon or predictor.prediction_horizon)
        served = next((r for r in predictor.resolutions if (r.step, r.horizon) == shape), None)
        return self.model_copy(update={"sequence_length": served.sequence_length}) if served else self

    def apply(self, config: TrainingConfig, source: str | None = "command line") -> TrainingConfig:
        """`config` with these values, validated again (`source`: who set them, in messages).

        Raises:
            ConfigError: naming the key and the reason (e.g. a horizon that is no whole multiple of the step).
        """
        data = config.model_dump()
        if "max_gap" not in config.predictor.model_fields_set:
            del data["predictor"]["max_gap"]  # not given: it follows the (new) step, as its default does
        if self.step is not None:
            data["predictor"]["step"] = self.step
        if self.horizon is not None:
            data["predictor"]["prediction_horizon"] = self.horizon
        model_keys = {"sequence_length", "epochs", "hidden_size", "seed"}
        data["models"]["power_predictor"].update(self.model_dump(include=model_keys, exclude_none=True))
        try:
            return TrainingConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_errors(source, exc)) from exc


def retrained_shape(registry: ModelRegistry, config: TrainingConfig, model_id: str) -> dict[str, Any]:
    """The step, horizon and input window a retrain of `model_id` keeps (as a `feature_spec`): the version serving
    now's, else the model's resolution's in `config`; empty when it has neither."""
    resolution = config.predictor.resolution(model_id)
    return registry.feature_spec(model_id) or (resolution.feature_spec() if resolution else {})


class RetrainSpec(BaseModel):
    """Everything `train_lstm`'s flags say about a run, whoever starts it (the command line or the API)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    config: TrainingConfig = Field(description="the service config, before `overrides`")
    overrides: ModelOverrides = ModelOverrides()
    model_id: ModelId = "power_lstm"
    holdout_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="last share of every series never trained on")
    activation: Activation = "if_better"
    scaling: TrainScaling = TrainScaling()
    skip_short: bool = Field(False, description="leave out series too short for one window instead of failing")
    split: Split = Field("series", description="where the holdout starts: per series, or one time for all series "
                                               "(a store's nodes: none trains on a time another is scored at)")
    verbose: bool = Field(True, description="per-epoch progress lines from the Ray Train workers")

    def effective_config(self) -> TrainingConfig:
        """The config this run trains with.

        Raises:
            ConfigError: overrides the config refuses.
            RetrainRefused: fewer epochs than `models.power_predictor.min_epochs`, or a horizon under
                MIN_SERVED_HORIZON_STEPS steps for a version that may be activated.
        """
        config = self.overrides.apply(self.config)
        model_config, predictor = config.models.power_predictor, config.predictor
        if model_config.epochs < model_config.min_epochs:
            raise RetrainRefused("epochs", f"{model_config.epochs} is below the minimum of {model_config.min_epochs} "
                                           "training epochs (models.power_predictor.min_epochs)")
        if self.activation != "never" and predictor.horizon_steps < MIN_SERVED_HORIZON_STEPS:
            raise RetrainRefused(
                "prediction_horizon",
                f"{format_duration(predictor.prediction_horizon)} is {predictor.horizon_steps} step of "
                f"{format_duration(predictor.step)}; a model that may be served forecasts at least "
                f"{MIN_SERVED_HORIZON_STEPS} steps (use a longer horizon or a shorter step)")
        return config
