"""Ray Tune search over the power forecaster's settings, with ASHA early stopping.

The first trial runs the configured settings (never stopped early: it is the baseline); the others sample
around them (learning rate, hidden size, layers, input window, dropout, batch size, whether the power input is read
relative to the window's last value). Every trial trains with the Ray Train loop `train_lstm` uses, on the split
`retrain_power` uses: FIT windows train, the CALIB tail is the validation ASHA sees each epoch, and the holdout (the
last `holdout_fraction` of every series, never trained on) scores the trials that finish (training.power.tune_trial).
"""

from __future__ import annotations

import logging
import math
import sys
import time

import pandas as pd
import ray
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator

from training.power.checkpoint_storage import check_before_run, run_storage, worker_needs
from training.power.dataset import PreparedData, prepare
from training.power.holdout import CommonHoldout
from training.power.local_ray import start_local_ray
from training.power.scaling import TrainScaling
from training.power.tune_report import TUNED_KEYS, DataFacts, SearchFacts, TrialOutcome, TuneReport
from training.power.tune_trial import SCORE, VAL_METRIC, TrialData, run_trial
from training.power.windows import NotEnoughData, Split
from training.settings import PowerPredictorConfig, TrainingConfig

logger = logging.getLogger(__name__)

REDUCTION_FACTOR = 3  # ASHA keeps the best third of the trials at each rung
TRIAL_DRIVER = {"CPU": 0, "memory": 512 * 1024**2}
"""A trial only drives its Ray Train run (its workers hold the CPUs): it reserves memory, not a CPU, so a
2-CPU machine runs two one-worker trials at once (Ray refuses an empty reservation)."""


