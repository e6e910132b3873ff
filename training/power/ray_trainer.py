"""Distributed PowerLSTM training with Ray Train (`TorchTrainer`): the driver's side.

The driver puts the windows in the object store and starts `num_workers` workers (data-parallel, DDP when more than
one), which run `train_loop.train_loop`: train, early-stop on the CALIB tail, where asked train again on recency-
weighted samples and with the other power input, keeping the better run each time, and refit. Ray Train answers
`Result.metrics` with the metrics of the latest *checkpoint*, not of the last epoch, so the worker reports one
checkpoint at the end. It runs unchanged on a laptop (training.power.local_ray starts a local Ray; the workers share
its free CPUs unless told otherwise: `free_cpus_each`) and under `ray job submit` (it joins the job's cluster).
Every worker reports the Ray node it ran on (`TrainedWeights.worker_nodes`); checkpoints go to `storage_path`, which
must be storage every machine of the run reaches (training.power.checkpoint_storage refuses a local one otherwise).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ray
import torch
from ray.train import (
    CheckpointConfig,
    ControllerError,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
    UserCallback,
)
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.exceptions import WorkerGroupStartupFailedError, WorkerGroupStartupTimeoutError

from core.settings import ConfigError
from training.power.checkpoint_storage import check_after_run, check_before_run, run_storage, worker_needs
from training.power.fit import FitHistory, SupervisedArrays
from training.power.local_ray import start_local_ray, started_here
from training.power.model import TargetCalendar
from training.power.scaling import ONE_WORKER, TrainScaling
from training.power.train_loop import HISTORY_FILE, REFIT_FILE, WEIGHTS_FILE, WeightedChallenger, train_loop
from training.power.windows import NotEnoughData
from training.settings import PowerPredictorConfig

STARTUP_TRIES = 15
"""How often Ray Train waits for its workers to be placed (RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S each, 60 s by
default): time for an autoscaler to add a node, not forever (Ray's default retries without end, so a job asking for
GPUs a cluster does not have held the model's retrain lock until stopped by hand)."""


RAY_RESOURCE_UNITS = 10_000  # Ray keeps resource amounts in fixed point, to 1/10,000 of a unit

WORKERS_NOT_STARTED = (WorkerGroupStartupTimeoutError, WorkerGroupStartupFailedError)  # what those tries retry


class WorkersUnavailable(ConfigError):
    """Ray Train could not place its workers in STARTUP_TRIES tries; the message says what they asked for."""


# How often Ray Train's controller looks at its workers (Ray's default: 2 s). A run waits for several looks while
# it starts and ends; at 0.25 s a small run took about 3 s less on 2 cores (15 s -> 12 s). Read from the
# environment when a run starts its controller; an operator's own value wins.
HEALTH_CHECK_INTERVAL = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")


@dataclass(frozen=True)
class TrainedWeights:
    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    epochs_run: int
    best_val_mae_watts: float
    duration_s: float
    num_workers: int
    use_gpu: bool
    relative_power: bool  # the power input its model reads (the config's, unless the other input's run was kept)
    history: FitHistory | None = None
    refit_state_dict: dict[str, torch.Tensor] | None = None  # trained further on the whole training part
    refit_epochs: int = 0
    worker_nodes: tuple[str, ...] = ()  # Ray node id of every worker, in rank order
    half_life_steps: float | None = None  # the recency half-life its samples were drawn with (None: uniform)


def _offered() -> str:
    total = ray.cluster_resources()
    return ", ".join(f"{name} {total.get(name, 0.0):g}" for name in ("CPU", "GPU"))


def _require_placeable(num_workers: int, needs: dict[str, float]) -> None:
    """WorkersUnavailable at once when the Ray this command started (one machine: no autoscaler adds a node) cannot
    hold the workers; Ray Train would wait out STARTUP_TRIES start timeouts first, 15 minutes by default."""
    total = ray.cluster_resources()
    units = RAY_RESOURCE_UNITS  # counted as Ray counts them: 10 workers of 0.1 CPU fit one CPU
    fits = min((round(total.get(name, 0.0) * units) // round(amount * units)
                for name, amount in needs.items() if round(amount * units) > 0), default=num_workers)
    if fits < num_workers:
        offered = ", ".join(f"{name} {total.get(name, 0.0):g}" for name in needs)
        raise WorkersUnavailable(
            f"the Ray this command started cannot place {num_workers} worker(s), each reserving "
            f"{', '.join(f'{name} {amount:g}' for name, amount in needs.items())}: it has {offered}. Ask for fewer "
            "workers or CPUs per worker, or no GPU (--num-workers, --cpus-per-worker, --use-gpu), or run on a "
            "cluster that has them (RAY_ADDRESS)")


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
    scaling: TrainScaling = ONE_WORKER,
    storage_path: str | None = None,
    callbacks: Sequence[UserCallback] = (),
    verbose: bool = True,
    target_calendar: TargetCalendar = (),
    refit: bool = False,
    challenger: WeightedChallenger | None = None,
) -> TrainedWeights:
    """Train on `train_arrays`, early-stop on `val_arrays`; returns the best weights, and with `refit` those weights
    trained further on both (`fit.refine`).

    Args:
        train_arrays: FIT windows. val_arrays: CALIB windows (the held-out tail of the training part).
        model_config: sizes and optimizer settings. power_std: watts per model unit (for readable MAE).
        scaling: Ray Train's workers and what each reserves (cpus_per_worker None: `free_cpus_each` on a Ray this
            call started, else 1).
        storage_path: where Ray Train keeps run state and checkpoints (a temp folder by default); must be
            reachable from every machine of the run. The run's folder there is deleted once its weights are read.
        callbacks: Ray Train callbacks (e.g. forwarding each epoch's report to a Ray Tune trial).
        target_calendar: the calendar inputs of the model's per-lead head (FeaturePipeline.target_calendar).
        refit: refine the early-stopped weights on FIT and CALIB together (not for a Tune trial's run).
        challenger: train a second time with each epoch's sample drawn by its weights, in the same Ray Train run;
            the run with the lower best validation MAE is returned (the first wins a tie; `half_life_steps` says
            which) and only that one is refitted. With `model_config.power_input_challenger` the run kept trains
            once more with the other power input, the same way (`relative_power` says which input was kept).

    Raises:
        StorageNotShared: a local `storage_path` when the run's workers may span machines.
        WorkersUnavailable: the workers cannot be placed (at once on a Ray this call started).
    """
    if len(train_arrays.inputs) == 0 or len(val_arrays.inputs) == 0:
        raise NotEnoughData("not enough data: no training or validation windows (series too short for one window)")
    if not ray.is_initialized():
        start_local_ray(verbose)
    num_workers, use_gpu = scaling.num_workers, scaling.use_gpu
    cpus_per_worker = scaling.cpus_per_worker or (free_cpus_each(num_workers) if started_here() else 1.0)
    needs = worker_needs(cpus_per_worker, use_gpu, scaling.resources_per_worker)
    if started_here():
        _require_placeable(num_workers, needs)
    check_before_run(storage_path, needs)
    config = {
        "train_ref": ray.put(train_arrays),
        "val_ref": ray.put(val_arrays),
        "refit": refit,
        "challenger_ref": ray.put(challenger) if challenger is not None else None,
        "power_std": power_std,
        "verbose": verbose,
        "report_epochs": bool(callbacks),
        "target_calendar": tuple(target_calendar),
        **model_config.model_dump(include={"hidden_size", "num_layers", "dropout", "relative_power",
                                           "power_input_challenger", "batch_size",
                                           "windows_per_epoch", "epochs", "patience", "learning_rate", "seed",
                                           "interval_coverage"}),
    }
    started = time.monotonic()
    os.environ.setdefault(*HEALTH_CHECK_INTERVAL)
    with run_storage(storage_path, "power_lstm") as (storage, name):
        trainer = TorchTrainer(
            train_loop,
            train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpus_per_worker, **scaling.resources_per_worker}),
            run_config=RunConfig(
                name=name,
                storage_path=storage,
                checkpoint_config=CheckpointConfig(num_to_keep=1),
                logging_config=LoggingConfig(log_level="WARNING"),
                callbacks=list(callbacks),
                failure_config=FailureConfig(controller_failure_limit=STARTUP_TRIES - 1),
            ),
        )
        try:
            result = trainer.fit()
        except ControllerError as exc:
            if not isinstance(exc.controller_failure, WORKERS_NOT_STARTED):
                raise
            raise WorkersUnavailable(
                f"Ray Train could not place {num_workers} worker(s), each reserving "
                f"{', '.join(f'{name} {amount:g}' for name, amount in needs.items())}, in {STARTUP_TRIES} tries; the "
                f"cluster has {_offered()}: ask for fewer workers or CPUs per worker, or no GPU (train_lstm's "
                f"--num-workers, --cpus-per-worker, --use-gpu; the service's args.retrain), or add nodes") from exc
        final = result.metrics or {}
        worker_nodes = tuple(str(node) for node in final.get("worker_nodes", ()))
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
        relative_power=bool(final.get("relative_power", model_config.relative_power)),
        refit_epochs=int(final.get("refit_epochs", 0)),
        half_life_steps=challenger.half_life_steps if challenger and final.get("recency_weighted") else None,
    )
