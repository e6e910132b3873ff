"""Supervised windows: what the forecaster sees at an origin, and what it must predict after it.

Each series is split in time into roles: FIT (trains the weights), CALIB (the held-out tail of the
training part: early stopping and interval calibration) and TEST (only ever forecast, never learned
from). A window's input may reach back into earlier roles (that is just history), but the targets it is
scored on all carry the wanted role, and targets on imputed bins are never scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from training.power.features import FeaturePipeline, Segment


class NotEnoughData(ValueError):
    """Too little telemetry for a training, calibration or holdout window; the message says what to change."""


class Role(IntEnum):
    FIT = 0
    CALIB = 1
    TEST = 2


@dataclass(frozen=True)
class Windows:
    """Stacked windows; all arrays share the first axis (N windows)."""

    inputs: np.ndarray  # [N, T, F] float32 model input
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


def assign_roles(segments: list[Segment], train_fraction: float, calib_fraction: float) -> list[np.ndarray]:
    """Role of every step: per series, the first `train_fraction` of its steps train, the rest test;
    the last `calib_fraction` of the training steps are the calibration tail."""
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


def build_windows(
    segments: list[Segment],
    roles: list[np.ndarray],
    pipeline: FeaturePipeline,
    *,
    role: Role,
    sequence_length: int,
    horizon: int,
) -> Windows:
    """Every origin with a full input window and at least one scored target of `role`."""
    parts = []
    for index, (segment, segment_roles) in enumerate(zip(segments, roles, strict=True)):
        if len(segment) < sequence_length + 1:
            continue
        features = pipeline.transform(segment)
        part = _segment_windows(segment, segment_roles, features, role, sequence_length, horizon)
        if part is not None:
            parts.append((*part, np.full(len(part[0]), index)))
    if not parts:
        n_features = len(pipeline.feature_names)
        return Windows(
            np.zeros((0, sequence_length, n_features), np.float32), np.zeros(0), np.zeros((0, horizon)),
            np.zeros((0, horizon), bool), np.zeros(0, object), np.zeros(0, int), np.zeros(0, int),
        )
    inputs, last, targets, mask, nodes, origins, segment_ids = (np.concatenate(p) for p in zip(*parts, strict=True))
    return Windows(inputs, last, targets, mask, nodes, origins, segment_ids)


def _segment_windows(segment, segment_roles, features, role, sequence_length, horizon):
    length = len(segment)
    padded_power = np.concatenate([segment.power, np.full(horizon, np.nan)])
    padded_roles = np.concatenate([segment_roles, np.full(horizon, -1, dtype=np.int8)])
    padded_imputed = np.concatenate([segment.imputed, np.ones(horizon, bool)])
    origins = np.arange(sequence_length - 1, length - 1)
    leads = origins[:, None] + np.arange(1, horizon + 1)[None, :]
    mask = (padded_roles[leads] == role) & ~padded_imputed[leads]
    keep = mask.any(axis=1)
    if not keep.any():
        return None
    origins, leads, mask = origins[keep], leads[keep], mask[keep]
    view = np.lib.stride_tricks.sliding_window_view(features, sequence_length, axis=0)  # [T-L+1, F, L]
    inputs = np.ascontiguousarray(view[origins - sequence_length + 1].transpose(0, 2, 1))
    nodes = np.full(len(origins), segment.node_id, dtype=object)
    return inputs, segment.power[origins], padded_power[leads], mask, nodes, origins
