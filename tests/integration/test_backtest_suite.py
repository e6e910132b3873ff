"""The backtest suite end to end through real Ray Train (configs/suite.smoke.yaml), and early stopping as
Ray Train reports it: the run stops after validation turns and says how many epochs it really ran, the refit on
the whole training part comes back beside the early-stopped weights, and a recency-weighted challenger and one
reading the other power input train in the same run, each kept only if it validates better."""

from __future__ import annotations

import json

import numpy as np
import pytest
import ray
import torch

from tests.paths import REPO_ROOT
from training import evaluate
from training.power.fit import SupervisedArrays, build_model, predict_changes, refit_epochs
from training.power.local_ray import started_here
from training.power.ray_trainer import free_cpus_each, train_power_lstm
from training.power.recency import recency_weights
from training.power.train_loop import WeightedChallenger
from training.settings import PowerPredictorConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_smoke_suite_end_to_end(tmp_path, ray_cluster, capsys):
    output = tmp_path / "suite.json"
    code = evaluate.main(["--suite", str(REPO_ROOT / "configs" / "suite.smoke.yaml"), "--output", str(output),
                          "--quiet"])
    assert code == 0
    result = json.loads(output.read_text())
    assert result["complete"] is True
    assert [case["case"] for case in result["cases"]] == ["upm_sample", "recurring_spikes"]
    for case in result["cases"]:
        (report,) = case["runs"]
        assert set(report["metrics"]["served"]) == set(report["metrics"]["lstm"])
        assert report["served"]["method"] in {"lstm", "lightgbm", "combined"}
        assert {"last_value", "lightgbm"} <= set(report["metrics"])
        assert 0.0 <= report["metrics"]["served"]["coverage"] <= 1.0
        static = report["served_static_calibration"]  # the intervals before the online correction
        assert static["nominal_coverage"] == report["metrics"]["served"]["nominal_coverage"]
        assert static["mean_interval_width"] != report["metrics"]["served"]["mean_interval_width"]  # corrected
        assert set(report["served_static_blend"]) == {"mae", "rmse", "mape"}  # the blend not followed online
        assert report["model"]["source"] == "trained" and report["model"]["epochs_run"] >= report["model"]["best_epoch"]
        assert 0 < report["model"]["epoch_seconds"] < report["model"]["train_seconds"]  # the start is no epoch
        half_life = report["lightgbm"]["half_life_steps"]
        assert report["lightgbm"]["rounds"] >= 1 and (half_life is None or half_life >= 1.0)
    spikes = result["cases"][1]["runs"][0]
    assert spikes["model"]["calendar"] == ["time_of_day"]  # 16 days: the time of day, not yet the day of week
    assert result["aggregate"]["cases"] == 2
    assert "| upm_sample | 2min | 20min |" in capsys.readouterr().out


