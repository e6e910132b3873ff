"""The features-only mode: a forecast when no power was measured, from the other telemetry alone.

The power of the input window is estimated from its features (training.power.estimator, fitted on the
training rows), the forecaster runs on that estimated history as it does on a measured one, and the
intervals come from a calibration of their own: fitted on the calibration windows with their power withheld
and estimated the same way, in multiples of the estimate's typical error at the origin (normalized conformal),
so a forecast from fewer or weaker features gets a wider interval. The backtest scores the mode on the test
windows with the power withheld likewise (`withheld_windows`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from training.power.calibration import Calibration, fit_calibration
from training.power.estimator import PowerEstimator
from training.power.features import FeaturePipeline, Segment
from training.power.windows import Role, Windows, build_windows

if TYPE_CHECKING:
    from training.power.dataset import PreparedData
    from training.power.forecaster import PowerForecaster


class FeaturesOnly(BaseModel):
    """The estimator and the mode's own calibration; saved beside the weights as features_only.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    estimator: PowerEstimator
    calibration: Calibration  # scaled: margins in multiples of the estimate's scale at the origin


def estimated_segment(segment: Segment, estimator: PowerEstimator) -> tuple[Segment, np.ndarray]:
    """The segment with its power replaced by the estimate, and the regression used at every step."""
    power, chosen = estimator.estimate(segment.numeric, segment.workload)
    return dataclasses.replace(segment, power=power), chosen


def scales(estimator: PowerEstimator, chosen: np.ndarray) -> np.ndarray:
    """Typical error (W) of the estimate made with each chosen regression."""
    return np.array([fit.scale for fit in estimator.fits])[chosen]


def withheld_windows(prepared: PreparedData, role: Role, estimator: PowerEstimator,
                     pipeline: FeaturePipeline | None = None,
                     sequence_length: int | None = None) -> tuple[Windows, np.ndarray]:
    """The `role` windows with the input power estimated from the features (targets stay measured), and the
    estimate's scale at every window's origin [N]."""
    pipeline = pipeline or prepared.pipeline
    length = sequence_length or prepared.sequence_length
    measured = prepared.windows(role, pipeline=pipeline, sequence_length=length)
    parts = [estimated_segment(segment, estimator) for segment in prepared.segments]
    estimated = build_windows([segment for segment, _ in parts], prepared.roles, pipeline, role=role,
                              sequence_length=length, horizon=prepared.horizon)
    if len(estimated) != len(measured):
        raise RuntimeError("estimated and measured windows do not line up")
    per_step = np.concatenate([scales(estimator, chosen) for _, chosen in parts])
    offsets = np.concatenate([[0], np.cumsum([len(segment) for segment in prepared.segments])[:-1]])
    origin_scale = per_step[offsets[estimated.segment_index] + estimated.origin_index]
    windows = dataclasses.replace(measured, inputs=estimated.inputs, last_power=estimated.last_power)
    return windows, origin_scale


def fit_features_only(forecaster: PowerForecaster, prepared: PreparedData, *, coverage: float,
                      tolerance: float) -> FeaturesOnly:
    """Fit the estimator on the FIT rows and the mode's calibration on the CALIB windows, power withheld."""
    fit_rows = [segment.slice(0, int((roles == Role.FIT).sum()))
                for segment, roles in zip(prepared.segments, prepared.roles, strict=True) if (roles == Role.FIT).any()]
    estimator = PowerEstimator.fit(fit_rows, prepared.pipeline)
    calib, scale = withheld_windows(prepared, Role.CALIB, estimator, forecaster.pipeline, forecaster.sequence_length)
    raw = forecaster.raw_quantiles(calib.inputs, calib.last_power)
    calibration = fit_calibration(raw, calib.targets, calib.mask, coverage=coverage, tolerance=tolerance, scale=scale)
    return FeaturesOnly(estimator=estimator, calibration=calibration)
