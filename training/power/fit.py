"""Plain torch training for PowerLSTM, shared by the Ray Train worker and tests. No Ray here.

`fit_epochs` is the whole loop: one pass over the loader per epoch (training.power.epoch_sample: a fresh
random sample of the training windows, all of them when few), validation MAE on the held-out tail after each, a
learning rate halved when validation stops improving (ReduceLROnPlateau), and early stopping that ends
the run after `patience` epochs without improvement and restores the weights of the best epoch. The
returned `FitHistory` says what happened, epoch by epoch. `refine` then trains those weights further on
the whole training part (the held-out tail is the newest data) for `refit_epochs` epochs at the best
epoch's rate: nothing is left to stop on, so the count comes from the run (only a run that early stopping
ended is refitted: training/power/ray_trainer.py).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch.utils.data import DataLoader, Dataset

from training.power.model import PowerLSTM, TargetCalendar, quantile_loss
from training.power.windows import WindowInputs, Windows


@dataclass(frozen=True)
class SupervisedArrays:
    """Windows in the model's units: targets are changes from the last power over the power scale."""

    inputs: WindowInputs | np.ndarray  # [N, T, F] float32
    targets: np.ndarray  # [N, H] float32 (0 where unscored)
    mask: np.ndarray  # [N, H] bool
    sample_weights: np.ndarray | None = None  # [N] a window's relative chance in each epoch's sample (None: equal)

    @classmethod
    def from_windows(cls, windows: Windows, power_std: float,
                     sample_weights: np.ndarray | None = None) -> SupervisedArrays:
        if sample_weights is not None and len(sample_weights) != len(windows):
            raise ValueError("a weighted sample needs one weight per window")
        change = (windows.targets - windows.last_power[:, None]) / power_std
        change = np.where(windows.mask, change, 0.0).astype(np.float32)
        inputs = windows.inputs if isinstance(windows.inputs, WindowInputs) else windows.inputs.astype(np.float32)
        return cls(inputs, change, windows.mask, sample_weights)

    def tensors(self) -> WindowDataset:
        return WindowDataset(self)


class WindowDataset(Dataset):
    """The training windows as (input, target, mask) tensors; an input is gathered when a batch asks for it, so a
    worker never holds the stacked [N, T, F] array."""

    def __init__(self, arrays: SupervisedArrays):
        self.inputs = arrays.inputs
        # Copies: arrays fetched from Ray's object store are read-only.
        self.targets, self.mask = torch.tensor(arrays.targets), torch.tensor(arrays.mask)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        window = torch.from_numpy(np.array(self.inputs[index], dtype=np.float32))
        return window, self.targets[index], self.mask[index]


