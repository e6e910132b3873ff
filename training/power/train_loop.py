"""What every Ray Train worker of a PowerLSTM run does (training.power.ray_trainer starts them).

Each worker runs `fit.fit_epochs` on its share of every epoch's sample of windows (every worker scores the whole
validation tail, so all of them take the same early-stopping decision). Challengers train the same model again,
from the same seed, in the same Ray Train run (which pays its start and stop once), and the run with the lower
best validation MAE is kept (the earlier run wins a tie):
1. given a `WeightedChallenger`, with each epoch's sample drawn by its weights, against the uniform run;
2. with `power_input_challenger`, with the other power input (`relative_power` flipped), drawn as the run kept
   in 1 draws, against that run.
Only the run kept is refitted. Rank 0 prints progress and at the end reports one checkpoint: the kept run's best
weights with its history, the one record of how many epochs ran and which run was kept, and, when the driver asks
for a `refit`, the weights `fit.refine` then trained on the FIT and CALIB windows together.
Each epoch's metrics are reported only when a callback listens (a Ray Tune trial): a report costs about 2 s on a
2-core machine, several times a small model's epoch.
"""

from __future__ import annotations

import copy
import math
import random
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import train
from ray.train import Checkpoint
from ray.train.torch import prepare_data_loader, prepare_model
from torch.utils.data import ConcatDataset, DataLoader

from training.power.epoch_sample import make_loader
from training.power.fit import (
    EpochRecord,
    FitHistory,
    SupervisedArrays,
    build_model,
    fit_epochs,
    flush_denormals,
    interval_levels,
    refine,
    refit_epochs,
    seed_everything,
)

WEIGHTS_FILE = "model.pt"
REFIT_FILE = "refit.pt"
HISTORY_FILE = "history.json"


@dataclass(frozen=True)
class WeightedChallenger:
    """A second run's sample weights (training.power.recency): one per FIT window for its epochs, one per CALIB
    window for its refit."""

    half_life_steps: float  # what the weights were made with, for the record
    fit_weights: np.ndarray
    calib_weights: np.ndarray


@dataclass
class _Run:
    """One training of the model: its early-stopped state and what its refit needs."""

    name: str  # for the progress lines
    recency_weighted: bool
    relative_power: bool
    model: torch.nn.Module
    loader: DataLoader
    fit: SupervisedArrays
    val: SupervisedArrays
    history: FitHistory
    best_state: dict[str, torch.Tensor]
    rng_state: tuple[Any, ...]  # the random generators after its epochs, where its refit goes on from


