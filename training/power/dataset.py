"""From a validated telemetry frame to split, scaled windows, and from windows to a calibrated forecaster.

Used by `train_lstm` (train fraction 1.0: everything trains, the tail calibrates) and by `evaluate`
(train fraction < 1: the rest of every series is the test part the model never sees).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.durations import format_duration
from core.registry_metadata import DataSpan
from core.stores.frame import ReadLimits
from training.power.calibration import fit_calibration, points_needed
from training.power.estimator import MIN_ROWS
from training.power.features import FeaturePipeline, Segment, resample
from training.power.features_only import fit_features_only
from training.power.fit import SupervisedArrays
from training.power.forecaster import Architecture, PowerForecaster
from training.power.ray_trainer import TrainedWeights, train_power_lstm
from training.power.recency import recency_weights, window_ages
from training.power.scaling import ONE_WORKER, TrainScaling
from training.power.train_loop import WeightedChallenger
from training.power.windows import NotEnoughData, Role, Split, TooMuchData, Windows, assign_roles, build_windows
from training.settings import PowerPredictorConfig

if TYPE_CHECKING:
    from ray.train import UserCallback

logger = logging.getLogger(__name__)

CALIBRATION_FRACTION = 0.2
ROW_LIMIT_HORIZON = 60  # the horizon in steps KCLOUD_MAX_STORE_ROWS is sized for (core/stores/frame.py)


@dataclass(frozen=True)
class PreparedData:
    segments: list[Segment]
    roles: list[np.ndarray]
    pipeline: FeaturePipeline
    sequence_length: int
    horizon: int
    split: Split = "series"  # how `roles` were cut (`assign_roles`): recency ages count to the same end
    scored_from_length: int | None = None
    """Where set (a Tune search), the windows scored outside training (calibration and test) start only at the
    origins a window of this many steps has: trials of shorter windows are then chosen on the same points as the
    longest, not on more of them early in each segment."""

    def windows(self, role: Role, pipeline: FeaturePipeline | None = None,
                sequence_length: int | None = None) -> Windows:
        length = sequence_length or self.sequence_length
        common = role != Role.FIT and self.scored_from_length is not None
        return build_windows(self.segments, self.roles, pipeline or self.pipeline, role=role, sequence_length=length,
                             horizon=self.horizon,
                             first_origin=max(length, self.scored_from_length) - 1 if common else None)

    def require_training_windows(self, train_fraction: float, coverage: float | None,
                                 remedy: str = "pass a smaller --sequence-length or a larger --train-fraction") -> None:
        """NotEnoughData, naming what helps (`remedy`), unless the training part has windows to fit on and (unless
        `coverage` is None: nothing is calibrated on it) enough scored points to calibrate intervals of `coverage` on:
        found before any training, not when Ray Train starts or once it has run."""
        for role, name in ((Role.FIT, "training"), (Role.CALIB, "calibration")):
            if len(self.windows(role)) == 0:
                raise NotEnoughData(
                    f"no {name} windows: the training part of the series ({train_fraction:.0%}) is too short for a "
                    f"window of {self.sequence_length} steps and {self.horizon} leads; {remedy}")
        if coverage is None:
            return
        rows = sum(int((roles == Role.FIT).sum()) for roles in self.roles)
        if rows < MIN_ROWS:  # the features-only estimator fits on them (training.power.features_only)
            raise NotEnoughData(
                f"{rows} training rows: the training part of the series ({train_fraction:.0%}) is too short to fit "
                f"the features-only estimator on (at least {MIN_ROWS}); {remedy}")
        points, needed = self.windows(Role.CALIB).points, points_needed(coverage)
        if points < needed:
            raise NotEnoughData(
                f"{points} calibration points: the training part of the series ({train_fraction:.0%}) leaves too "
                f"few scored leads after a window of {self.sequence_length} steps for intervals at a coverage of "
                f"{coverage:g} (at least {needed}); {remedy}")

    def origin_times(self, windows: Windows) -> np.ndarray:
        """The time of each of `windows`' origins (datetime64), windows built from these segments."""
        times = np.empty(len(windows), dtype="datetime64[ns]")
        for index in np.unique(windows.segment_index):
            rows = windows.segment_index == index
            times[rows] = self.segments[int(index)].times[windows.origin_index[rows]].to_numpy(dtype="datetime64[ns]")
        return times

    def training_windows(self) -> Windows:
        """Every window with a target in the training part (the FIT and CALIB roles as one), for a final refit."""
        merged = [np.where(roles == Role.CALIB, Role.FIT, roles).astype(roles.dtype) for roles in self.roles]
        return build_windows(self.segments, merged, self.pipeline, role=Role.FIT,
                             sequence_length=self.sequence_length, horizon=self.horizon)

    def unseen_by(self, span: DataSpan | None) -> PreparedData:
        """This data with the test steps that a model trained on `span` saw moved into the training part, so that
        model is scored only where it never saw the answer. Seen: with one cut in time (`split` "time"), every
        series up to the span's end (what it learnt of that time from the others counts); per series, a series it
        names, up to its own last trained step."""
        if span is None:
            return self
        roles = []
        for segment, segment_roles in zip(self.segments, self.roles, strict=True):
            until = span.end if self.split == "time" else span.trained_until(segment.node_id)
            if until is not None and segment.start <= (end := pd.Timestamp(until)):
                seen = np.arange(len(segment)) <= (end - segment.start) // pd.Timedelta(seconds=segment.step_s)
                segment_roles = np.where(seen & (segment_roles == Role.TEST), Role.CALIB,
                                         segment_roles).astype(segment_roles.dtype)
            roles.append(segment_roles)
        return replace(self, roles=roles)

    def data_span(self, synthetic: bool = False) -> DataSpan:
        """Span of the rows that trained the model (FIT and CALIB roles)."""
        starts, ends, rows, series_end = [], [], 0, {}
        for segment, roles in zip(self.segments, self.roles, strict=True):
            trained = np.flatnonzero(roles != Role.TEST)
            if trained.size:
                times = segment.times
                starts.append(times[trained[0]])
                ends.append(times[trained[-1]])
                series_end[segment.node_id] = max(series_end.get(segment.node_id, ends[-1]), ends[-1])
                rows += int(trained.size)
        series = sorted({s.node_id for s in self.segments})
        return DataSpan(start=min(starts).to_pydatetime(), end=max(ends).to_pydatetime(), series=series,
                        rows=rows, synthetic=synthetic,
                        series_end={node: end.to_pydatetime() for node, end in sorted(series_end.items())})


