"""Distributed PowerLSTM training with Ray Train (`TorchTrainer`).

The driver puts the windows in the object store and starts `num_workers` workers (data-parallel, DDP
when more than one); each runs `fit.fit_epochs` on its share of every epoch's sample of windows (every
worker scores the whole validation tail, so all of them take the same early-stopping decision). Rank 0
prints progress and at the end reports one checkpoint: the best epoch's weights with the run's history,
the one record of how many epochs ran, and, when the driver asks for a `refit`, the weights `fit.refine`
then trained on the FIT and CALIB windows together (Ray Train answers `Result.metrics` with the metrics
of the latest *checkpoint*, not of the last epoch). Each epoch's metrics are reported only when a
callback listens (a Ray Tune trial): a report costs about 2 s on a 2-core machine, several times a small
model's epoch. It runs unchanged on a laptop (training.power.local_ray starts a local Ray; the workers
share its free CPUs unless told otherwise: `free_cpus_each`) and under `ray job submit` (it joins the
job's cluster). Every worker reports the Ray node it ran on (`TrainedWeights.worker_nodes`); checkpoints
go to `storage_path`, which must be storage every machine of the run reaches
(training.power.checkpoint_storage refuses a local one otherwise).
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import train
from ray.train import Checkpoint, CheckpointConfig, LoggingConfig, RunConfig, ScalingConfig, UserCallback
from ray.train.torch import TorchTrainer, prepare_data_loader, prepare_model
from torch.utils.data import ConcatDataset, Dataset

from training.power.checkpoint_storage import check_after_run, check_before_run, worker_needs
from training.power.fit import (
    EpochRecord,
    FitHistory,
    SupervisedArrays,
    build_model,
    fit_epochs,
    flush_denormals,
    interval_levels,
    make_loader,
    refine,
    refit_epochs,
    seed_everything,
)
from training.power.local_ray import start_local_ray, started_here
from training.power.model import TargetCalendar
from training.power.windows import NotEnoughData
from training.settings import PowerPredictorConfig

WEIGHTS_FILE = "model.pt"
REFIT_FILE = "refit.pt"
HISTORY_FILE = "history.json"


@dataclass(frozen=True)
class TrainedWeights:
    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    epochs_run: int
    best_val_mae_watts: float
    duration_s: float
    num_workers: int
    use_gpu: bool
    history: FitHistory | None = None
    refit_state_dict: dict[str, torch.Tensor] | None = None  # trained further on the whole training part
    refit_epochs: int = 0
    worker_nodes: tuple[str, ...] = ()  # Ray node id of every worker, in rank order
    half_life_steps: float | None = None  # the recency half-life its samples were drawn with (None: uniform)


def _progress(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _worker_nodes() -> list[str]:
    """The Ray node id of every worker, in rank order (a collective: every worker calls it)."""
    node = ray.get_runtime_context().get_node_id()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [node]
    nodes: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(nodes, node)
    return [str(each) for each in nodes]


def _train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    seed_everything(config["seed"])
    flush_denormals()
    train_arrays: SupervisedArrays = ray.get(config["train_ref"])
    val_arrays: SupervisedArrays = ray.get(config["val_ref"])
    rank = train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    model = build_model(train_arrays.inputs.shape[2], train_arrays.targets.shape[1], config["hidden_size"],
                        config["num_layers"], config["dropout"], config["target_calendar"])
    model = prepare_model(model)
    sampling = {"per_epoch": config["windows_per_epoch"], "replicas": train.get_context().get_world_size(),
                "rank": rank}
    loader = prepare_data_loader(make_loader(train_arrays, config["batch_size"], seed=config["seed"],
                                             weights=train_arrays.sample_weights, **sampling))
    verbose = rank == 0 and config["verbose"]

    def on_epoch(record: EpochRecord) -> None:
        if verbose:
            mark = "  *best" if record.improved else ""
            _progress(f"[train] epoch {record.epoch:3d}/{config['epochs']}  loss {record.train_loss:.4f}  "
                      f"val MAE {record.val_mae_watts:7.2f} W  lr {record.learning_rate:.2g}  "
                      f"{record.seconds:5.1f} s{mark}")
        if config["report_epochs"]:
            train.report(record.model_dump())

    history = fit_epochs(model, loader, val_arrays, epochs=config["epochs"], patience=config["patience"],
                         learning_rate=config["learning_rate"], levels=interval_levels(config["interval_coverage"]),
                         power_std=config["power_std"], device=device, on_epoch=on_epoch)
    if verbose and history.stopped_early:
        _progress(f"[train] early stop after epoch {history.epochs_run}: no improvement for {config['patience']} "
                  f"epochs; restored best epoch {history.best_epoch}")
    plain = model.module if hasattr(model, "module") else model
    chosen = copy.deepcopy(plain.state_dict())
    refitted = _refit(model, history, loader.dataset, train_arrays.sample_weights, val_arrays, config, sampling, device,
                      verbose)
    final = {"epochs_run": history.epochs_run, "best_epoch": history.best_epoch, "refit_epochs": refitted,
             "worker_nodes": _worker_nodes()}
    if rank == 0:
        with tempfile.TemporaryDirectory() as folder:
            torch.save(chosen, Path(folder) / WEIGHTS_FILE)
            if refitted:
                torch.save(plain.state_dict(), Path(folder) / REFIT_FILE)
            (Path(folder) / HISTORY_FILE).write_text(history.model_dump_json())
            train.report(final, checkpoint=Checkpoint.from_directory(folder))
    else:
        train.report(final)


def _refit(model: torch.nn.Module, history: FitHistory, fit_windows: Dataset, fit_weights: np.ndarray | None,
           val_arrays: SupervisedArrays, config: dict[str, Any], sampling: dict[str, Any], device: torch.device,
           verbose: bool) -> int:
    """Train the best epoch's weights further on the FIT and CALIB windows together (drawn as their sample weights
    say, when they have them), if the driver asked and early stopping ended the run; the epochs run. A run the
    epoch limit cut short was still learning: more epochs would take it past the model its calibration was
    measured on by more than a converged run's small step, so it is not refitted. (A window whose targets
    straddle the two roles is in both, each copy scored on its own targets.)"""
    if not config["refit"] or not history.stopped_early:
        return 0
    whole = ConcatDataset([fit_windows, val_arrays.tensors()])
    weights = None
    if fit_weights is not None and val_arrays.sample_weights is not None:
        weights = np.concatenate([fit_weights, val_arrays.sample_weights])
    epochs = refit_epochs(history.best_epoch, len(fit_windows), len(val_arrays.inputs))
    rate = history.epochs[history.best_epoch - 1].learning_rate
    if verbose:
        _progress(f"[train] refit on the whole training part ({len(whole)} windows): {epochs} epoch(s) "
                  f"at lr {rate:.2g}")
    loader = prepare_data_loader(make_loader(whole, config["batch_size"], seed=config["seed"], weights=weights,
                                             **sampling))
    refine(model, loader, epochs=epochs, learning_rate=rate, levels=interval_levels(config["interval_coverage"]),
           device=device)
    return epochs


def free_cpus_each(num_workers: int) -> float:
    """CPUs per worker for a run on the Ray it started itself when the caller names none (`train_power_lstm` uses 1
    on any other Ray): on one machine (a laptop, a backtest's own local Ray) its free CPUs shared among the
    workers, so torch computes with that many threads (a batch of the seed's model ran 1.6x faster on 2 threads
    than on 1); on a larger cluster, 1."""
    if sum(1 for node in ray.nodes() if node.get("Alive")) != 1:
        return 1.0
    return float(max(1, int(ray.available_resources().get("CPU", 0.0) // num_workers)))


def train_power_lstm(
    train_arrays: SupervisedArrays,
    val_arrays: SupervisedArrays,
    model_config: PowerPredictorConfig,
    power_std: float,
    *,
    num_workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: float | None = 1.0,
    storage_path: str | None = None,
    resources_per_worker: Mapping[str, float] | None = None,
    callbacks: Sequence[UserCallback] = (),
    verbose: bool = True,
    target_calendar: TargetCalendar = (),
    refit: bool = False,
) -> TrainedWeights:
    """Train on `train_arrays`, early-stop on `val_arrays`; returns the best weights, and with `refit` those weights
    trained further on both (`fit.refine`).

    Args:
        train_arrays: FIT windows. val_arrays: CALIB windows (the held-out tail of the training part).
        model_config: sizes and optimizer settings. power_std: watts per model unit (for readable MAE).
        num_workers, use_gpu, cpus_per_worker: Ray Train `ScalingConfig` (cpus_per_worker None: `free_cpus_each` on
            a Ray this call started, else 1).
        storage_path: where Ray Train keeps run state and checkpoints (a temp folder by default); must be
            reachable from every machine of the run. resources_per_worker: custom resources each worker reserves
            besides its CPUs/GPU (e.g. {"trainer": 1} to put one worker on each node offering one).
        callbacks: Ray Train callbacks (e.g. forwarding each epoch's report to a Ray Tune trial).
        target_calendar: the calendar inputs of the model's per-lead head (FeaturePipeline.target_calendar).
        refit: refine the early-stopped weights on FIT and CALIB together (not for a Tune trial's run).

    Raises:
        StorageNotShared: a local `storage_path` when the run's workers may span machines.
    """
    if len(train_arrays.inputs) == 0 or len(val_arrays.inputs) == 0:
        raise NotEnoughData("not enough data: no training or validation windows (series too short for one window)")
    if not ray.is_initialized():
        start_local_ray(verbose)
    cpus_per_worker = cpus_per_worker or (free_cpus_each(num_workers) if started_here() else 1.0)
    needs = worker_needs(cpus_per_worker, use_gpu, resources_per_worker)
    check_before_run(storage_path, needs)
    config = {
        "train_ref": ray.put(train_arrays),
        "val_ref": ray.put(val_arrays),
        "refit": refit,
        "power_std": power_std,
        "verbose": verbose,
        "report_epochs": bool(callbacks),
        "target_calendar": tuple(target_calendar),
        **model_config.model_dump(include={"hidden_size", "num_layers", "dropout", "batch_size", "windows_per_epoch",
                                           "epochs", "patience", "learning_rate", "seed", "interval_coverage"}),
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="power-lstm-") as scratch:
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpus_per_worker, **(resources_per_worker or {})}),
            run_config=RunConfig(
                name=f"power_lstm_{int(time.time())}_{uuid.uuid4().hex[:8]}",  # unique in a shared storage_path
                storage_path=storage_path or scratch,
                checkpoint_config=CheckpointConfig(num_to_keep=1),
                logging_config=LoggingConfig(log_level="WARNING"),
                callbacks=list(callbacks),
            ),
        )
        result = trainer.fit()
        worker_nodes = tuple(str(node) for node in (result.metrics or {}).get("worker_nodes", ()))
        check_after_run(storage_path, worker_nodes)
        if result.checkpoint is None:
            raise RuntimeError("training reported no checkpoint")
        with result.checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
            refit_path = Path(folder) / REFIT_FILE
            refit_state = torch.load(refit_path, map_location="cpu", weights_only=True) if refit_path.exists() else None
            history = FitHistory.model_validate_json((Path(folder) / HISTORY_FILE).read_text())
    return TrainedWeights(
        state_dict=state,
        best_epoch=history.best_epoch,
        epochs_run=history.epochs_run,
        best_val_mae_watts=history.best_val_mae_watts,
        duration_s=time.monotonic() - started,
        num_workers=num_workers,
        use_gpu=use_gpu,
        history=history,
        worker_nodes=worker_nodes,
        refit_state_dict=refit_state,
        refit_epochs=int((result.metrics or {}).get("refit_epochs", 0)),
    )
