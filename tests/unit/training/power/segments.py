"""Hand-made feature segments for the forecaster's unit tests: a power series, the other features missing unless
given, at a 1-minute step from a midnight that every step used here divides."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.telemetry_csv import NUMERIC_FEATURES
from training.power.features import FeaturePipeline, Segment
from training.power.windows import Role, build_windows

STEP = 60
START = pd.Timestamp("2026-01-05", tz="UTC")


def make_segment(power, *, node: str = "n", step: int = STEP, start_step: int = 0, numeric: dict | None = None,
                 workload=None, imputed=None) -> Segment:
    """`power` from START + `start_step` steps; `numeric` fills some features, the rest are NaN."""
    power = np.asarray(power, float)
    values = {name: np.full(len(power), np.nan) for name in NUMERIC_FEATURES}
    values.update({name: np.asarray(column, float) for name, column in (numeric or {}).items()})
    return Segment(node_id=node, start=START + pd.Timedelta(seconds=start_step * step), step_s=step, power=power,
                   numeric=values,
                   workload=np.asarray([None] * len(power) if workload is None else workload, dtype=object),
                   imputed=np.zeros(len(power), bool) if imputed is None else np.asarray(imputed, bool))


def all_windows(segments: list[Segment], sequence_length: int, horizon: int, role: Role = Role.TEST):
    """Every window of `segments` in one role, with a pipeline fitted on them (no optional features)."""
    roles = [np.full(len(s), role, np.int8) for s in segments]
    pipeline = FeaturePipeline.fit(segments, (), STEP)
    return build_windows(segments, roles, pipeline, role=role, sequence_length=sequence_length, horizon=horizon)