def test_a_one_machine_ray_shares_its_free_cpus_among_the_workers(ray_cluster):
    """The share applies to a Ray the training started itself; the test session's was started before it, so runs
    here reserve 1 CPU a worker, as they do on a Serve app's cluster."""
    assert not started_here()
    free = int(ray.available_resources().get("CPU", 0.0))
    assert free_cpus_each(1) == max(1, free)
    assert free_cpus_each(2) == max(1, free // 2)
    assert free_cpus_each(64) == 1.0  # never below one CPU a worker


def constant_change(n: int, value: float, seed: int) -> SupervisedArrays:
    rng = np.random.default_rng(seed)
    return SupervisedArrays(rng.normal(size=(n, 4, 2)).astype(np.float32), np.full((n, 2), value, np.float32),
                            np.ones((n, 2), bool))


EARLY_STOPPING = PowerPredictorConfig(hidden_size=8, num_layers=1, batch_size=16, epochs=40, patience=4,
                                      learning_rate=0.003, dropout=0.0, seed=0)


def drifted() -> tuple[SupervisedArrays, SupervisedArrays]:
    """FIT windows wanting a change of 1.0 and CALIB windows wanting 0.3."""
    return constant_change(64, 1.0, seed=0), constant_change(32, 0.3, seed=1)


@pytest.fixture(scope="module")
def cut_short(ray_cluster):
    """EARLY_STOPPING's run on `drifted()` that the epoch limit (3) ends while it is still learning (two tests')."""
    return train_power_lstm(*drifted(), EARLY_STOPPING.model_copy(update={"epochs": 3}), power_std=1.0,
                            verbose=False, refit=True)


def test_ray_train_stops_early_and_refits_the_best_weights_on_the_whole_training_part(cut_short):
    """Validation wants a change of 0.3 while training pulls towards 1.0: the error turns, the run stops and says how
    many epochs it ran. Asked for a refit, it returns the early-stopped weights and, beside them, those weights
    trained further on the FIT and CALIB windows together for the best epoch's count scaled by the windows CALIB
    adds; a run the epoch limit cut short is not refitted."""
    fit, tail = drifted()
    weights = train_power_lstm(fit, tail, EARLY_STOPPING, power_std=1.0, verbose=False, refit=True)
    assert weights.history is not None and weights.history.stopped_early
    assert 1 < weights.best_epoch < weights.epochs_run < 40
    assert weights.epochs_run == weights.best_epoch + 4 == len(weights.history.epochs)
    assert weights.best_val_mae_watts == min(r.val_mae_watts for r in weights.history.epochs)
    assert weights.refit_epochs == refit_epochs(weights.best_epoch, 64, 32) >= 1
    assert weights.refit_state_dict is not None

    def median(state: dict[str, torch.Tensor]) -> float:
        net = build_model(n_features=2, horizon=2, hidden_size=8, num_layers=1, dropout=0.0)
        net.load_state_dict(state)
        return float(predict_changes(net, tail.inputs, torch.device("cpu"))[..., 1].mean())

    assert median(weights.refit_state_dict) > median(weights.state_dict)  # pulled on towards the older 1.0
    assert not cut_short.history.stopped_early  # still learning at the limit: not refitted
    assert (cut_short.refit_epochs, cut_short.refit_state_dict) == (0, None)


def test_the_relative_power_setting_reaches_the_ray_train_worker(cut_short):
    """The same seed and windows train other weights when the worker's model reads the power input relative to the
    window's last value, and those weights forecast the same whatever the input's level."""
    absolute, (fit, tail) = cut_short, drifted()
    relative = train_power_lstm(fit, tail, EARLY_STOPPING.model_copy(update={"epochs": 3, "relative_power": True}),
                                power_std=1.0, verbose=False, refit=True)
    assert any(not torch.equal(absolute.state_dict[name], relative.state_dict[name]) for name in absolute.state_dict)
    net = build_model(n_features=2, horizon=2, hidden_size=8, num_layers=1, dropout=0.0, relative_power=True)
    net.load_state_dict(relative.state_dict)
    moved = tail.inputs.copy()
    moved[:, :, 0] += 5.0
    np.testing.assert_allclose(predict_changes(net, moved, torch.device("cpu")),
                               predict_changes(net, tail.inputs, torch.device("cpu")), atol=1e-5)


def test_a_recency_weighted_challenger_trains_in_the_same_run_and_is_kept_where_it_validates_better(ray_cluster):
    """FIT drifts from a change of 1.0 to the 0.3 the tail wants: a challenger drawing mostly the newest FIT windows
    trains in the same Ray Train run, validates better than the uniform run alone, and is the one returned and
    refitted (the run returned when no challenger wins: the last test of this file)."""
    config = PowerPredictorConfig(hidden_size=8, num_layers=1, batch_size=16, epochs=40, patience=4,
                                  learning_rate=0.003, dropout=0.1, seed=0)
    old, new = constant_change(32, 1.0, seed=0), constant_change(32, 0.3, seed=2)
    fit = SupervisedArrays(*(np.concatenate([a, b]) for a, b in ((old.inputs, new.inputs),
                                                                  (old.targets, new.targets), (old.mask, new.mask))))
    tail = constant_change(32, 0.3, seed=1)
    newest_first = recency_weights(np.arange(63.0, -1.0, -1.0), half_life=4.0)
    alone = train_power_lstm(fit, tail, config, power_std=1.0, verbose=False, refit=True)
    kept = train_power_lstm(fit, tail, config, power_std=1.0, verbose=False, refit=True,
                            challenger=WeightedChallenger(4.0, newest_first, np.ones(32)))
    assert kept.half_life_steps == 4.0 and kept.refit_state_dict is not None
    assert kept.best_val_mae_watts < alone.best_val_mae_watts


def trend(levels: np.ndarray, seed: int) -> SupervisedArrays:
    """Windows whose power climbs by a random slope from its level; the target is the slope (level-free)."""
    slopes = np.random.default_rng(seed).normal(size=len(levels))
    power = levels[:, None] + slopes[:, None] * np.arange(4.0)
    inputs = np.stack([power, np.zeros_like(power)], axis=2).astype(np.float32)
    return SupervisedArrays(inputs, np.repeat(slopes[:, None], 2, axis=1).astype(np.float32),
                            np.ones((len(levels), 2), bool))


def reverting(levels: np.ndarray) -> SupervisedArrays:
    """Flat windows at their level whose target pulls half way back to 0 (only the level tells it)."""
    inputs = np.stack([np.repeat(levels[:, None], 4, axis=1), np.zeros((len(levels), 4))], axis=2).astype(np.float32)
    return SupervisedArrays(inputs, np.repeat(-0.5 * levels[:, None], 2, axis=1).astype(np.float32),
                            np.ones((len(levels), 2), bool))


def test_a_challenger_reading_the_other_power_input_is_kept_where_it_validates_better(ray_cluster):
    """Trends learnt near level 0 and validated near level 4: the run reading power relative to the window's last
    value sees the same windows at both levels, validates better and is kept."""
    config = PowerPredictorConfig(hidden_size=8, num_layers=1, batch_size=16, epochs=40, patience=4,
                                  learning_rate=0.01, dropout=0.1, seed=0, power_input_challenger=True)
    rng = np.random.default_rng(3)
    fit, tail = trend(rng.normal(0.0, 0.3, 64), seed=4), trend(rng.normal(4.0, 0.3, 32), seed=5)
    kept = train_power_lstm(fit, tail, config, power_std=1.0, verbose=False, refit=True)
    assert kept.relative_power  # kept only with a lower CALIB MAE than the absolute run's


def test_where_no_challenger_validates_better_the_run_returned_is_the_uniform_run_alone(ray_cluster):
    """Reversion to a level: only the measured input shows it, and half the samples from the oldest eighth of the
    windows generalise worse. With both challengers rejected, the run returned is, bit for bit, the uniform run
    with the measured input alone: the same early-stopped weights, history and refit (dropout on, so the refit's
    draws must go on from where that run's epochs left the generators)."""
    config = PowerPredictorConfig(hidden_size=8, num_layers=1, batch_size=16, epochs=40, patience=4,
                                  learning_rate=0.01, dropout=0.1, seed=0)
    rng = np.random.default_rng(3)
    rng.normal(size=96)  # the draws of the trends above: these levels as before
    fit, tail = reverting(rng.normal(0.0, 1.0, 64)), reverting(rng.normal(0.0, 1.0, 32))
    oldest_first = recency_weights(np.arange(0.0, 64.0), half_life=4.0)
    alone = train_power_lstm(fit, tail, config, power_std=1.0, verbose=False, refit=True)
    rejected = train_power_lstm(fit, tail, config.model_copy(update={"power_input_challenger": True}),
                                power_std=1.0, verbose=False, refit=True,
                                challenger=WeightedChallenger(4.0, oldest_first, np.ones(32)))
    assert rejected.half_life_steps is None and not rejected.relative_power
    assert alone.history is not None and alone.history.stopped_early and alone.refit_state_dict is not None
    assert rejected.history is not None
    assert [r.val_mae_watts for r in rejected.history.epochs] == [r.val_mae_watts for r in alone.history.epochs]
    for ours, theirs in ((rejected.state_dict, alone.state_dict), (rejected.refit_state_dict, alone.refit_state_dict)):
        assert ours is not None and theirs is not None and ours.keys() == theirs.keys()
        assert all(torch.equal(ours[name], theirs[name]) for name in ours)
