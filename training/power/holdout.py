"""Scores on the holdout: the new forecaster's, and the active model's on the very same points."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from core.durations import format_duration
from core.registry import ModelRegistry
from core.registry_metadata import DataSpan, ModelMetadata, ModelNotFoundError, ModelUnreadable
from training.metrics import interval_metrics, mae_by_lead, point_metrics
from training.power.common_leads import HoldoutSpans, NotComparable, common_step_and_leads, score_common
from training.power.dataset import PreparedData
from training.power.extrapolation import followed_weights, served_forecast
from training.power.features import FeaturePipeline
from training.power.forecaster import ArtifactError, ArtifactUnreadable, PowerForecaster
from training.power.windows import HOLDOUT_TOO_SHORT, NotEnoughData, Role, WindowInputs
from training.served_stand_in import load_served

logger = logging.getLogger(__name__)

MIN_COMPARED_ORIGINS = 10
"""The fewest forecasts' worth of points (each forecast over every lead) both versions must be scored on for a
promotion to rest on them: a holdout the active version trained on nearly all of leaves a handful of neighbouring
points, on which a worse version could win by chance."""


class HoldoutMetrics(BaseModel):
    """A forecaster's scores on the holdout (TEST role) windows; watts unless named otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mae: float
    rmse: float
    mape: float  # percent
    coverage: float  # share of actual values inside the interval
    nominal_coverage: float
    mean_interval_width: float
    mean_confidence: float
    hit_rate: float  # share of actuals within `confidence_tolerance` x the point forecast of it
    confidence_tolerance: float
    last_value_mae: float  # the "no change" baseline on the same points
    holdout_points: int
    mae_by_lead: list[float | None] | None = None  # leads 1..H (None: a lead without points; saved before it)


class Incumbent(BaseModel):
    """The active version scored on the new model's holdout, and the new model's MAE on the very same points."""

    model_config = ConfigDict(frozen=True)

    version: int
    mae: float
    challenger_mae: float
    step_s: int  # the step both were scored at
    lead_steps: int  # leads scored, in steps of `step_s`
    points: int  # (origin, lead) points both were scored on
    resampled: bool = False  # True: another step or horizon, scored at the coarser step over the common leads
    scored_version: int | None = None  # scored in place of `version`, which cannot be loaded: what replicas serve


class Incomparable(BaseModel):
    """The active version, when no fair comparison with it was possible, and why."""

    model_config = ConfigDict(frozen=True)

    version: int
    why: str


@dataclass(frozen=True)
class CommonHoldout:
    """The holdout windows at the longest input window of the forecasters compared. One with a shorter window
    forecasts from the last steps of each, so all are scored on the very same (origin, lead) points."""

    inputs: WindowInputs  # [N, longest, F]
    last_power: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    origin_time: np.ndarray  # [N] datetime64: each window's origin, the order an online blend is followed in

    @classmethod
    def of(cls, prepared: PreparedData, longest: int, pipeline: FeaturePipeline | None = None) -> CommonHoldout:
        """The holdout windows of `longest` steps, with `pipeline`'s input columns (default: the data's)."""
        test = prepared.windows(Role.TEST, pipeline=pipeline, sequence_length=longest)
        if len(test) == 0:
            raise NotEnoughData(HOLDOUT_TOO_SHORT)
        return cls(test.inputs, test.last_power, test.targets, test.mask, prepared.origin_times(test))

    @property
    def points(self) -> int:
        return int(self.mask.sum())

    def mae(self, forecaster: PowerForecaster) -> float:
        """The forecaster's served forecast's MAE in watts over the common points, a model that blends online
        following its blend in time order over them, as a replica does over its nodes' windows."""
        experts = forecaster.experts(self.inputs.last_steps(forecaster.sequence_length), self.last_power, partner=True)
        weights = followed_weights(forecaster, experts, self.targets, self.mask, self.origin_time)
        return point_metrics(forecaster.forecast_from(experts, weights).point, self.targets, self.mask)["mae"]


