"""Each training epoch's sample of windows (training.power.epoch_sample)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from training.power.epoch_sample import EpochSample, WeightedEpochSample, make_loader
from training.power.fit import SupervisedArrays
from training.power.recency import recency_weights


def numbered(n: int) -> SupervisedArrays:
    """Windows whose single input value is their index."""
    return SupervisedArrays(np.arange(n, dtype=np.float32).reshape(n, 1, 1), np.zeros((n, 1), np.float32),
                            np.ones((n, 1), bool))


def epoch_indices(loader: DataLoader, epoch: int) -> list[int]:
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    return [int(value) for inputs, _, _ in loader for value in inputs.flatten()]


def test_a_capped_epoch_trains_on_a_fresh_sample_of_distinct_windows() -> None:
    loader = make_loader(numbered(100), 8, seed=0, per_epoch=30)
    first, second = epoch_indices(loader, 1), epoch_indices(loader, 2)
    assert len(first) == len(set(first)) == 30 and len(second) == len(set(second)) == 30
    assert set(first) != set(second)
    assert len(loader) == 4  # batches: 8 + 8 + 8 + 6


def test_without_a_binding_cap_an_epoch_is_what_a_shuffled_loader_gives() -> None:
    """The same seed gives the very batches of DataLoader(shuffle=True): runs on small data are unchanged."""
    arrays = numbered(50)
    for cap in (None, 50, 4096):
        plain = DataLoader(arrays.tensors(), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3))
        loader = make_loader(arrays, 8, seed=3, per_epoch=cap)
        assert [epoch_indices(loader, epoch) for epoch in (1, 2)] == [epoch_indices(plain, epoch) for epoch in (1, 2)]


def test_data_parallel_workers_split_one_sample_between_them() -> None:
    dataset = numbered(100).tensors()
    shares = [EpochSample(dataset, 40, replicas=2, rank=rank, seed=5) for rank in (0, 1)]
    for sampler in shares:
        sampler.set_epoch(1)
    first = [list(sampler) for sampler in shares]
    assert [len(share) for share in first] == [20, 20] and not set(first[0]) & set(first[1])
    for sampler in shares:
        sampler.set_epoch(2)
    assert set(first[0]) | set(first[1]) != {index for sampler in shares for index in sampler}
    assert len(make_loader(numbered(100), 10, seed=5, per_epoch=40, replicas=2, rank=1)) == 2


def test_a_weighted_epoch_draws_windows_in_proportion_to_their_weights() -> None:
    """Recency weights with a 10-step half-life on 100 windows, the last the newest: the newest ten are drawn about
    half the time, the oldest half almost never, and the epochs differ but repeat with the seed."""
    weights = recency_weights(np.arange(99, -1, -1, dtype=float), half_life=10.0)
    loader = make_loader(numbered(100), 64, seed=0, per_epoch=4000, weights=weights)
    drawn = np.array(epoch_indices(loader, 1))
    assert drawn.size == 100  # at most as many draws as windows, like an unweighted epoch
    many = np.array([index for epoch in range(1, 41) for index in epoch_indices(loader, epoch)])
    share_newest = np.mean(many >= 90)
    assert 0.4 < share_newest < 0.6  # 1 - 0.5 ** (10 / 10) = 0.5 of the weight
    assert np.mean(many < 50) < 0.05  # 0.5 ** 5 = 3 % of the weight
    assert epoch_indices(loader, 1) == drawn.tolist() and epoch_indices(loader, 2) != drawn.tolist()


def test_data_parallel_workers_split_one_weighted_sample_between_them() -> None:
    dataset, weights = numbered(100).tensors(), recency_weights(np.arange(100.0), half_life=20.0)
    shares = [WeightedEpochSample(dataset, weights, 40, replicas=2, rank=rank, seed=5) for rank in (0, 1)]
    whole = WeightedEpochSample(dataset, weights, 40, replicas=1, rank=0, seed=5)
    for sampler in (*shares, whole):
        sampler.set_epoch(3)
    assert [len(share) for share in shares] == [20, 20]
    assert sorted(list(shares[0]) + list(shares[1])) == sorted(whole)


def test_a_weighted_sample_needs_one_weight_per_window() -> None:
    with pytest.raises(ValueError, match="one weight per window"):
        make_loader(numbered(10), 4, seed=0, weights=np.ones(9))
