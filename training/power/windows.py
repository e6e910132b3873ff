"""Supervised windows: what the forecaster sees at an origin, and what it must predict after it.

Each series is split in time into roles: FIT (trains the weights), CALIB (the held-out tail of the
training part: early stopping and interval calibration) and TEST (only ever forecast, never learned
from). A window's input may reach back into earlier roles (that is just history), but the targets it is
scored on all carry the wanted role, and targets on imputed bins are never scored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, get_args

import numpy as np

from training.power.features import POWER_CHANGE_COLUMN, FeaturePipeline, Segment

Split = Literal["series", "time"]  # how the training and test parts are cut: per series, or at one time for all
SPLITS: tuple[str, ...] = get_args(Split)


def describe_splits(cases: Iterable[tuple[str, str]]) -> str:
    """A suite table's note of how its (case name, split) pairs were cut: one split for every case, or the cases of
    each split in their order."""
    by_split: dict[str, list[str]] = {}
    for name, split in cases:
        if name not in by_split.setdefault(split, []):
            by_split[split].append(name)
    if len(by_split) == 1:
        return f"split: {next(iter(by_split))} (every case)"
    return "split: " + "; ".join(f"{split} for {', '.join(names)}" for split, names in by_split.items())


class NotEnoughData(ValueError):
    """Too little telemetry for a training, calibration or holdout window; the message says what to change."""


class TooMuchData(ValueError):
    """More windows × leads than one training takes in memory; the message says what to change."""


# Read by `train_lstm` users and, in a job record, by API users, who cannot set the fraction: both remedies named.
HOLDOUT_TOO_SHORT = ("holdout too short for one forecast (the last share of every series, never trained on): give "
                     "longer series, or a larger holdout fraction (train_lstm --holdout-fraction)")
TRAINING_PART_TOO_SHORT = ("give longer series, a shorter input window (models.power_predictor.sequence_length) or a "
                           "smaller holdout fraction (train_lstm --holdout-fraction)")


class Role(IntEnum):
    FIT = 0
    CALIB = 1
    TEST = 2


@dataclass(frozen=True)
class WindowInputs:
    """The model input of N windows, [N, T, F] float32, kept as the feature rows the windows share: window n is
    the T rows of `rows` from `starts[n]`. Windows a step apart share all but one row, so this holds 1/T of the
    memory of the stacked array (a cluster's 14 days at 1 min are 2 million windows: 8.5 GiB stacked at T = 60, F = 19).

    Indexing gathers only what it is asked for, by numpy's rules for `[window, step, feature]` with a window
    index (an int, a slice or an array) and optional step and feature indexes; `np.asarray` stacks them all.

    A window's first step reads 0 in the `first_change` column (the power change from the step before): a
    forecast's input window is transformed on its own (training.power.inference), so it has no step before it."""

    rows: np.ndarray  # [R, F] float32: the feature rows of every segment with a window, one after another
    starts: np.ndarray  # [N] int: the row of each window's first step
    length: int  # T: steps per window
    first_change: int | None = POWER_CHANGE_COLUMN

    dtype = np.dtype(np.float32)
    ndim = 3

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.starts), self.length, self.rows.shape[1])

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, key) -> np.ndarray:
        parts = key if isinstance(key, tuple) else (key,)
        if len(parts) > 3 or any(part is Ellipsis or part is None for part in parts):
            raise IndexError("window inputs take [window, step, feature] indexes only")
        window, step, feature = (*parts, slice(None), slice(None))[:3]
        indexes = [part for part in (window, step, feature) if not isinstance(part, slice)]
        if len(indexes) > 1 and any(np.ndim(part) for part in indexes):  # numpy pairs such indexes up
            return self._indexed_stack(window, step, feature)
        columns = self.rows[:, feature]  # a view of the shared rows
        steps = np.arange(self.length)[step]
        # [*windows, *steps, *features], always a copy (an integer array index, 0-d for one window's one step)
        gathered = np.asarray(columns[np.asarray(np.add.outer(self.starts[window], steps))])  # (a scalar: 0-d)
        if self.first_change is not None:
            features = np.arange(self.rows.shape[1])[feature]
            first = np.multiply.outer(np.asarray(steps) == 0, np.asarray(features) == self.first_change)
            if first.ndim == 0:
                if first:
                    gathered[...] = 0.0
            elif first.any():
                gathered[..., first] = 0.0
        return gathered[()] if gathered.ndim == 0 else gathered

    def _indexed_stack(self, window, step, feature) -> np.ndarray:
        """A key pairing array indexes (or an array with an int), by numpy's rules: the chosen windows stacked, then
        indexed."""
        if isinstance(window, slice):
            return self[window][:, step, feature]
        chosen = np.asarray(window)
        local = np.arange(chosen.size).reshape(chosen.shape) if chosen.ndim else 0
        return self[chosen.reshape(-1)][local, step, feature]

    def last_steps(self, steps: int) -> WindowInputs:
        """The same windows cut to their last `steps` steps (nothing copied)."""
        if not 0 < steps <= self.length:
            raise ValueError(f"steps must be in 1..{self.length}, got {steps}")
        return WindowInputs(self.rows, self.starts + (self.length - steps), steps, self.first_change)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        stacked = self[:]
        return stacked if dtype is None else stacked.astype(dtype)