def holdout_metrics(forecaster: PowerForecaster, prepared: PreparedData, coverage: float,
                    tolerance: float) -> HoldoutMetrics:
    """The forecaster's scores on the holdout windows of `prepared`."""
    test = prepared.windows(Role.TEST, pipeline=forecaster.pipeline, sequence_length=forecaster.sequence_length)
    if len(test) == 0:
        raise NotEnoughData(HOLDOUT_TOO_SHORT)
    forecast = served_forecast(forecaster, test, prepared.origin_times(test))  # the blend followed, as served
    last_value = test.last_power[:, None].repeat(test.targets.shape[1], axis=1)
    return HoldoutMetrics(
        **point_metrics(forecast.point, test.targets, test.mask),
        **interval_metrics(forecast.lower, forecast.upper, forecast.point, forecast.confidence,
                           test.targets, test.mask, nominal=coverage, tolerance=tolerance),
        last_value_mae=point_metrics(last_value, test.targets, test.mask)["mae"],
        holdout_points=int(test.mask.sum()),
        mae_by_lead=mae_by_lead(forecast.point, test.targets, test.mask),
    )


def holdout_spans(prepared: PreparedData) -> HoldoutSpans:
    """Per series, [start, end) of its holdout (TEST role) in Unix seconds."""
    spans: dict[str, tuple[int, int]] = {}
    step_s = prepared.pipeline.step_s
    for segment, roles in zip(prepared.segments, prepared.roles, strict=True):
        held = np.flatnonzero(roles == Role.TEST)
        if held.size:
            first = int(segment.start.timestamp()) + int(held[0]) * step_s
            end = int(segment.start.timestamp()) + (int(held[-1]) + 1) * step_s
            known = spans.get(segment.node_id, (first, end))
            spans[segment.node_id] = (min(known[0], first), max(known[1], end))
    return spans


@dataclass(frozen=True)
class Challenger:
    """The new forecaster with what it was scored on: its holdout, and the telemetry it was trained from."""

    forecaster: PowerForecaster
    metrics: HoldoutMetrics
    prepared: PreparedData
    frame: pd.DataFrame  # canonical telemetry at the challenger's step, the finer of the two (_require_same_reach)
    max_gap_s: int
    synthetic: bool = False  # trained on a SYNTHETIC trace (training.synthetic)


def score_incumbent(registry: ModelRegistry, model_id: str,
                    challenger: Challenger) -> Incumbent | Incomparable | None:
    """The served model (the active version, else the latest) scored on the challenger's holdout; None when the
    model has no version yet.

    Only holdout points the active version never trained on count (a version trained on a later or longer span
    has seen some). Same step, horizon and served gap: on the challenger's holdout windows, cut at the longer of the
    two input windows so both score the very same (origin, lead) points. A challenger of a finer step, a longer
    horizon, or filled over longer gaps (`max_gap`) than the active version is served with: both as served, at the
    active version's step over its leads, on the points both answer (training.power.common_leads). An active
    version that cannot be loaded is replaced, as replicas replace it, by the newest version served before it that
    loads (`Incumbent.scored_version`). Incomparable when neither is possible (no version loads, a challenger that
    does not answer every request the active version answers (`_require_same_reach`), steps that do not nest, a
    holdout too short for the active model's window), and for a challenger trained on a SYNTHETIC trace where the
    active version learned from real telemetry: scored on generated nodes it never saw, the active one would give
    way to a model of no real server.
    """
    version = registry.served_version(model_id)
    if version is None:
        return None
    try:
        scored, (current, metadata) = load_served(registry, model_id, version, partial(_load, registry, model_id),
                                                  (ModelNotFoundError, ArtifactError), _storage_error)
        if challenger.synthetic and not metadata.trained_on_synthetic_data:
            return Incomparable(version=version, why="it was trained on real telemetry, and this challenger on a "
                                                     "SYNTHETIC trace")
        incumbent = _score(current, version, challenger, metadata.data_span)
    except (ModelNotFoundError, ArtifactError) as exc:  # incl. a model without calibration
        logger.warning("active %s version %d cannot be scored: %s", model_id, version, exc)
        return Incomparable(version=version, why=f"it cannot be loaded ({type(exc).__name__}; details in the log)")
    except NotComparable as exc:
        return Incomparable(version=version, why=str(exc))
    return incumbent if scored == version else incumbent.model_copy(update={"scored_version": scored})


