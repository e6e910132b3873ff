"""Early stopping, the learning-rate schedule and the refit of the PowerLSTM training loop (training.power.fit)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from training.power.epoch_sample import make_loader
from training.power.fit import (
    EarlyStopping,
    EpochRecord,
    FitHistory,
    SupervisedArrays,
    build_model,
    fit_epochs,
    flush_denormals,
    predict_changes,
    refine,
    refit_epochs,
    seed_everything,
    validation_mae,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def test_flush_denormals_makes_the_cpu_treat_them_as_zero() -> None:
    tiny = torch.tensor([1e-39])  # a denormal float32 (the smallest normal is 1.18e-38)
    try:
        torch.set_flush_denormal(False)
        assert float(tiny * 1.0) != 0.0
        flush_denormals()
        assert float(tiny * 1.0) == 0.0
    finally:
        torch.set_flush_denormal(False)


def constant_change(n: int, value: float, seed: int) -> SupervisedArrays:
    rng = np.random.default_rng(seed)
    return SupervisedArrays(rng.normal(size=(n, 4, 2)).astype(np.float32), np.full((n, 2), value, np.float32),
                            np.ones((n, 2), bool))


def test_early_stopping_keeps_the_best_state_and_counts_stale_epochs() -> None:
    model = torch.nn.Linear(1, 1)
    stopping = EarlyStopping(patience=2)
    assert stopping.update(1, 5.0, model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    best_weight = model.weight.clone()
    assert stopping.update(2, 4.0, model)
    with torch.no_grad():
        model.weight.fill_(-7.0)
    assert not stopping.update(3, 4.0, model)
    assert not stopping.should_stop
    assert not stopping.update(4, 3.999, model)  # below the minimum relative improvement: still stale
    assert stopping.should_stop and (stopping.best_epoch, stopping.best) == (2, 4.0)
    stopping.restore(model)
    assert torch.equal(model.weight, best_weight)


def test_a_score_that_is_no_number_never_stays_the_best() -> None:
    """A first epoch scored NaN became the best for good (no number compares below NaN): its weights were
    restored whatever the later epochs scored."""
    model = torch.nn.Linear(1, 1)
    stopping = EarlyStopping(patience=2)
    assert stopping.update(1, float("nan"), model)  # the only state there is, for now
    assert stopping.update(2, 7.0, model) and stopping.best_epoch == 2
    assert not stopping.update(3, float("nan"), model) and stopping.best == 7.0


def test_patience_running_out_on_the_last_epoch_is_a_stop() -> None:
    """`stopped_early` was "fewer epochs than allowed": a run whose patience ran out on its last epoch counted as
    never stopped, and its refit on the whole training part was skipped."""
    seed_everything(0)
    model = build_model(n_features=2, horizon=2, hidden_size=8, num_layers=1, dropout=0.0)
    loader, valid = make_loader(constant_change(64, 1.0, seed=0), 16, seed=0), constant_change(32, 0.3, seed=1)
    free = fit_epochs(model, loader, valid, epochs=40, patience=4, learning_rate=0.003, levels=(0.1, 0.5, 0.9),
                      power_std=10.0, device=CPU)
    seed_everything(0)
    model = build_model(n_features=2, horizon=2, hidden_size=8, num_layers=1, dropout=0.0)
    exact = fit_epochs(model, make_loader(constant_change(64, 1.0, seed=0), 16, seed=0), valid,
                       epochs=free.epochs_run, patience=4, learning_rate=0.003, levels=(0.1, 0.5, 0.9),
                       power_std=10.0, device=CPU)
    assert exact.epochs_run == free.epochs_run and exact.stopped_early


def test_training_stops_after_validation_turns_and_restores_the_best_epoch() -> None:
    """Training pulls the forecast change from 0 towards 1.0 while validation wants 0.3: validation error
    falls, then rises. The run stops `patience` epochs after the turn, with the best epoch's weights."""
    seed_everything(0)
    model = build_model(n_features=2, horizon=2, hidden_size=8, num_layers=1, dropout=0.0)
    valid = constant_change(32, 0.3, seed=1)
    seen: list[EpochRecord] = []
    history = fit_epochs(model, make_loader(constant_change(64, 1.0, seed=0), 16, seed=0), valid,
                         epochs=40, patience=4, learning_rate=0.003, levels=(0.1, 0.5, 0.9), power_std=10.0,
                         device=CPU, on_epoch=seen.append)
    assert list(history.epochs) == seen
    assert history.stopped_early and 1 < history.best_epoch < history.epochs_run < 40
    assert history.epochs_run == history.best_epoch + 4  # patience counted in epochs without improvement
    maes = [r.val_mae_watts for r in history.epochs]
    assert maes[history.best_epoch - 1] == min(maes)
    assert maes[-1] > 2 * min(maes)  # validation error really rose after the best epoch
    assert [r.improved for r in history.epochs].count(True) == history.best_epoch  # fell steadily until then
    assert validation_mae(model, valid, CPU) * 10.0 == pytest.approx(history.best_val_mae_watts, rel=1e-5)


