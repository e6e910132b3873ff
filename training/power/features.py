"""The one feature pipeline shared by training, evaluation and serving.

Raw telemetry (irregular, gappy, several nodes) becomes regular segments at the configured step:
samples are averaged into step-wide bins, gaps up to `max_gap` are filled forward (and flagged), longer
gaps end a segment so that no window ever bridges them. A fitted `FeaturePipeline` (scalers, the
workload vocabulary and the calendar cycles, fitted on training rows only) turns a segment into the
model's input matrix; the calendar columns come from the segment's own timestamps, so training and
inference compute them the same way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from core.telemetry_csv import NUMERIC_FEATURES, OPTIONAL_FEATURES, TARGET
from training.power import calendar as cal
from training.settings import default_max_gap

POWER_CHANGE_COLUMN = 1
"""The input column of the power change from the step before (`feature_names`: power, then its change)."""

OTHER_WORKLOAD = "<other>"


@dataclass(frozen=True)
class Segment:
    """A gap-free run of one series at a regular step; arrays share the time axis."""

    node_id: str
    start: pd.Timestamp
    step_s: int
    power: np.ndarray  # [T] watts
    numeric: dict[str, np.ndarray]  # feature -> [T], NaN where never observed
    workload: np.ndarray  # [T] object (str or None)
    imputed: np.ndarray  # [T] bool: True where the bin had no sample and was filled forward

    def __len__(self) -> int:
        return len(self.power)

    @property
    def times(self) -> pd.DatetimeIndex:
        return pd.date_range(self.start, periods=len(self), freq=pd.Timedelta(seconds=self.step_s))

    @property
    def end(self) -> pd.Timestamp:
        """The time of the last step (without building every step's time, as `times` does)."""
        return self.start + pd.Timedelta(seconds=self.step_s * (len(self) - 1))

    def slice(self, begin: int, end: int) -> Segment:
        return Segment(
            node_id=self.node_id,
            start=self.start + pd.Timedelta(seconds=self.step_s * begin),
            step_s=self.step_s,
            power=self.power[begin:end],
            numeric={k: v[begin:end] for k, v in self.numeric.items()},
            workload=self.workload[begin:end],
            imputed=self.imputed[begin:end],
        )


def resample(frame: pd.DataFrame, step_s: int, max_gap_s: int) -> list[Segment]:
    """Split a validated telemetry frame into regular, gap-free segments, node by node."""
    segments: list[Segment] = []
    for node_id, rows in frame.groupby("node_id", sort=True):
        segments.extend(_resample_node(str(node_id), rows, step_s, max_gap_s))
    return segments


def _resample_node(node_id: str, rows: pd.DataFrame, step_s: int, max_gap_s: int) -> list[Segment]:
    seconds = _unix_seconds(rows["timestamp"])
    bins = (seconds // step_s).to_numpy()
    grouped = rows.assign(_bin=bins).groupby("_bin", sort=True)
    means = grouped[[TARGET, *NUMERIC_FEATURES]].mean()
    workload = grouped["workload_type"].last()  # each bin's last label given (a bin with none: missing)
    max_missing = max_gap_s // step_s
    segments = []
    # split at the long gaps before filling any bin: a stray sample years away costs no bins between
    for first, last in _runs_split_at_long_gaps(means.index[means[TARGET].notna()].to_numpy(), max_missing):
        full = np.arange(first, last + 1)
        part = means.reindex(full)
        imputed = part[TARGET].isna().to_numpy()
        # Fill forward (sample and hold), never from later samples: an origin on a filled bin must not
        # see the future, exactly as a live request cannot.
        power = part[TARGET].ffill().to_numpy(dtype=float)
        numeric = {name: part[name].ffill(limit=max_missing).to_numpy(dtype=float) for name in NUMERIC_FEATURES}
        kinds = workload.reindex(full).ffill().to_numpy(dtype=object)
        start = pd.Timestamp(int(first) * step_s, unit="s", tz="UTC")
        segments.append(Segment(node_id, start, step_s, power, numeric, kinds, imputed))
    return segments


def _unix_seconds(timestamps: pd.Series) -> pd.Series:
    epoch = pd.Timestamp(0, tz="UTC")
    return ((timestamps - epoch) // pd.Timedelta(seconds=1)).astype("int64")


def _runs_split_at_long_gaps(bins: np.ndarray, max_missing: int) -> list[tuple[int, int]]:
    """[first, last] bin numbers of the runs of sorted observed `bins` that hold no gap over `max_missing` bins."""
    breaks = np.flatnonzero(np.diff(bins) - 1 > max_missing)
    firsts = np.concatenate([bins[:1], bins[breaks + 1]])
    lasts = np.concatenate([bins[breaks], bins[-1:]])
    return list(zip(firsts.tolist(), lasts.tolist(), strict=True))


class FeaturePipeline(BaseModel):
    """Fitted feature state: which inputs, their scalers, the workload vocabulary and the calendar cycles.

    JSON-serializable. `calendar` is empty in pipelines saved before calendar inputs existed, which keeps
    their layout (and spec hash): those models load and serve unchanged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: tuple[str, ...]
    step_s: int
    power_mean: float
    power_std: float
    numeric_mean: dict[str, float]
    numeric_std: dict[str, float]
    workload_vocab: tuple[str, ...]
    calendar: tuple[cal.CalendarFeature, ...] = ()
    observed: tuple[str, ...] | None = None  # numeric features the training rows had; None: saved before this
    max_gap_s: int | None = None  # the longest gap training filled forward; None: saved before this (the default)
    power_range: tuple[float, float] | None = None  # the training power's lowest and highest, W; None: saved before
    # numeric features no training row lacked, and whether any training row had no label the vocabulary (the FIT
    # rows' labels) knows, which sets the `other` workload column: an input column
    # that training never set (a missing flag, the unlabelled column) kept its random initial weights, so serving
    # leaves it unset too (None: saved before this, served as before)
    always_measured: tuple[str, ...] | None = None
    other_label_seen: bool | None = None

    def beyond_training_range(self, watts: np.ndarray) -> bool:
        """Whether power values lie beyond the training power's range, widened by a tenth of it on each side (at
        least 5 % of its highest level: a flat training series has no range, and 200.5 W is no extrapolation of
        200 W): the model has seen nothing of that level, so its forecast is an extrapolation (never, for a pipeline
        saved before the range was kept)."""
        if self.power_range is None:
            return False
        low, high = self.power_range
        margin = max(0.1 * (high - low), 0.05 * abs(high))
        return bool(np.any((watts < low - margin) | (watts > high + margin)))

    @property
    def served_max_gap_s(self) -> int:
        """The longest gap this model's inputs are filled over, as served: training's (the default for its step when
        saved without it), at least a step."""
        return max(self.max_gap_s or default_max_gap(self.step_s), self.step_s)

    def sees(self, name: str) -> bool:
        """Whether numeric feature `name` was in the training data: a value for a feature the model never saw
        carries no meaning for it, so it is read as missing."""
        return name in self.features and (self.observed is None or name in self.observed)

    @classmethod
    def fit(cls, segments: list[Segment], features: tuple[str, ...] | list[str], step_s: int,
            calendar: tuple[cal.CalendarFeature, ...] | None = None, max_gap_s: int | None = None,
            trained_on: list[Segment] | None = None) -> FeaturePipeline:
        """Fit scalers on the given (training-only) segments.

        `calendar`: the calendar cycles to encode; None picks those the segments cover (calendar.MIN_CYCLES).
        `max_gap_s`: the longest gap the segments were filled over (None: `training.settings.default_max_gap`).
        `trained_on`: every row the models train on (default `segments`; more where a refit also trains on the
        calibration rows), which decides the indicator columns training sets (`always_measured`,
        `other_label_seen`).
        """
        unknown = sorted(set(features) - set(OPTIONAL_FEATURES))
        if unknown:
            raise ValueError(f"features: unknown feature(s) {unknown}; known: {list(OPTIONAL_FEATURES)}")
        power = np.concatenate([s.power for s in segments])
        rows = segments if trained_on is None else trained_on
        numeric_mean, numeric_std, observed, always = {}, {}, [], []
        for name in features:
            if name not in NUMERIC_FEATURES:
                continue
            if all(np.isfinite(s.numeric[name]).all() for s in rows):
                always.append(name)
            values = np.concatenate([s.numeric[name] for s in segments])
            values = values[np.isfinite(values)]
            numeric_mean[name] = float(values.mean()) if values.size else 0.0
            numeric_std[name] = _safe_std(values)
            if values.size:
                observed.append(name)
        vocab: tuple[str, ...] = ()
        unlabelled = None
        if "workload_type" in features:
            kinds = {k for s in segments for k in s.workload if isinstance(k, str)}
            vocab = tuple(sorted(kinds))
            unlabelled = any(not isinstance(k, str) or k not in kinds for s in rows for k in s.workload)
        return cls(
            features=tuple(features),
            step_s=step_s,
            power_mean=float(power.mean()),
            power_std=_safe_std(power),
            numeric_mean=numeric_mean,
            numeric_std=numeric_std,
            workload_vocab=vocab,
            calendar=cal.covered_cycles(_spans_s(segments)) if calendar is None else tuple(calendar),
            observed=tuple(observed),
            max_gap_s=max_gap_s,
            power_range=(float(np.nanmin(power)), float(np.nanmax(power))),
            always_measured=tuple(always),
            other_label_seen=unlabelled,
        )

    @property
    def feature_names(self) -> list[str]:
        names = ["power", "power_change"]
        for name in self.features:
            if name in NUMERIC_FEATURES:
                names += [name, f"{name}_missing"]
        if "workload_type" in self.features:
            names += [f"workload={k}" for k in (*self.workload_vocab, OTHER_WORKLOAD)]
        return names + cal.column_names(self.calendar)

    @property
    def target_calendar(self) -> tuple[tuple[int, int, float], ...]:
        """Per calendar cycle: its (sin, cos) input columns and radians per step (the model's TargetCalendar)."""
        names = self.feature_names
        return tuple((names.index(f"{name}_sin"), names.index(f"{name}_cos"),
                      2.0 * np.pi * self.step_s / cal.PERIOD_S[name]) for name in self.calendar)

    @property
    def spec_hash(self) -> str:
        """Identifies the input layout (not the fitted values): models refuse inputs of another layout."""
        layout = {"names": self.feature_names, "step_s": self.step_s}
        return hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]

    def scale_power(self, watts: np.ndarray) -> np.ndarray:
        return (watts - self.power_mean) / self.power_std

    def transform(self, segment: Segment) -> np.ndarray:
        """The model input for every step of a segment: [T, n_features] float32 (column POWER_CHANGE_COLUMN, the
        change from the step before, is 0 at the first step)."""
        power = self.scale_power(segment.power)
        change = np.diff(segment.power, prepend=segment.power[:1]) / self.power_std
        columns = [power, change]
        for name in self.features:
            if name not in NUMERIC_FEATURES:
                continue
            raw = segment.numeric[name] if self.sees(name) else np.full(len(segment), np.nan)
            missing = ~np.isfinite(raw)
            scaled = (raw - self.numeric_mean[name]) / self.numeric_std[name]
            # never missing in training: a missing value reads as the mean, its flag's weights never trained
            flag = missing & (self.always_measured is None or name not in self.always_measured)
            columns += [np.where(missing, 0.0, scaled), flag.astype(float)]
        if "workload_type" in self.features:
            index = {k: i for i, k in enumerate(self.workload_vocab)}
            codes = np.array([index.get(k, len(index)) for k in segment.workload])
            labels = np.eye(len(index) + 1)[codes]
            if self.other_label_seen is False:  # no label, or one training never saw: no label column set
                labels[:, -1] = 0.0
            columns += list(labels.T)
        if self.calendar:
            columns += cal.encode(segment.times, self.calendar)
        return np.stack(columns, axis=1).astype(np.float32)


def _spans_s(segments: list[Segment]) -> list[float]:
    """Clock time each series covers, first step to last, gaps included."""
    first: dict[str, pd.Timestamp] = {}
    last: dict[str, pd.Timestamp] = {}
    for segment in segments:
        end = segment.start + pd.Timedelta(seconds=segment.step_s * (len(segment) - 1))
        first[segment.node_id] = min(first.get(segment.node_id, segment.start), segment.start)
        last[segment.node_id] = max(last.get(segment.node_id, end), end)
    return [(last[node] - first[node]).total_seconds() for node in first]


def _safe_std(values: np.ndarray) -> float:
    std = float(values.std()) if values.size else 0.0
    return std if std > 1e-6 else 1.0