def seed_everything(seed: int) -> None:
    """Make a run repeatable on one device: same seed, same weights, same batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def flush_denormals() -> None:
    """Make this process's CPU math treat denormal floats as zero. LSTM training makes them (tiny gradients and
    their squares in AdamW), and x86 CPUs compute with them many times slower: batches of the seed's model
    (hidden 128, sequence 168, batch 32) took 2 to 3.5 times longer with them on one core (0.37 against 0.18 s
    per batch over a run's first 30 batches; 0.53 against 0.15 s from another start). The
    values flushed are below 1.2e-38, far under anything the model's units can resolve."""
    torch.set_flush_denormal(True)


def interval_levels(coverage: float) -> tuple[float, float, float]:
    """Quantile levels (lower, median, upper) of a central interval with the given coverage."""
    tail = (1.0 - coverage) / 2.0
    return (tail, 0.5, 1.0 - tail)


def train_one_epoch(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    levels: tuple[float, float, float], device: torch.device) -> float:
    """One pass over the loader; returns the mean training loss."""
    model.train()
    total, batches = 0.0, 0
    for inputs, targets, mask in loader:
        inputs, targets, mask = inputs.to(device), targets.to(device), mask.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = quantile_loss(model(inputs), targets, mask, levels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        total += float(loss.detach())
        batches += 1
    return total / max(batches, 1)


@torch.no_grad()
def predict_changes(model: torch.nn.Module, inputs: np.ndarray, device: torch.device,
                    batch_size: int = 2048) -> np.ndarray:
    """Quantile changes [N, H, 3] in power-scale units."""
    model.eval()
    outputs = []
    for begin in range(0, len(inputs), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(inputs[begin:begin + batch_size])).to(device)
        outputs.append(model(batch).cpu().numpy())
    if not outputs:
        raise ValueError("no windows to predict")
    return np.concatenate(outputs)


def validation_mae(model: torch.nn.Module, arrays: SupervisedArrays, device: torch.device) -> float:
    """Mean absolute error of the median over scored (window, lead) pairs, in power-scale units."""
    median = predict_changes(model, arrays.inputs, device)[..., 1]
    return float(np.abs(median - arrays.targets)[arrays.mask].mean())


def build_model(n_features: int, horizon: int, hidden_size: int, num_layers: int, dropout: float,
                target_calendar: TargetCalendar = (), relative_power: bool = False) -> PowerLSTM:
    return PowerLSTM(n_features=n_features, hidden_size=hidden_size, num_layers=num_layers,
                     horizon=horizon, dropout=dropout, target_calendar=target_calendar, relative_power=relative_power)


MIN_IMPROVEMENT = 1e-3  # relative: a validation MAE this much below the best counts as an improvement
LR_FACTOR = 0.5  # the learning rate is multiplied by this on a plateau
MIN_LR_FRACTION = 1.0 / 64  # ... but never below this share of the initial rate


class EpochRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epoch: int
    train_loss: float
    val_mae_watts: float
    learning_rate: float  # the rate this epoch trained with
    improved: bool
    seconds: float  # wall time of the epoch's training and validation


class FitHistory(BaseModel):
    """Every epoch of a run, and which one the returned weights come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: tuple[EpochRecord, ...]
    best_epoch: int
    stopped_early: bool  # validation stopped improving for `patience` epochs (not: the epochs ran out)

    @property
    def epochs_run(self) -> int:
        return len(self.epochs)

    @property
    def best_val_mae_watts(self) -> float:
        return self.epochs[self.best_epoch - 1].val_mae_watts

    @property
    def epoch_seconds(self) -> float:
        """Wall time of all the epochs (training and validation), without the run's start, refit and stop."""
        return sum(record.seconds for record in self.epochs)


class EarlyStopping:
    """Keeps a copy of the best weights seen on validation; `should_stop` after `patience` epochs without
    an improvement of at least `min_improvement` (relative)."""

    def __init__(self, patience: int, min_improvement: float = MIN_IMPROVEMENT):
        self.patience, self.min_improvement = patience, min_improvement
        self.best, self.best_epoch, self.stale = float("inf"), 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, score: float, model: torch.nn.Module) -> bool:
        """Record an epoch's validation score; True when it is the new best. A score that is no number (weights
        that diverged) is the best only while nothing else is, and any number beats it."""
        better = math.isfinite(score) and (not math.isfinite(self.best)
                                           or score < self.best * (1.0 - self.min_improvement))
        if better or self.best_state is None:
            self.best, self.best_epoch, self.stale = score, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def fit_epochs(model: torch.nn.Module, loader: DataLoader, val_arrays: SupervisedArrays, *, epochs: int,
               patience: int, learning_rate: float, levels: tuple[float, float, float], power_std: float,
               device: torch.device, on_epoch: Callable[[EpochRecord], None] | None = None) -> FitHistory:
    """Train `model` (a DDP wrapper or the bare PowerLSTM) and leave the best epoch's weights in it.

    Every worker of a data-parallel run scores the whole validation tail, and all of them take rank 0's score: the
    same rate, stop and best epoch on every worker, even where their kernels round differently (mixed hardware).
    """
    plain = model.module if hasattr(model, "module") else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=LR_FACTOR, patience=max(1, patience // 3), threshold=MIN_IMPROVEMENT,
        min_lr=learning_rate * MIN_LR_FRACTION)
    stopping = EarlyStopping(patience)
    records: list[EpochRecord] = []
    for epoch in range(1, epochs + 1):
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        rate, started = optimizer.param_groups[0]["lr"], time.monotonic()
        loss = train_one_epoch(model, loader, optimizer, levels, device)
        val_mae = rank_zero_value(validation_mae(plain, val_arrays, device) * power_std, device)
        scheduler.step(val_mae)
        improved = stopping.update(epoch, val_mae, plain)
        records.append(EpochRecord(epoch=epoch, train_loss=loss, val_mae_watts=val_mae, learning_rate=rate,
                                   improved=improved, seconds=time.monotonic() - started))
        if on_epoch is not None:
            on_epoch(records[-1])
        if stopping.should_stop:
            break
    stopping.restore(plain)
    return FitHistory(epochs=tuple(records), best_epoch=stopping.best_epoch,
                      stopped_early=stopping.should_stop)  # patience ran out, on the last epoch too


def rank_zero_value(value: float, device: torch.device) -> float:
    """`value` as rank 0 of a data-parallel run has it (as it is outside one): the decisions a worker takes from a
    score must be the same on every worker, or one waits for good in a collective the others never join."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    agreed = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(agreed, src=0)
    return float(agreed.item())


def refit_epochs(best_epoch: int, fit_windows: int, calib_windows: int) -> int:
    """Epochs of the refit on the whole training part: the best epoch's count scaled by the share of windows
    the held-out tail adds (0.3 on the synthetic suite cases, up to 1.0 on short runs, where FIT loses each run's
    first input window and the tail does not), at least one."""
    return max(1, math.ceil(best_epoch * calib_windows / max(fit_windows, 1)))


def refine(model: torch.nn.Module, loader: DataLoader, *, epochs: int, learning_rate: float,
           levels: tuple[float, float, float], device: torch.device) -> None:
    """Train `model` further for `epochs` passes over `loader` at a fixed rate (a fresh optimizer)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    for epoch in range(1, epochs + 1):
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        train_one_epoch(model, loader, optimizer, levels, device)