def test_learning_rate_is_halved_on_a_plateau_and_not_before() -> None:
    seed_everything(0)
    model = build_model(n_features=2, horizon=2, hidden_size=8, num_layers=1, dropout=0.0)
    history = fit_epochs(model, make_loader(constant_change(64, 1.0, seed=0), 16, seed=0),
                         constant_change(32, 0.3, seed=1), epochs=40, patience=6, learning_rate=0.003,
                         levels=(0.1, 0.5, 0.9), power_std=1.0, device=CPU)
    rates = [r.learning_rate for r in history.epochs]
    best = history.best_epoch
    assert set(rates[:best]) == {0.003}  # full rate while validation improves
    # plateau patience max(1, 6 // 3) = 2: after 3 stale epochs the rate halves, then again 3 epochs later
    assert rates[best:best + 3] == [0.003] * 3 and rates[best + 3] == pytest.approx(0.0015)
    assert min(rates) >= 0.003 / 64


def test_a_run_that_keeps_improving_is_not_stopped_early() -> None:
    seed_everything(0)
    model = build_model(n_features=2, horizon=2, hidden_size=8, num_layers=1, dropout=0.0)
    history = fit_epochs(model, make_loader(constant_change(64, 1.0, seed=0), 16, seed=0),
                         constant_change(32, 1.0, seed=1), epochs=3, patience=5, learning_rate=0.003,
                         levels=(0.1, 0.5, 0.9), power_std=1.0, device=CPU)
    assert (history.best_epoch, history.epochs_run, history.stopped_early) == (3, 3, False)
    assert all(record.seconds > 0 for record in history.epochs)
    assert history.epoch_seconds == sum(record.seconds for record in history.epochs)


def test_history_round_trips_as_json() -> None:
    record = EpochRecord(epoch=1, train_loss=0.5, val_mae_watts=3.0, learning_rate=0.002, improved=True, seconds=0.4)
    history = FitHistory(epochs=(record,), best_epoch=1, stopped_early=False)
    assert FitHistory.model_validate_json(history.model_dump_json()) == history
    assert history.best_val_mae_watts == 3.0 and history.epochs_run == 1


def test_the_refit_runs_the_best_epochs_scaled_by_the_share_of_windows_it_adds() -> None:
    assert refit_epochs(best_epoch=48, fit_windows=3000, calib_windows=750) == 12
    assert refit_epochs(best_epoch=14, fit_windows=3000, calib_windows=750) == 4  # rounded up
    assert refit_epochs(best_epoch=1, fit_windows=3000, calib_windows=750) == 1  # never none


def test_refine_moves_the_early_stopped_weights_towards_the_whole_training_part() -> None:
    """Early stopping holds the forecast near the tail's 0.3; the whole training part (older windows wanting 1.0,
    the tail 0.3) pulls the refined weights up, and more epochs further, while the tail stays in view."""
    seed_everything(0)
    model = build_model(n_features=2, horizon=2, hidden_size=8, num_layers=1, dropout=0.0)
    tail = constant_change(32, 0.3, seed=1)
    fit_epochs(model, make_loader(tail, 16, seed=0), tail, epochs=30, patience=4,
               learning_rate=0.01, levels=(0.1, 0.5, 0.9), power_std=1.0, device=CPU)
    older = constant_change(96, 1.0, seed=2)
    whole = SupervisedArrays(np.concatenate([older.inputs, tail.inputs]),
                             np.concatenate([older.targets, tail.targets]), np.concatenate([older.mask, tail.mask]))

    def median(net: torch.nn.Module) -> float:
        return float(predict_changes(net, tail.inputs, CPU)[..., 1].mean())

    before = median(model)
    medians = []
    for epochs in (1, 5):
        refined = build_model(n_features=2, horizon=2, hidden_size=8, num_layers=1, dropout=0.0)
        refined.load_state_dict(model.state_dict())
        refine(refined, make_loader(whole, 16, seed=0), epochs=epochs, learning_rate=0.01,
               levels=(0.1, 0.5, 0.9), device=CPU)
        medians.append(median(refined))
    assert abs(before - 0.3) < 0.1
    assert before + 0.1 < medians[0] < medians[1] < 1.0