def progress(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    flush_denormals()
    fit: SupervisedArrays = ray.get(config["train_ref"])
    val: SupervisedArrays = ray.get(config["val_ref"])
    rank = train.get_context().get_world_rank()
    verbose = rank == 0 and config["verbose"]
    sampling = {"per_epoch": config["windows_per_epoch"], "replicas": train.get_context().get_world_size(),
                "rank": rank}
    run = _train(fit, val, config, sampling, verbose, relative_power=config["relative_power"])
    if config["challenger_ref"] is not None:
        challenger: WeightedChallenger = ray.get(config["challenger_ref"])
        if verbose:
            progress("[train] second run: each epoch's sample drawn by the recency weights")
        weighted = _train(replace(fit, sample_weights=challenger.fit_weights),
                          replace(val, sample_weights=challenger.calib_weights), config, sampling, verbose,
                          relative_power=config["relative_power"])
        run = _better(run, weighted, verbose)
    if config["power_input_challenger"]:
        if verbose:
            progress(f"[train] next run: the power input read {_input_name(not run.relative_power)}")
        other = _train(run.fit, run.val, config, sampling, verbose, relative_power=not run.relative_power)
        run = _better(run, other, verbose)
    refitted = _refit(run, config, sampling, verbose)
    final = {"epochs_run": run.history.epochs_run, "best_epoch": run.history.best_epoch, "refit_epochs": refitted,
             "recency_weighted": run.recency_weighted, "relative_power": run.relative_power,
             "worker_nodes": _worker_nodes()}
    if rank == 0:
        plain = run.model.module if hasattr(run.model, "module") else run.model
        with tempfile.TemporaryDirectory() as folder:
            torch.save(run.best_state, Path(folder) / WEIGHTS_FILE)
            if refitted:
                torch.save(plain.state_dict(), Path(folder) / REFIT_FILE)
            (Path(folder) / HISTORY_FILE).write_text(run.history.model_dump_json())
            train.report(final, checkpoint=Checkpoint.from_directory(folder))
    else:
        train.report(final)


def _better(incumbent: _Run, challenger: _Run, verbose: bool) -> _Run:
    """The run with the lower best validation MAE (one that is no number, weights that diverged, loses to any); the
    incumbent on a tie."""
    def rank(run: _Run) -> tuple[bool, float]:
        score = run.history.best_val_mae_watts
        return not math.isfinite(score), score if math.isfinite(score) else 0.0

    kept = challenger if rank(challenger) < rank(incumbent) else incumbent
    if verbose:
        progress(f"[train] CALIB MAE {incumbent.history.best_val_mae_watts:.2f} W {incumbent.name}, "
                 f"{challenger.history.best_val_mae_watts:.2f} W {challenger.name}: keeping the {kept.name} run")
    return kept


def _input_name(relative_power: bool) -> str:
    return "relative to the window's last value" if relative_power else "as measured"


def _train(fit: SupervisedArrays, val: SupervisedArrays, config: dict[str, Any], sampling: dict[str, Any],
           verbose: bool, *, relative_power: bool) -> _Run:
    """Build the model from the run's seed and train it, early-stopped on `val` (drawn by their sample weights)."""
    seed_everything(config["seed"])
    device = ray.train.torch.get_device()
    model = prepare_model(build_model(fit.inputs.shape[2], fit.targets.shape[1], config["hidden_size"],
                                      config["num_layers"], config["dropout"], config["target_calendar"],
                                      relative_power))
    loader = prepare_data_loader(make_loader(fit, config["batch_size"], seed=config["seed"],
                                             weights=fit.sample_weights, **sampling))

    def on_epoch(record: EpochRecord) -> None:
        if verbose:
            mark = "  *best" if record.improved else ""
            progress(f"[train] epoch {record.epoch:3d}/{config['epochs']}  loss {record.train_loss:.4f}  "
                     f"val MAE {record.val_mae_watts:7.2f} W  lr {record.learning_rate:.2g}  "
                     f"{record.seconds:5.1f} s{mark}")
        if config["report_epochs"]:
            train.report(record.model_dump())

    history = fit_epochs(model, loader, val, epochs=config["epochs"], patience=config["patience"],
                         learning_rate=config["learning_rate"], levels=interval_levels(config["interval_coverage"]),
                         power_std=config["power_std"], device=device, on_epoch=on_epoch)
    if verbose and history.stopped_early:
        progress(f"[train] early stop after epoch {history.epochs_run}: no improvement for {config['patience']} "
                 f"epochs; restored best epoch {history.best_epoch}")
    plain = model.module if hasattr(model, "module") else model
    recency_weighted = fit.sample_weights is not None
    name = f"{'recency-weighted' if recency_weighted else 'uniform'}, power {_input_name(relative_power)}"
    return _Run(name, recency_weighted, relative_power, model, loader, fit, val, history,
                copy.deepcopy(plain.state_dict()), _rng_state())


def _refit(run: _Run, config: dict[str, Any], sampling: dict[str, Any], verbose: bool) -> int:
    """Train the run's best weights further on the FIT and CALIB windows together (drawn as their sample weights
    say, when they have them), if the driver asked and early stopping ended the run; the epochs run. A run the
    epoch limit cut short was still learning: more epochs would take it past the model its calibration was
    measured on by more than a converged run's small step, so it is not refitted. (A window whose targets
    straddle the two roles is in both, each copy scored on its own targets.)"""
    if not config["refit"] or not run.history.stopped_early:
        return 0
    _restore_rng(run.rng_state)  # as if this run had trained alone: another run's epochs drew from the generators
    whole = ConcatDataset([run.loader.dataset, run.val.tensors()])
    weights = None
    if run.fit.sample_weights is not None and run.val.sample_weights is not None:
        weights = np.concatenate([run.fit.sample_weights, run.val.sample_weights])
    epochs = refit_epochs(run.history.best_epoch, len(run.loader.dataset), len(run.val.inputs))
    rate = run.history.epochs[run.history.best_epoch - 1].learning_rate
    if verbose:
        progress(f"[train] refit on the whole training part ({len(whole)} windows): {epochs} epoch(s) "
                 f"at lr {rate:.2g}")
    loader = prepare_data_loader(make_loader(whole, config["batch_size"], seed=config["seed"], weights=weights,
                                             **sampling))
    refine(run.model, loader, epochs=epochs, learning_rate=rate, levels=interval_levels(config["interval_coverage"]),
           device=ray.train.torch.get_device())
    return epochs


def _rng_state() -> tuple[Any, ...]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _restore_rng(state: tuple[Any, ...]) -> None:
    python, numpy, cpu, cuda = state
    random.setstate(python)
    np.random.set_state(numpy)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _worker_nodes() -> list[str]:
    """The Ray node id of every worker, in rank order (a collective: every worker calls it)."""
    node = ray.get_runtime_context().get_node_id()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [node]
    nodes: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(nodes, node)
    return [str(each) for each in nodes]
