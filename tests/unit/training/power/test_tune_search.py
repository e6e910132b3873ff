"""The search's pieces without Ray: its space, ASHA that spares the baseline, and the common holdout."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pandas as pd
import pytest
from ray.tune.schedulers import TrialScheduler

from tests.fakes.trainer import untrained
from training.power.dataset import train_forecaster
from training.power.holdout import CommonHoldout, holdout_metrics
from training.power.tune_search import (
    BaselineKeepingASHA,
    SearchPlan,
    defaults_of,
    prepare_longest,
    search_space,
    sequence_lengths,
)
from training.power.tune_trial import SCORE, VAL_METRIC, TrialData, run_trial
from training.power.windows import NotEnoughData, Role
from training.settings import PowerPredictorConfig, TrainingConfig

SMALL = {"predictor": {"step": 120, "prediction_horizon": 1200},
         "models": {"power_predictor": {"sequence_length": 15, "hidden_size": 8, "epochs": 4}}}


def test_the_space_is_centred_on_the_configured_settings():
    base = PowerPredictorConfig(sequence_length=60, hidden_size=64, batch_size=64)
    lengths = sequence_lengths(base)
    assert lengths == (30, 60, 120)
    space = search_space(base, lengths)
    assert set(space) == set(defaults_of(base))
    assert (space["learning_rate"].lower, space["learning_rate"].upper) == pytest.approx((0.0005, 0.008))
    assert space["hidden_size"].categories == [32, 64, 128]
    assert space["batch_size"].categories == [32, 64, 128]
    assert space["sequence_length"].categories == [30, 60, 120]
    assert space["relative_power"].categories == [False, True]
    assert sequence_lengths(PowerPredictorConfig(sequence_length=3)) == (2, 3, 6)


def _asha(defaults: dict) -> BaselineKeepingASHA:
    return BaselineKeepingASHA(defaults, time_attr="training_iteration", metric=VAL_METRIC, mode="min", max_t=9,
                               grace_period=1, reduction_factor=3, stop_last_trials=False)


def test_a_trial_trains_only_the_power_input_it_was_given():
    """A configured power-input challenger would train the other input inside the trial, which the search tries as
    a trial of its own, and restart the epochs ASHA reads."""
    base = PowerPredictorConfig(power_input_challenger=True, hidden_size=16)
    data = TrialData(prepared=None, holdout=None, base=base)  # type: ignore[arg-type]  # settings reads neither
    trial = data.settings({"relative_power": True, "hidden_size": 32})
    assert trial.relative_power and trial.hidden_size == 32 and not trial.power_input_challenger


def test_asha_stops_poor_trials_but_never_the_baseline():
    defaults = {"learning_rate": 0.002}
    scheduler = _asha(defaults)
    good = SimpleNamespace(trial_id="good", config={"learning_rate": 0.003})
    baseline = SimpleNamespace(trial_id="baseline", config=dict(defaults))
    poor = SimpleNamespace(trial_id="poor", config={"learning_rate": 0.01})
    for trial in (good, baseline, poor):
        scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, good, {"training_iteration": 1, VAL_METRIC: 5.0}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, baseline, {"training_iteration": 1, VAL_METRIC: 50.0}) == \
        TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, poor, {"training_iteration": 1, VAL_METRIC: 60.0}) == TrialScheduler.STOP
    assert scheduler.stopped == {"poor"}
    end = {"training_iteration": 2, VAL_METRIC: 70.0, SCORE: 1.0}
    assert scheduler.on_trial_result(None, good, end) == TrialScheduler.CONTINUE


def test_the_longest_window_the_data_holds_bounds_the_lengths_tried(sample):
    config = TrainingConfig.model_validate(SMALL)
    prepared, lengths = prepare_longest(sample, config, SearchPlan())
    assert lengths == (7, 15, 30) and prepared.sequence_length == 30
    prepared, lengths = prepare_longest(_first(sample, minutes=50), config, SearchPlan())  # 25 steps of 2 min
    assert lengths == (7, 15) and prepared.sequence_length == 15
    with pytest.raises(NotEnoughData):
        prepare_longest(_first(sample, minutes=20), config, SearchPlan())


def test_a_search_on_the_store_splits_as_train_lstm_does(sample):
    """From the store, train_lstm holds out every node from one time on; the search scores on that same split."""
    config = TrainingConfig.model_validate(SMALL)
    assert prepare_longest(sample, config, SearchPlan(split="time"))[0].split == "time"
    assert prepare_longest(sample, config, SearchPlan())[0].split == "series"


def _first(frame: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """The first `minutes` of every series."""
    start = frame.groupby("node_id")["timestamp"].transform("min")
    return frame[frame["timestamp"] < start + pd.Timedelta(minutes=minutes)]


def test_every_window_length_is_scored_on_the_same_points(sample, monkeypatch):
    monkeypatch.setattr("training.power.dataset.train_power_lstm", untrained(0.0))
    config = TrainingConfig.model_validate(SMALL)
    prepared, lengths = prepare_longest(sample, config, SearchPlan())
    holdout = CommonHoldout.of(prepared, max(lengths))
    base = config.models.power_predictor
    longest, _ = train_forecaster(prepared, base.model_copy(update={"sequence_length": 30}))
    shorter, _ = train_forecaster(replace(prepared, sequence_length=7), base.model_copy(update={"sequence_length": 7}))
    assert shorter.sequence_length == 7 and longest.sequence_length == 30
    same = holdout_metrics(longest, prepared, base.interval_coverage, base.confidence_tolerance)
    assert holdout.points == same.holdout_points
    assert holdout.mae(longest) == pytest.approx(same.mae)
    assert holdout.mae(shorter) > 0


def test_a_trial_is_validated_on_the_longest_window_s_points_whatever_its_own(sample, monkeypatch):
    """Trials are chosen on their validation MAE: a shorter window's was taken over more, earlier origins."""
    config = TrainingConfig.model_validate(SMALL)
    gap_at = sample.groupby("node_id")["timestamp"].transform("min") + pd.Timedelta(minutes=140)
    gappy = sample[(sample["timestamp"] < gap_at) | (sample["timestamp"] > gap_at + pd.Timedelta(minutes=12))]
    # a gap past max_gap just before a series' calibration tail: windows of 7 steps start early after it, of 30 not
    prepared, _ = prepare_longest(gappy, config, SearchPlan())
    assert len(replace(prepared, sequence_length=7).windows(Role.CALIB)) > len(prepared.windows(Role.CALIB))
    trained: list = []

    def train(prepared, model_config, **options):
        trained.append(prepared)
        return None, SimpleNamespace(best_val_mae_watts=1.0, epochs_run=1, best_epoch=1)

    monkeypatch.setattr("training.power.tune_trial.train_forecaster", train)
    monkeypatch.setattr("training.power.tune_trial.tune.report", lambda metrics: None)
    monkeypatch.setattr("training.power.tune_trial.EpochsToTune", lambda: None)  # needs a Tune session
    data = TrialData(prepared, SimpleNamespace(mae=lambda forecaster: 1.0), config.models.power_predictor)
    run_trial({"sequence_length": 7}, data)
    [trial] = trained
    assert trial.sequence_length == 7
    validated, longest = trial.windows(Role.CALIB), prepared.windows(Role.CALIB)
    assert validated.origin_index.tolist() == longest.origin_index.tolist()
