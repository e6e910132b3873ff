"""Each training epoch's sample of windows: the loader `fit_epochs` and `refine` (training.power.fit) pass over.

Windows a step apart share all but one input step, so an epoch is a fresh random sample of at most
`windows_per_epoch` of them (all of them when few), optionally drawn with chances in proportion to each window's
weight (training.power.recency), and split among data-parallel Ray Train workers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from training.power.fit import SupervisedArrays


class EpochSample(DistributedSampler):
    """A data-parallel worker's share of a fresh random sample of at most `per_epoch` windows each epoch (the
    epoch set by `set_epoch`; every worker draws the same sample and takes its own part of it)."""

    def __init__(self, dataset: Dataset, per_epoch: int, *, replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=replicas, rank=rank, shuffle=True, seed=seed)
        self.per_replica = min(self.num_samples, math.ceil(per_epoch / replicas))

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.per_replica)

    def __len__(self) -> int:
        return self.per_replica


class WeightedEpochSample(DistributedSampler):
    """A data-parallel worker's share of each epoch's sample of `per_epoch` windows (at most all of them) drawn with
    replacement, a window's chance in proportion to its weight (training.power.recency); the epoch set by
    `set_epoch`, every worker draws the same sample and takes its own part of it."""

    def __init__(self, dataset: Dataset, weights: np.ndarray, per_epoch: int, *, replicas: int, rank: int,
                 seed: int):
        super().__init__(dataset, num_replicas=replicas, rank=rank, shuffle=True, seed=seed)
        self.weights = torch.as_tensor(np.asarray(weights, dtype=float))
        self.per_replica = math.ceil(min(per_epoch, len(self.weights)) / replicas)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.per_replica * self.num_replicas, replacement=True,
                                  generator=generator)
        return iter(drawn[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.per_replica


def make_loader(data: SupervisedArrays | Dataset, batch_size: int, *, seed: int, per_epoch: int | None = None,
                replicas: int = 1, rank: int = 0, weights: np.ndarray | None = None) -> DataLoader:
    """Shuffled batches of a fresh random sample of at most `per_epoch` windows every epoch (all windows without a
    cap), split among `replicas` data-parallel workers. Windows a step apart share all but one input step, so a
    sample of them teaches nearly what all do, and early stopping looks at validation more often. With `weights`
    ([N], one per window) the sample is drawn with chances in proportion to them (`WeightedEpochSample`)."""
    dataset = data.tensors() if isinstance(data, SupervisedArrays) else data
    if weights is not None:
        if len(weights) != len(dataset):
            raise ValueError("a weighted sample needs one weight per window")
        sampler = WeightedEpochSample(dataset, weights, per_epoch or len(dataset), replicas=replicas, rank=rank,
                                      seed=seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    if replicas > 1:
        return DataLoader(dataset, batch_size=batch_size,
                          sampler=EpochSample(dataset, per_epoch or len(dataset), replicas=replicas, rank=rank,
                                              seed=seed))
    generator = torch.Generator().manual_seed(seed)  # with no cap, the very sampler of DataLoader(shuffle=True)
    sampler = RandomSampler(dataset, num_samples=min(per_epoch or len(dataset), len(dataset)), generator=generator)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator)