def prepare(frame: pd.DataFrame, *, step_s: int, max_gap_s: int, features: list[str] | tuple[str, ...],
            sequence_length: int, horizon: int, train_fraction: float, skip_short: bool = False,
            split: Split = "series") -> PreparedData:
    """Resample, split every series in time (`split` "time": all series at one time; `assign_roles`), and fit the
    scalers on the training rows only.

    `skip_short` leaves out (with a warning) series too short for one window instead of refusing them: for
    a telemetry store, where a node that joined an hour ago must not stop the retraining of the others.

    Raises:
        NotEnoughData: naming a series too short for one window, when no series holds a window and the whole
            horizon after it, or when nothing is left to train on.
        TooMuchData: more windows × horizon steps than one training takes (`_require_windows_fit`).
    """
    max_gap_s = max(max_gap_s, step_s)
    segments = resample(frame, step_s, max_gap_s)
    if skip_short:
        segments = _drop_short(segments, sequence_length, step_s)
    _require_long_enough(segments, sequence_length, step_s, max_gap_s)
    _require_horizon_covered(segments, sequence_length, horizon, step_s)
    _require_windows_fit(segments, sequence_length, horizon, step_s)
    roles = assign_roles(segments, train_fraction, CALIBRATION_FRACTION, split)
    fit_parts = [s.slice(0, int((r == Role.FIT).sum())) for s, r in zip(segments, roles, strict=True)
                 if (r == Role.FIT).any()]
    if not fit_parts:
        raise NotEnoughData("no training rows: the train fraction leaves nothing to fit on")
    trained_on = [s.slice(0, int((r != Role.TEST).sum())) for s, r in zip(segments, roles, strict=True)
                  if (r != Role.TEST).any()]  # the refits train on the calibration rows too
    pipeline = FeaturePipeline.fit(fit_parts, features, step_s, max_gap_s=max_gap_s, trained_on=trained_on)
    return PreparedData(segments, roles, pipeline, sequence_length, horizon, split)


def _short_series(segments: list[Segment], sequence_length: int) -> dict[str, int]:
    """Series whose longest gap-free stretch cannot hold one window, with that length in steps."""
    longest: dict[str, int] = {}
    for segment in segments:
        longest[segment.node_id] = max(longest.get(segment.node_id, 0), len(segment))
    return {node: n for node, n in longest.items() if n < sequence_length + 1}


def _drop_short(segments: list[Segment], sequence_length: int, step_s: int) -> list[Segment]:
    short = _short_series(segments, sequence_length)
    if short and len(short) < len({s.node_id for s in segments}):
        logger.warning("left out %d series shorter than one window of %d steps at a %ds step: %s", len(short),
                       sequence_length + 1, step_s, ", ".join(sorted(short)))
        return [s for s in segments if s.node_id not in short]
    return segments  # all short: let the check below refuse with every name


def _require_horizon_covered(segments: list[Segment], sequence_length: int, horizon: int, step_s: int) -> None:
    """NotEnoughData unless some stretch holds a window and the whole horizon after it: else the far leads are never
    trained nor scored (a 7-day model at 1-minute steps was trained on hours of data and registered with 181 of its
    10,080 leads scored)."""
    longest = max(len(segment) for segment in segments)
    if longest < sequence_length + horizon:
        raise NotEnoughData(
            f"no series holds one window of {sequence_length} steps and the whole {horizon}-step horizon after it at "
            f"a {step_s}s step (longest gap-free stretch: {longest} steps): its far leads could never be trained or "
            "scored; use a shorter horizon or more data")


