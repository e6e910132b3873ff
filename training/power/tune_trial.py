"""One trial of the search: train as `train_lstm` does (the same Ray Train loop), score on the common holdout.

Each epoch's validation report goes on to the trial with the best validation MAE so far (`EpochsToTune`),
so ASHA can stop a trial between epochs on what it would deliver if stopped there (early stopping keeps the
best epoch's weights); a trial that ends on its own reports its holdout MAE once more at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from training.power.dataset import PreparedData, train_forecaster
from training.power.holdout import CommonHoldout
from training.power.scaling import TrainScaling
from training.settings import PowerPredictorConfig

EPOCH_METRIC = "val_mae_watts"  # what each epoch reports (training.power.fit.EpochRecord)
VAL_METRIC = "best_val_mae_watts"  # the best EPOCH_METRIC so far: what ASHA compares
SCORE = "holdout_mae_watts"  # reported once, by a trial that trained to its end


@dataclass(frozen=True)
class TrialData:
    """What every trial shares (put in Ray's object store once by `tune.with_parameters`)."""

    prepared: PreparedData
    holdout: CommonHoldout
    base: PowerPredictorConfig  # the configured settings; a trial replaces the tuned ones
    scaling: TrainScaling = TrainScaling()
    storage_path: str | None = None

    def settings(self, tuned: dict[str, Any]) -> PowerPredictorConfig:
        """A trial's settings: it trains the one power input it was given (the search tries both; a second run in
        the trial would also restart the epochs its scheduler reads)."""
        return PowerPredictorConfig.model_validate({**self.base.model_dump(), **tuned, "power_input_challenger": False})


class EpochsToTune(TuneReportCallback):
    """Forwards rank 0's per-epoch reports, with the best validation MAE so far, to the Tune trial; the run's
    final report (no validation MAE, the checkpoint) stays with Ray Train."""

    def __init__(self):
        super().__init__()
        self.best = float("inf")

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if metrics and EPOCH_METRIC in metrics[0]:
            self.best = min(self.best, metrics[0][EPOCH_METRIC])
            super().after_report(run_context, [{**metrics[0], VAL_METRIC: self.best}], None)


def run_trial(tuned: dict[str, Any], data: TrialData) -> None:
    """The Tune trainable: one training run with `tuned` settings, then its holdout MAE."""
    model_config = data.settings(tuned)
    prepared = replace(data.prepared, sequence_length=model_config.sequence_length,
                       scored_from_length=data.prepared.sequence_length)  # every trial validated on the same points
    forecaster, weights = train_forecaster(
        prepared, model_config, scaling=data.scaling, verbose=False, storage_path=data.storage_path,
        callbacks=[EpochsToTune()],
        refit=False)  # a trial is scored on the early-stopped weights; the chosen settings retrain with a refit
    tune.report({VAL_METRIC: weights.best_val_mae_watts, SCORE: data.holdout.mae(forecaster),
                 "epochs_run": weights.epochs_run, "best_epoch": weights.best_epoch})