class SearchPlan(BaseModel):
    """How to search: trials, time, and each trial's Ray Train workers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: PositiveInt = 8
    time_budget_s: PositiveInt | None = None
    holdout_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    scaling: TrainScaling = TrainScaling()  # each trial's run; cpus_per_worker None reserves 1
    skip_short: bool = False
    split: Split = "series"  # "time" from a store, as train_lstm splits it (RetrainSpec.split)
    verbose: bool = True


def sequence_lengths(base: PowerPredictorConfig) -> tuple[int, ...]:
    """Input windows tried: half, the configured one, double."""
    length = base.sequence_length
    return tuple(sorted({max(2, length // 2), length, 2 * length}))


def search_space(base: PowerPredictorConfig, lengths: tuple[int, ...]) -> dict:
    """Each tuned setting's distribution, centred on the configured value."""
    rate, hidden, batch = base.learning_rate, base.hidden_size, base.batch_size
    return {
        "learning_rate": tune.loguniform(rate / 4, rate * 4),
        "hidden_size": tune.choice(sorted({max(8, hidden // 2), hidden, hidden * 2})),
        "num_layers": tune.choice([1, 2, 3]),
        "sequence_length": tune.choice(list(lengths)),
        "dropout": tune.uniform(0.0, 0.3),
        "batch_size": tune.choice(sorted({max(8, batch // 2), batch, batch * 2})),
        "relative_power": tune.choice([False, True]),
    }


def defaults_of(base: PowerPredictorConfig) -> dict:
    return base.model_dump(include=set(TUNED_KEYS))


class BaselineKeepingASHA(ASHAScheduler):
    """ASHA that never stops the trial of the configured settings, and remembers which trials it stopped."""

    def __init__(self, defaults: dict, **options):
        super().__init__(**options)
        self.defaults, self.stopped = defaults, set()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if SCORE in result:  # the trial's end-of-run report: nothing left to stop
            return TrialScheduler.CONTINUE
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            if trial.config == self.defaults:
                return TrialScheduler.CONTINUE
            self.stopped.add(trial.trial_id)
        return decision


class _Progress(tune.Callback):
    """One line per finished trial."""

    def __init__(self, stopped: set[str]):
        self.stopped = stopped  # trial ids ASHA stopped (filled by the scheduler)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        if SCORE in result:
            outcome = f"holdout MAE {result[SCORE]:.2f} W after {result.get('epochs_run')} epochs"
        else:
            why = "early-stopped by ASHA" if trial.trial_id in self.stopped else "stopped"
            outcome = f"{why} after {result.get('epoch', 0)} epochs"
        sys.stderr.write(f"tune: trial {trial.trial_id} {outcome}: {trial.config}\n")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        sys.stderr.write(f"tune: trial {trial.trial_id} failed: {trial.config}\n")


def prepare_longest(frame: pd.DataFrame, config: TrainingConfig, plan: SearchPlan) -> tuple[PreparedData, tuple]:
    """The split data with the longest input window every series can hold, and the windows to try."""
    base, predictor = config.models.power_predictor, config.predictor
    lengths = sequence_lengths(base)
    for longest in sorted((n for n in lengths if n >= base.sequence_length), reverse=True):
        try:
            prepared = prepare(frame, step_s=predictor.step, max_gap_s=predictor.max_gap, features=config.features,
                               sequence_length=longest, horizon=predictor.horizon_steps,
                               train_fraction=1.0 - plan.holdout_fraction, split=plan.split,
                               skip_short=plan.skip_short and longest == base.sequence_length)
        except NotEnoughData:
            if longest == base.sequence_length:
                raise
            continue
        return prepared, tuple(n for n in lengths if n <= longest)
    raise AssertionError("unreachable: the configured length is always tried")


def run_search(frame: pd.DataFrame, config: TrainingConfig, plan: SearchPlan, *, source: str) -> TuneReport:
    """Search, and return the report (tune.json's contents).

    Raises:
        NotEnoughData: the series or the holdout too short for the configured settings.
        StorageNotShared: a local storage path on a cluster whose trials may span machines.
    """
    base = config.models.power_predictor
    prepared, lengths = prepare_longest(frame, config, plan)
    holdout = CommonHoldout.of(prepared, max(lengths))
    if not ray.is_initialized():
        start_local_ray(plan.verbose)
    scaling = plan.scaling.model_copy(update={"cpus_per_worker": plan.scaling.cpus_per_worker or 1.0})
    needs = worker_needs(scaling.cpus_per_worker, scaling.use_gpu, scaling.resources_per_worker)
    check_before_run(config.storage_path, needs)
    per_trial = scaling.num_workers * scaling.cpus_per_worker
    concurrent = max(1, min(plan.trials, math.floor(ray.cluster_resources().get("CPU", 1.0) / per_trial)))
    data = TrialData(prepared, holdout, base, scaling, config.storage_path)
    defaults = defaults_of(base)
    grace = max(1, min(base.epochs, max(base.min_epochs, base.epochs // 6)))
    scheduler = BaselineKeepingASHA(defaults, time_attr="training_iteration", metric=VAL_METRIC, mode="min",
                                    max_t=base.epochs, grace_period=grace, reduction_factor=REDUCTION_FACTOR,
                                    stop_last_trials=False)
    started = time.monotonic()
    with run_storage(config.storage_path, "power_lstm_tune") as (storage, name):
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(run_trial, data=data), TRIAL_DRIVER),
            param_space=search_space(base, lengths),
            tune_config=tune.TuneConfig(
                search_alg=BasicVariantGenerator(points_to_evaluate=[defaults], max_concurrent=concurrent,
                                                 random_state=base.seed),
                scheduler=scheduler, num_samples=plan.trials, time_budget_s=plan.time_budget_s),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                      callbacks=[_Progress(scheduler.stopped)] if plan.verbose else []),
        )
        results = tuner.fit()
        trials = [_outcome(result, defaults, scheduler.stopped) for result in results]
    facts = DataFacts(source=source, series=len({s.node_id for s in prepared.segments}),
                      step_s=config.predictor.step, horizon_steps=config.predictor.horizon_steps,
                      features=list(config.features), holdout_fraction=plan.holdout_fraction,
                      holdout_points=holdout.points)
    search = SearchFacts(trials_requested=plan.trials, time_budget_s=plan.time_budget_s,
                         elapsed_s=round(time.monotonic() - started, 1), num_workers=scaling.num_workers,
                         max_concurrent_trials=concurrent, seed=base.seed,
                         scheduler=f"ASHA on {VAL_METRIC}: grace {grace} epochs, reduction factor "
                                   f"{REDUCTION_FACTOR}, at most {base.epochs} epochs")
    return TuneReport.from_trials(trials, facts, search)


def _outcome(result, defaults: dict, stopped: set[str]) -> TrialOutcome:
    metrics = result.metrics or {}
    history = result.metrics_dataframe
    seen = history[VAL_METRIC].dropna() if history is not None and VAL_METRIC in history else pd.Series(dtype=float)
    trial_id = str(metrics.get("trial_id") or result.path.rsplit("/", 1)[-1])
    config = {key: result.config[key] for key in TUNED_KEYS}
    if result.error is not None:
        status, error = "error", f"{type(result.error).__name__}: {result.error}"[:500]
    elif SCORE in metrics:
        status, error = "completed", None
    else:
        status, error = ("early_stopped" if trial_id in stopped else "stopped"), None
    epochs = int(metrics.get("epochs_run") or metrics.get("epoch") or 0)
    return TrialOutcome(trial_id=trial_id, config=config, default=config == defaults, status=status,
                        score=metrics.get(SCORE), val_mae=float(seen.min()) if len(seen) else None,
                        epochs=epochs, error=error)
