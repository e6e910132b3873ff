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


def _agree(rank: int, init_file: str, answers) -> None:
    import torch
    import torch.distributed as dist

    from training.power.fit import rank_zero_value

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        answers.put((rank, rank_zero_value(7.0 + rank * 1e-9, torch.device("cpu"))))  # kernels that round apart
    finally:
        dist.destroy_process_group()


def test_every_worker_of_a_data_parallel_run_takes_rank_zero_s_validation_score(tmp_path):
    """Regression: each worker decided its rate, stop and best epoch from its own score; scores a rounding apart (mixed
    hardware) could stop one worker while the other waited in the next epoch's all-reduce for good."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    answers = context.Queue()
    workers = [context.Process(target=_agree, args=(rank, str(tmp_path / "init"), answers)) for rank in (0, 1)]
    for worker in workers:
        worker.start()
    got = dict(answers.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert got == {0: 7.0, 1: 7.0}
