"""tune.json: what a hyper-parameter search of the power forecaster tried, scored how, and its best settings.

Written by `python -m training.tune`; read back by `train_lstm --settings-from tune.json`, which trains with
`best_config` in place of the config's `models.power_predictor` values (flags still win).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from core.durations import format_duration
from core.settings import ConfigError, format_errors
from training.settings import PowerPredictorConfig, TrainingConfig

logger = logging.getLogger(__name__)

TunedKey = Literal["learning_rate", "hidden_size", "num_layers", "sequence_length", "dropout", "batch_size",
                   "relative_power"]
TUNED_KEYS: tuple[str, ...] = get_args(TunedKey)
"""The `models.power_predictor` settings a search varies."""

TrialStatus = Literal["completed", "early_stopped", "stopped", "error"]
"""completed: trained to its end (its own early stopping included) and scored; early_stopped: ASHA ended it on
its validation MAE; stopped: the time budget ended it; error: it failed (`error` says why)."""

Settings = dict[TunedKey, bool | int | float]


class TrialOutcome(BaseModel):
    """One trial: its settings, how it ended, and its score on the common holdout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trial_id: str
    config: Settings
    default: bool  # the configured settings: the baseline every other trial is compared with
    status: TrialStatus
    score: float | None  # holdout MAE in watts; only for completed trials
    val_mae: float | None  # best validation MAE in watts: what ASHA compared
    epochs: int  # epochs trained
    error: str | None = None


class DataFacts(BaseModel):
    """What the trials trained on and were scored on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    series: int
    step_s: int
    horizon_steps: int
    features: list[str]
    holdout_fraction: float
    holdout_points: int  # scored (origin, lead) pairs, the same for every trial


class SearchFacts(BaseModel):
    """How the search ran."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials_requested: int
    time_budget_s: int | None
    elapsed_s: float
    num_workers: int  # Ray Train workers per trial
    max_concurrent_trials: int
    scheduler: str
    seed: int


class TuneReport(BaseModel):
    """The contents of tune.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = ("trials are chosen on their best validation MAE (the split before the holdout that every trial "
                   "early-stops on, as ASHA compares them, at the origins the longest window tried has, whatever "
                   "the trial's own); score: holdout MAE in watts on the last holdout_fraction "
                   "of every series, which no trial trains on nor is chosen on, every trial on the same (origin, "
                   "lead) points")
    trials: list[TrialOutcome]
    best_config: Settings | None
    best_score: float | None
    default_score: float | None
    gain_percent: float | None  # how much lower the chosen trial's holdout MAE is than the default settings'
    data: DataFacts
    search: SearchFacts

    @classmethod
    def from_trials(cls, trials: list[TrialOutcome], data: DataFacts, search: SearchFacts) -> TuneReport:
        """The report with the completed trial of the lowest validation MAE, and the default settings' score. The
        holdout is only reported, never chosen on: a `train_lstm --settings-from` run on the same data then reports
        and compares the active version on points the settings were not chosen on."""
        scored = [trial for trial in trials if trial.score is not None and trial.val_mae is not None]
        best = min(scored, key=lambda trial: trial.val_mae) if scored else None
        default = next((trial.score for trial in scored if trial.default), None)
        gain = round(100.0 * (default - best.score) / default, 2) if best and default else None
        return cls(trials=trials, best_config=best.config if best else None, best_score=best.score if best else None,
                   default_score=default, gain_percent=gain, data=data, search=search)

    def summary_lines(self) -> list[str]:
        done = sum(trial.status == "completed" for trial in self.trials)
        lines = [f"{len(self.trials)} trial(s), {done} completed, in {format_duration(round(self.search.elapsed_s))}"]
        scores = sorted(trial.score for trial in self.trials if trial.score is not None)
        if scores and self.best_score is not None:
            lines.append(f"holdout MAE: chosen {self.best_score:.2f} W, default "
                         f"{'-' if self.default_score is None else f'{self.default_score:.2f} W'}, "
                         f"spread {scores[0]:.2f}..{scores[-1]:.2f} W over {len(scores)} scored trial(s)")
            lines.append(f"best settings (lowest validation MAE): {self.best_config}")
        return lines


def load_report(path: str | Path) -> TuneReport:
    """Read tune.json. Raises ConfigError naming the file and what is wrong."""
    try:
        return TuneReport.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValidationError as exc:
        raise ConfigError(format_errors(str(path), exc)) from None


def with_best_settings(config: TrainingConfig, path: str | Path, step_s: int | None = None) -> TrainingConfig:
    """`config` with the search's best settings in `models.power_predictor`.

    `step_s` (default: the config's) is the step the run will use; a search at another step is warned about,
    since its sequence length counts steps of that step.

    Raises:
        ConfigError: an unreadable report, one without a completed trial, or settings the config refuses.
    """
    report = load_report(path)
    if report.best_config is None:
        raise ConfigError(f"{path}: no trial completed, so there are no best settings to use")
    step_s = step_s or config.predictor.step
    if step_s != report.data.step_s:
        logger.warning("%s was searched at a %s step; this run uses %s (its sequence length counts steps)",
                       path, format_duration(report.data.step_s), format_duration(step_s))
    try:
        tuned = PowerPredictorConfig.model_validate({**config.models.power_predictor.model_dump(),
                                                     **report.best_config})
    except ValidationError as exc:
        raise ConfigError(format_errors(f"{path}: best_config", exc)) from None
    # Only `models.power_predictor` changes: the rest keeps which keys were given (a `predictor.max_gap` not given
    # still follows a new --step: ModelOverrides.apply).
    return config.model_copy(update={"models": config.models.model_copy(update={"power_predictor": tuned})})
