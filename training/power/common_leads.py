"""Two forecasters of different steps or horizons scored on the same held-out points.

Both forecast from their own windows at their own steps, at origins on the coarser step's grid, as served (a model
that blends online following its blend over the holdout); the finer model's leads are averaged into coarser steps,
and both are scored against the telemetry resampled to the coarser step, over the lead times both cover, on target
bins inside the challenger's holdout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.durations import format_duration
from training.power.extrapolation import followed_weights
from training.power.features import POWER_CHANGE_COLUMN, Segment, resample
from training.power.forecaster import PowerForecaster


class NotComparable(ValueError):
    """No fair comparison of the two forecasters on this holdout; the message says why."""


HoldoutSpans = dict[str, tuple[int, int]]
"""Per series, [start, end) of its holdout in Unix seconds."""


@dataclass(frozen=True)
class CommonScore:
    """Both forecasters' MAE on the same (origin, lead) points at `step_s`, over leads 1..`lead_steps`."""

    step_s: int
    lead_steps: int
    points: int
    mae: tuple[float, float]  # in the order the forecasters were given


@dataclass(frozen=True)
class _Forecasts:
    ends: np.ndarray  # [N] Unix seconds where each input window ends (the origin bin's end)
    point: np.ndarray  # [N, leads] watts, one value per coarse lead

    @classmethod
    def none(cls, leads: int) -> _Forecasts:
        return cls(np.zeros(0, np.int64), np.zeros((0, leads)))


def common_step_and_leads(first: PowerForecaster, second: PowerForecaster) -> tuple[int, int]:
    """The coarser of the two steps and the number of its leads both horizons cover.

    Raises:
        NotComparable: steps that do not nest, or no lead in common.
    """
    steps = sorted((first.pipeline.step_s, second.pipeline.step_s))
    if steps[1] % steps[0]:
        raise NotComparable(f"steps {format_duration(steps[0])} and {format_duration(steps[1])} do not nest")
    reach = min(first.horizon * first.pipeline.step_s, second.horizon * second.pipeline.step_s)
    leads = reach // steps[1]
    if leads == 0:
        raise NotComparable(f"no common lead: a {format_duration(reach)} horizon is shorter than the coarser "
                            f"{format_duration(steps[1])} step")
    return steps[1], leads


def score_common(first: PowerForecaster, second: PowerForecaster, frame: pd.DataFrame, holdout: HoldoutSpans,
                 max_gap_s: int) -> CommonScore:
    """MAE of both forecasters on the same points of `frame` (canonical telemetry at least as fine as both steps).

    Raises:
        NotComparable: steps that do not nest, no common lead, or no point both can forecast (e.g. a holdout
            too short for a window).
    """
    step_s, leads = common_step_and_leads(first, second)
    truth = _truth(frame, step_s, max_gap_s, holdout)
    forecasts = [_forecasts(model, frame, step_s, leads, max_gap_s, holdout) for model in (first, second)]
    errors: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    for node, (bins, power) in truth.items():
        a, b = (f.get(node, _Forecasts.none(leads)) for f in forecasts)
        ends, rows_a, rows_b = np.intersect1d(a.ends, b.ends, return_indices=True)
        position = ends[:, None] // step_s + np.arange(leads)[None, :] - bins[0]
        inside = (position >= 0) & (position < len(bins))
        actual = np.where(inside, power[np.clip(position, 0, len(bins) - 1)], np.nan)
        scored = np.isfinite(actual)
        errors[0].append(np.abs(a.point[rows_a] - actual)[scored])
        errors[1].append(np.abs(b.point[rows_b] - actual)[scored])
    points = sum(len(e) for e in errors[0])
    if points == 0:
        raise NotComparable("no holdout point both models can forecast (holdout too short for their windows?)")
    mae_first, mae_second = (float(np.concatenate(e).mean()) for e in errors)
    return CommonScore(step_s=step_s, lead_steps=leads, points=points, mae=(mae_first, mae_second))


