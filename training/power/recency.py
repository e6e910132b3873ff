"""Recency weights: newer training windows count more where the calibration split says so.

A window's age is the number of steps from its origin to its series' last training step (by time, so a gap
between segments counts); with one cut in time for all series (`split` "time"), to the last training step of any
series, so a run recorded long before the cut counts as old as it is. Its weight is 0.5 ** (age / half-life).
The half-life is chosen on the calibration split with the LightGBM partner, five of which are cheap to fit
(training.power.served), among `HALF_LIFE_FRACTIONS` of the median series' training steps, and "none" (every
window weighs the same) wins a tie, so a trace whose rhythm does not drift keeps unweighted models. The LightGBM
weighs its training rows by it; the LSTM, trained once, draws each epoch's sample of windows with chances in
proportion to it (training.power.fit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from training.power.windows import Role, Windows

if TYPE_CHECKING:
    from training.power.dataset import PreparedData

HALF_LIFE_FRACTIONS = (1 / 2, 1 / 4, 1 / 8, 1 / 16)
"""Half-lives tried besides none, as fractions of the median series' training steps."""


def candidate_half_lives(prepared: PreparedData) -> list[float | None]:
    """None first (unweighted), then each fraction of the median count of training steps of the series that have
    any (with one cut in time for all series, a series recorded after it has none)."""
    steps: dict[str, int] = {}
    for segment, roles in zip(prepared.segments, prepared.roles, strict=True):
        steps[segment.node_id] = steps.get(segment.node_id, 0) + int((roles != Role.TEST).sum())
    trained = [count for count in steps.values() if count]
    span = float(np.median(trained)) if trained else 0.0
    return [None, *(span * fraction for fraction in HALF_LIFE_FRACTIONS if span * fraction >= 1.0)]


def window_ages(prepared: PreparedData, windows: Windows) -> np.ndarray:
    """[N] steps from each window's origin to the last training step of its series (0 for a series with none), or,
    where the data was cut at one time for all series, to the last training step of any series."""
    step_s = prepared.pipeline.step_s
    training_end: dict[str, float] = {}
    for segment, roles in zip(prepared.segments, prepared.roles, strict=True):
        trained = np.flatnonzero(roles != Role.TEST)
        if trained.size:
            end = segment.start.timestamp() + float(trained[-1]) * step_s
            training_end[segment.node_id] = max(training_end.get(segment.node_id, end), end)
    if prepared.split == "time" and training_end:
        cut = max(training_end.values())
        training_end = {node: cut for node in training_end}
    segment_offset = np.array([(training_end.get(s.node_id, s.start.timestamp()) - s.start.timestamp()) / step_s
                               for s in prepared.segments])
    if len(windows) == 0:
        return np.zeros(0)
    return np.maximum(segment_offset[windows.segment_index] - windows.origin_index, 0.0)


def recency_weights(ages: np.ndarray, half_life: float) -> np.ndarray:
    """[N] weight of each window: 0.5 ** (age / half_life), both in steps."""
    return np.power(0.5, np.asarray(ages, dtype=float) / half_life)
