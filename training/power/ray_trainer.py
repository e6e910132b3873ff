"""Distributed PowerLSTM training with Ray Train (`TorchTrainer`).

The driver puts the windows in the object store and starts `num_workers` workers (data-parallel, DDP
when more than one); each epoch every worker scores the whole validation tail, so all of them take the
same early-stopping decision. Rank 0 prints progress and reports a checkpoint whenever validation MAE
improves, so the run's final checkpoint is its best. It runs unchanged on a laptop (`ray.init()` starts a
local Ray) and under `ray job submit` (it joins the job's cluster).
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import train
from ray.train import Checkpoint, CheckpointConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, prepare_data_loader, prepare_model

from training.power.fit import (
    SupervisedArrays,
    build_model,
    interval_levels,
    make_loader,
    seed_everything,
    train_one_epoch,
    validation_mae,
)
from training.power.windows import NotEnoughData
from training.settings import PowerPredictorConfig

WEIGHTS_FILE = "model.pt"


@dataclass(frozen=True)
class TrainedWeights:
    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    epochs_run: int
    best_val_mae_watts: float
    duration_s: float
    num_workers: int
    use_gpu: bool


def _progress(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    seed_everything(config["seed"])
    train_arrays: SupervisedArrays = ray.get(config["train_ref"])
    val_arrays: SupervisedArrays = ray.get(config["val_ref"])
    context = train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()
    model = build_model(train_arrays.inputs.shape[2], train_arrays.targets.shape[1], config["hidden_size"],
                        config["num_layers"], config["dropout"])
    model = prepare_model(model)
    loader = make_loader(train_arrays, config["batch_size"], shuffle=True, seed=config["seed"])
    loader = prepare_data_loader(loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["learning_rate"], weight_decay=1e-4)
    plateau = max(1, config["patience"] // 3)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=plateau)
    levels = interval_levels(config["interval_coverage"])
    plain = model.module if hasattr(model, "module") else model
    best, best_epoch, stale = float("inf"), 0, 0
    for epoch in range(1, config["epochs"] + 1):
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        loss = train_one_epoch(model, loader, optimizer, levels, device)
        val_mae = validation_mae(plain, val_arrays, device) * config["power_std"]
        scheduler.step(val_mae)
        improved = val_mae < best - 1e-6
        if improved:
            best, best_epoch, stale = val_mae, epoch, 0
        else:
            stale += 1
        metrics = {"epoch": epoch, "train_loss": loss, "val_mae_watts": val_mae, "best_epoch": best_epoch}
        if rank == 0 and config["verbose"]:
            mark = "  *best" if improved else ""
            _progress(f"[train] epoch {epoch:3d}/{config['epochs']}  loss {loss:.4f}  val MAE {val_mae:7.2f} W{mark}")
        if improved and rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(plain.state_dict(), Path(folder) / WEIGHTS_FILE)
                train.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        else:
            train.report(metrics)
        if stale >= config["patience"]:
            if rank == 0 and config["verbose"]:
                _progress(f"[train] early stop: no improvement for {stale} epochs; best epoch {best_epoch}")
            break


def train_power_lstm(
    train_arrays: SupervisedArrays,
    val_arrays: SupervisedArrays,
    model_config: PowerPredictorConfig,
    power_std: float,
    *,
    num_workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    storage_path: str | None = None,
    verbose: bool = True,
) -> TrainedWeights:
    """Train on `train_arrays`, early-stop on `val_arrays`; returns the best weights.

    Args:
        train_arrays: FIT windows. val_arrays: CALIB windows (the held-out tail of the training part).
        model_config: sizes and optimizer settings. power_std: watts per model unit (for readable MAE).
        num_workers, use_gpu, cpus_per_worker: Ray Train `ScalingConfig`.
        storage_path: where Ray Train keeps run state and checkpoints (a temp folder by default).
    """
    if len(train_arrays.inputs) == 0 or len(val_arrays.inputs) == 0:
        raise NotEnoughData("not enough data: no training or validation windows (series too short for one window)")
    if not ray.is_initialized():
        ray.init(log_to_driver=verbose, include_dashboard=False)
    config = {
        "train_ref": ray.put(train_arrays),
        "val_ref": ray.put(val_arrays),
        "power_std": power_std,
        "verbose": verbose,
        **model_config.model_dump(include={"hidden_size", "num_layers", "dropout", "batch_size", "epochs",
                                           "patience", "learning_rate", "seed", "interval_coverage"}),
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="power-lstm-") as scratch:
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpus_per_worker}),
            run_config=RunConfig(
                name=f"power_lstm_{int(time.time())}",
                storage_path=storage_path or scratch,
                checkpoint_config=CheckpointConfig(num_to_keep=1),
                logging_config=LoggingConfig(log_level="WARNING"),
            ),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError("training reported no checkpoint")
        with result.checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    final = result.metrics or {}
    return TrainedWeights(
        state_dict=state,
        best_epoch=int(final.get("best_epoch", 0)),
        epochs_run=int(final.get("epoch", 0)),
        best_val_mae_watts=float(result.metrics_dataframe["val_mae_watts"].min())
        if result.metrics_dataframe is not None else float("nan"),
        duration_s=time.monotonic() - started,
        num_workers=num_workers,
        use_gpu=use_gpu,
    )