def _truth(frame: pd.DataFrame, step_s: int, max_gap_s: int,
           holdout: HoldoutSpans) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per series in `holdout`: the consecutive bin numbers at `step_s` that lie inside its holdout and their
    observed mean power, NaN where the bin was not observed. Only the holdout's bins are laid out: a stray sample
    years away (a mistyped date) spans no array."""
    by_node: dict[str, list[Segment]] = {}
    for segment in resample(frame, step_s, max(max_gap_s, step_s)):
        by_node.setdefault(segment.node_id, []).append(segment)
    truth = {}
    for node, segments in by_node.items():
        if node not in holdout:
            continue
        start, end = holdout[node]
        first = max(_seconds(segments[0].start) // step_s, -(-int(start) // step_s))
        last = min(_seconds(segments[-1].start) // step_s + len(segments[-1]), int(end) // step_s)
        if last <= first:
            continue
        bins = np.arange(first, last)
        power = np.full(len(bins), np.nan)
        for segment in segments:
            at = _seconds(segment.start) // step_s - first
            values = np.where(segment.imputed, np.nan, segment.power)
            begin, stop = max(at, 0), min(at + len(segment), len(bins))
            if begin < stop:
                power[begin:stop] = values[begin - at:stop - at]
        truth[node] = (bins, power)
    return truth


def _forecasts(forecaster: PowerForecaster, frame: pd.DataFrame, step_s: int, leads: int, max_gap_s: int,
               holdout: HoldoutSpans) -> dict[str, _Forecasts]:
    """Per series, the forecaster's served point forecasts from every window at its own step that ends on the
    `step_s` grid with a lead inside the holdout, averaged into `leads` leads of `step_s`. A model that blends online
    follows its blend in time order over every window of its own step with a lead inside the holdout, learning from
    their outcomes there, as a replica does over its nodes' windows (training.power.extrapolation). Its windows are
    filled over the gaps it is served with (`served_max_gap_s`), not the challenger's `max_gap_s`."""
    own_step, length, horizon = forecaster.pipeline.step_s, forecaster.sequence_length, forecaster.horizon
    per_lead = step_s // own_step
    following = forecaster.blends_online  # else only the windows on the grid are forecast: nothing to follow
    nodes, ends, inputs, last_power, targets, observed = [], [], [], [], [], []
    for segment in resample(frame, own_step, forecaster.pipeline.served_max_gap_s):
        if segment.node_id not in holdout:
            continue
        start, end = holdout[segment.node_id]
        origins = np.arange(length - 1, len(segment))
        window_ends = _seconds(segment.start) + (origins + 1) * own_step
        origins = origins[(window_ends + horizon * own_step > start) & (window_ends < end)
                          & (following | (window_ends % step_s == 0))]
        if origins.size == 0:
            continue
        features = forecaster.pipeline.transform(segment)
        view = np.lib.stride_tricks.sliding_window_view(features, length, axis=0)  # [T-L+1, F, L]
        windows = np.ascontiguousarray(view[origins - length + 1].transpose(0, 2, 1))
        windows[:, 0, POWER_CHANGE_COLUMN] = 0.0  # as served: a window transformed on its own has no step before it
        inputs.append(windows)
        last_power.append(segment.power[origins])
        position = origins[:, None] + np.arange(1, horizon + 1)[None, :]
        inside = position < len(segment)
        at = np.clip(position, 0, len(segment) - 1)
        target_ends = _seconds(segment.start) + (position + 1) * own_step
        targets.append(np.where(inside, segment.power[at], 0.0))
        observed.append(inside & ~segment.imputed[at] & (target_ends - own_step >= start) & (target_ends <= end))
        ends.append(_seconds(segment.start) + (origins + 1) * own_step)
        nodes.append(np.full(origins.size, segment.node_id, dtype=object))
    if not ends:
        return {}
    node, end_s = np.concatenate(nodes), np.concatenate(ends)
    experts = forecaster.experts(np.concatenate(inputs), np.concatenate(last_power), partner=True)
    weights = followed_weights(forecaster, experts, np.concatenate(targets), np.concatenate(observed),
                               end_s.astype("datetime64[s]"))
    point = forecaster.forecast_from(experts, weights).point[:, :leads * per_lead]
    point = point.reshape(len(end_s), leads, per_lead).mean(axis=2)
    on_grid = end_s % step_s == 0
    found = {}
    for name in np.unique(node[on_grid]):
        rows = on_grid & (node == name)
        found[str(name)] = _Forecasts(end_s[rows], point[rows])
    return found


def _seconds(timestamp: pd.Timestamp) -> int:
    return int(timestamp.timestamp())