def _load(registry: ModelRegistry, model_id: str, version: int) -> tuple[PowerForecaster, ModelMetadata]:
    folder, metadata = registry.get(model_id, version)
    return PowerForecaster.load(folder), metadata


def _storage_error(exc: Exception) -> bool:
    return isinstance(exc, ModelUnreadable | ArtifactUnreadable)


def _require_same_reach(current: PowerForecaster, new: PowerForecaster) -> None:
    """NotComparable unless the challenger answers every request the active version answers: a step no coarser, a
    horizon no shorter, and at the same step, gaps in the telemetry filled over at least as long. The service routes
    each request by what the versions were trained for, so a challenger that forecasts 30 min ahead, activated in
    place of a 1-hour model, sent the hour's requests to another model; and one that fills shorter gaps refuses the
    stored windows with a longer one that the active version answers. (A finer step's default `max_gap` is shorter,
    5 steps: a finer challenger is not held to the coarser one's.)"""
    step, reach = current.pipeline.step_s, current.pipeline.step_s * current.horizon
    new_step, new_reach = new.pipeline.step_s, new.pipeline.step_s * new.horizon
    if new_reach < reach or new_step > step:
        raise NotComparable(
            f"it forecasts {format_duration(new_reach)} ahead at {format_duration(new_step)} steps, the active version "
            f"{format_duration(reach)} at {format_duration(step)} steps: in its place, requests the active version "
            f"answers would go to another model")
    gap, new_gap = current.pipeline.served_max_gap_s, new.pipeline.served_max_gap_s
    if new_step == step and new_gap < gap:
        raise NotComparable(
            f"it fills gaps in the telemetry up to {format_duration(new_gap)}, the active version up to "
            f"{format_duration(gap)}: in its place, windows with a longer gap that the active version answers would "
            f"be refused (predictor.max_gap)")


def _score(current: PowerForecaster, version: int, challenger: Challenger, trained_on: DataSpan | None) -> Incumbent:
    """Both on the holdout points the active version never trained on (`trained_on`: its data span)."""
    new, prepared = challenger.forecaster, challenger.prepared.unseen_by(trained_on)
    _require_same_reach(current, new)
    if not any((roles == Role.TEST).any() for roles in prepared.roles):
        raise NotComparable("it trained on all of this holdout's data; compare once newer telemetry is held out")
    same_gap = current.pipeline.served_max_gap_s == new.pipeline.served_max_gap_s
    if current.pipeline.step_s == new.pipeline.step_s and current.horizon == new.horizon and same_gap:
        longest = max(current.sequence_length, new.sequence_length)  # both read the same windows' ends
        try:
            holdouts = [CommonHoldout.of(prepared, longest, model.pipeline) for model in (current, new)]
        except NotEnoughData as exc:
            raise NotComparable(f"the holdout it never trained on is too short for a window of {longest} "
                                f"steps") from exc
        _require_enough(holdouts[0].points, new.horizon)
        return Incumbent(version=version, mae=holdouts[0].mae(current), challenger_mae=holdouts[1].mae(new),
                         step_s=new.pipeline.step_s, lead_steps=new.horizon, points=holdouts[0].points)
    step_s, _ = common_step_and_leads(current, new)
    score = score_common(current, new, challenger.frame, holdout_spans(prepared), challenger.max_gap_s)
    _require_enough(score.points, score.lead_steps)
    return Incumbent(version=version, mae=score.mae[0], challenger_mae=score.mae[1], step_s=step_s,
                     lead_steps=score.lead_steps, points=score.points, resampled=True)


def _require_enough(points: int, lead_steps: int) -> None:
    """Raises NotComparable where the (origin, lead) points compared make fewer than MIN_COMPARED_ORIGINS
    forecasts over every lead."""
    if points < MIN_COMPARED_ORIGINS * lead_steps:
        raise NotComparable(f"only {points} holdout points it never trained on, fewer than {MIN_COMPARED_ORIGINS} "
                            f"forecasts of {lead_steps} leads; compare once more telemetry is held out")
