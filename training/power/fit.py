"""Plain torch training steps for PowerLSTM, shared by the Ray Train worker and tests. No Ray here."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from training.power.model import PowerLSTM, quantile_loss
from training.power.windows import Windows


@dataclass(frozen=True)
class SupervisedArrays:
    """Windows in the model's units: targets are changes from the last power over the power scale."""

    inputs: np.ndarray  # [N, T, F] float32
    targets: np.ndarray  # [N, H] float32 (0 where unscored)
    mask: np.ndarray  # [N, H] bool

    @classmethod
    def from_windows(cls, windows: Windows, power_std: float) -> SupervisedArrays:
        change = (windows.targets - windows.last_power[:, None]) / power_std
        change = np.where(windows.mask, change, 0.0).astype(np.float32)
        return cls(windows.inputs.astype(np.float32), change, windows.mask)

    def tensors(self) -> TensorDataset:
        # Copies: arrays fetched from Ray's object store are read-only.
        return TensorDataset(torch.tensor(self.inputs), torch.tensor(self.targets), torch.tensor(self.mask))


def seed_everything(seed: int) -> None:
    """Make a run repeatable on one device: same seed, same weights, same batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def interval_levels(coverage: float) -> tuple[float, float, float]:
    """Quantile levels (lower, median, upper) of a central interval with the given coverage."""
    tail = (1.0 - coverage) / 2.0
    return (tail, 0.5, 1.0 - tail)


def make_loader(arrays: SupervisedArrays, batch_size: int, *, shuffle: bool, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(arrays.tensors(), batch_size=batch_size, shuffle=shuffle, generator=generator)


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


def build_model(n_features: int, horizon: int, hidden_size: int, num_layers: int, dropout: float) -> PowerLSTM:
    return PowerLSTM(n_features=n_features, hidden_size=hidden_size, num_layers=num_layers,
                     horizon=horizon, dropout=dropout)