def _require_windows_fit(segments: list[Segment], sequence_length: int, horizon: int, step_s: int) -> None:
    """TooMuchData when the windows' targets (one row per window, one value per lead, built per role) would take more
    memory than the store's row limit is sized for: KCLOUD_MAX_STORE_ROWS rows at a 60-step horizon. A 7-day horizon
    at 1 minute on 14 days of one node is 203 M values, about 3.4 GB."""
    windows = sum(max(0, len(segment) - sequence_length) for segment in segments)
    values, limit = windows * horizon, ReadLimits.from_env().max_rows * ROW_LIMIT_HORIZON
    if values > limit:
        raise TooMuchData(
            f"{windows:,} windows × a {horizon:,}-step horizon at a {step_s}s step is {values:,} target values, more "
            f"than one training takes ({limit:,}: KCLOUD_MAX_STORE_ROWS × {ROW_LIMIT_HORIZON}, the horizon its row "
            "limit is sized for): use a shorter horizon, a longer step, or less data (since, fewer nodes)")


def _require_long_enough(segments: list[Segment], sequence_length: int, step_s: int, max_gap_s: int) -> None:
    short = _short_series(segments, sequence_length)
    if short:
        detail = ", ".join(f"{node!r} ({n} steps)" for node, n in sorted(short.items()))
        remedy = ("use a shorter sequence length (models.power_predictor.sequence_length; train_lstm "
                  "--sequence-length) or step (predictor.step), or drop them")
        stretches = {node: sum(segment.node_id == node for segment in segments) for node in short}
        if max(short.values()) == 1 and min(stretches.values()) > 1:  # samples, but none two within max_gap
            remedy = (f"their samples lie more than max_gap ({format_duration(max_gap_s)}) apart: use a step "
                      f"(predictor.step) no shorter than their interval, or a longer predictor.max_gap")
        raise NotEnoughData(
            f"series shorter than one window of {sequence_length + 1} steps at a {step_s}s step "
            f"(longest gap-free stretch): {detail}; {remedy}")


def train_forecaster(prepared: PreparedData, model_config: PowerPredictorConfig, *,
                     scaling: TrainScaling = ONE_WORKER, verbose: bool = True, storage_path: str | None = None,
                     callbacks: Sequence[UserCallback] = (), refit: bool = True, half_life: float | None = None,
                     ) -> tuple[PowerForecaster, TrainedWeights]:
    """Train with Ray Train on FIT windows, early-stop and calibrate on the CALIB tail, both with the measured
    power and with it withheld (the features-only mode); the run options are `train_power_lstm`'s. With a
    `half_life` (steps) the same Ray Train run trains a second time, each epoch's sample (and the refit's) favouring
    newer windows (training.power.recency), and keeps the run with the lower CALIB MAE
    (`TrainedWeights.half_life_steps` is None where the uniform run was kept).

    The forecaster returned holds the early-stopped weights, whose CALIB forecasts are held out: the calibration
    here and the served choice (`served.train_served`) rest on them. With `refit`, `TrainedWeights.refit_state_dict`
    holds those weights trained further on FIT and CALIB together; `train_served` puts them in service last."""
    fit_windows = prepared.windows(Role.FIT)
    calib_windows = prepared.windows(Role.CALIB)
    power_std = prepared.pipeline.power_std
    challenger = None
    if half_life is not None:
        challenger = WeightedChallenger(half_life, recency_weights(window_ages(prepared, fit_windows), half_life),
                                        recency_weights(window_ages(prepared, calib_windows), half_life))
    weights = train_power_lstm(
        SupervisedArrays.from_windows(fit_windows, power_std), SupervisedArrays.from_windows(calib_windows, power_std),
        model_config, power_std, scaling=scaling, verbose=verbose, storage_path=storage_path, callbacks=callbacks,
        target_calendar=prepared.pipeline.target_calendar, refit=refit, challenger=challenger,
    )
    architecture = Architecture(
        n_features=len(prepared.pipeline.feature_names), sequence_length=prepared.sequence_length,
        horizon=prepared.horizon, hidden_size=model_config.hidden_size, num_layers=model_config.num_layers,
        dropout=model_config.dropout, target_calendar=prepared.pipeline.target_calendar,
        relative_power=weights.relative_power,
    )
    forecaster = PowerForecaster(weights.state_dict, architecture, prepared.pipeline)
    quantiles = forecaster.raw_quantiles(calib_windows.inputs, calib_windows.last_power)
    forecaster.calibration = fit_calibration(
        quantiles, calib_windows.targets, calib_windows.mask,
        coverage=model_config.interval_coverage, tolerance=model_config.confidence_tolerance,
    )
    forecaster.features_only = fit_features_only(forecaster, prepared, coverage=model_config.interval_coverage,
                                                 tolerance=model_config.confidence_tolerance)
    return forecaster, weights