@dataclass(frozen=True)
class Windows:
    """Windows over segments; all fields share the first axis (N windows)."""

    inputs: WindowInputs | np.ndarray  # [N, T, F] float32 model input (an array where a caller stacked its own)
    last_power: np.ndarray  # [N] watts at the origin
    targets: np.ndarray  # [N, H] watts (NaN past a segment's end)
    mask: np.ndarray  # [N, H] bool: this (window, lead) is scored
    node_ids: np.ndarray  # [N] series of each window
    origin_index: np.ndarray  # [N] position of the origin inside its segment
    segment_index: np.ndarray  # [N] which segment

    def __len__(self) -> int:
        return len(self.last_power)

    @property
    def points(self) -> int:
        return int(self.mask.sum())


def assign_roles(segments: list[Segment], train_fraction: float, calib_fraction: float,
                 split: Split = "series") -> list[np.ndarray]:
    """Role of every step: per series (`split` "series"), the first `train_fraction` of its steps train, the rest
    test; the last `calib_fraction` of the training steps are the calibration tail. With `split` "time", one cut in
    time for all series (`_roles_in_time`)."""
    if split == "time":
        return _roles_in_time(segments, train_fraction, calib_fraction)
    roles = [np.full(len(s), Role.TEST, dtype=np.int8) for s in segments]
    by_node: dict[str, list[int]] = {}
    for i, segment in enumerate(segments):
        by_node.setdefault(segment.node_id, []).append(i)
    for indices in by_node.values():
        total = sum(len(segments[i]) for i in indices)
        train_end = int(round(total * train_fraction))
        fit_end = int(round(train_end * (1.0 - calib_fraction)))
        position = 0
        for i in indices:
            steps = np.arange(position, position + len(segments[i]))
            roles[i][steps < train_end] = Role.CALIB
            roles[i][steps < fit_end] = Role.FIT
            position += len(segments[i])
    return roles


def _roles_in_time(segments: list[Segment], train_fraction: float, calib_fraction: float) -> list[np.ndarray]:
    """One cut in time for every series: the steps before the time by which `train_fraction` of all steps (every
    series together) were recorded train, the rest test; the last `calib_fraction` of the training steps (in time)
    calibrate. A series recorded after the cut is all test and one recorded before it all training, so no series
    recorded later trains the model that forecasts an earlier one (the per-series split lets it)."""
    times = np.sort(np.concatenate([segment.times.asi8 for segment in segments]))

    def cut(steps: int) -> int:  # the time of the first step after the first `steps` in time (none: all before it)
        return int(times[steps]) if steps < len(times) else np.iinfo(np.int64).max

    train_steps = int(round(len(times) * train_fraction))  # counted as the per-series split counts one series
    train_end, fit_end = cut(train_steps), cut(int(round(train_steps * (1.0 - calib_fraction))))
    roles = []
    for segment in segments:
        stamps = segment.times.asi8
        segment_roles = np.full(len(segment), Role.TEST, dtype=np.int8)
        segment_roles[stamps < train_end] = Role.CALIB
        segment_roles[stamps < fit_end] = Role.FIT
        roles.append(segment_roles)
    return roles


def build_windows(
    segments: list[Segment],
    roles: list[np.ndarray],
    pipeline: FeaturePipeline,
    *,
    role: Role,
    sequence_length: int,
    horizon: int,
    first_origin: int | None = None,
) -> Windows:
    """Every origin with a full input window and at least one scored target of `role` (`first_origin`: none before
    this step of its segment)."""
    parts, rows, offset = [], [], 0
    for index, (segment, segment_roles) in enumerate(zip(segments, roles, strict=True)):
        if len(segment) < sequence_length + 1:
            continue
        part = _segment_windows(segment, segment_roles, role, sequence_length, horizon,
                                max(first_origin or 0, sequence_length - 1))
        if part is None:
            continue
        last, targets, mask, nodes, origins = part
        rows.append(pipeline.transform(segment))
        parts.append((last, targets, mask, nodes, origins, np.full(len(origins), index),
                      offset + origins - (sequence_length - 1)))
        offset += len(segment)
    if not parts:
        n_features = len(pipeline.feature_names)
        return Windows(
            WindowInputs(np.zeros((0, n_features), np.float32), np.zeros(0, np.int64), sequence_length),
            np.zeros(0), np.zeros((0, horizon)), np.zeros((0, horizon), bool), np.zeros(0, object), np.zeros(0, int),
            np.zeros(0, int),
        )
    last, targets, mask, nodes, origins, segment_ids, starts = (np.concatenate(p) for p in zip(*parts, strict=True))
    inputs = WindowInputs(np.concatenate(rows), starts.astype(np.int64), sequence_length)
    return Windows(inputs, last, targets, mask, nodes, origins, segment_ids)


def _segment_windows(segment, segment_roles, role, sequence_length, horizon, first_origin):
    length = len(segment)
    padded_power = np.concatenate([segment.power, np.full(horizon, np.nan)])
    padded_roles = np.concatenate([segment_roles, np.full(horizon, -1, dtype=np.int8)])
    padded_imputed = np.concatenate([segment.imputed, np.ones(horizon, bool)])
    origins = np.arange(first_origin, length - 1)
    leads = origins[:, None] + np.arange(1, horizon + 1)[None, :]
    mask = (padded_roles[leads] == role) & ~padded_imputed[leads]
    keep = mask.any(axis=1)
    if not keep.any():
        return None
    origins, leads, mask = origins[keep], leads[keep], mask[keep]
    nodes = np.full(len(origins), segment.node_id, dtype=object)
    return segment.power[origins], padded_power[leads], mask, nodes, origins
