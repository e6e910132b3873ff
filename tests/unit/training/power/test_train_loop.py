"""The training loop's choice between its runs (no Ray: the runs' histories alone)."""

from __future__ import annotations

from types import SimpleNamespace

from training.power.fit import EpochRecord, FitHistory
from training.power.train_loop import _better


def run(name: str, val_mae: float) -> SimpleNamespace:
    epoch = EpochRecord(epoch=1, train_loss=1.0, val_mae_watts=val_mae, learning_rate=1e-3, improved=True, seconds=1.0)
    return SimpleNamespace(name=name, history=FitHistory(epochs=(epoch,), best_epoch=1, stopped_early=False))


def test_a_run_whose_validation_error_is_no_number_loses_to_any_that_is_one():
    """Regression: a diverged first run (NaN) was kept over a finite challenger, as finite < NaN is False."""
    assert _better(run("plain", float("nan")), run("weighted", 9.0), verbose=False).name == "weighted"
    assert _better(run("plain", 9.0), run("weighted", float("nan")), verbose=False).name == "plain"
    assert _better(run("plain", 9.0), run("weighted", 8.0), verbose=False).name == "weighted"
    assert _better(run("plain", 8.0), run("weighted", 8.0), verbose=False).name == "plain"  # a tie keeps the first
