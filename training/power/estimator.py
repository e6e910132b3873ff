"""Power from the other telemetry where none was measured: ridge regressions per feature subset.

Power models such as Kepler's estimate a machine's power from its utilization with a regression fitted
where power was measured. Here one ridge regression is fitted on the training rows for every subset of
the numeric features the training data holds (with and without the workload type), each on the rows where
all its features are present. A step is estimated with the largest fitted subset of the features it has;
the subset's `scale` (its mean absolute error on its training rows, W) says how far off such an estimate
typically is, which the features-only intervals are calibrated in (training.power.features_only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
from pydantic import BaseModel, ConfigDict

from core.telemetry_csv import NUMERIC_FEATURES
from training.power.features import FeaturePipeline, Segment

WORKLOAD = "workload_type"
MIN_ROWS = 30  # a subset with fewer complete training rows gets no regression
RIDGE = 1e-3  # penalty per row on the standardized coefficients


class SubsetFit(BaseModel):
    """One regression: power = intercept + sum(weight * standardized feature) + workload offset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: tuple[str, ...]  # numeric features, plus "workload_type" when it uses the workload
    intercept: float
    weights: tuple[float, ...]  # per numeric feature of `features`, on (value - mean) / std
    workload_offsets: tuple[float, ...] = ()  # per workload of the vocabulary, then one for any other
    scale: float  # mean absolute error on its training rows, W
    rows: int

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(name for name in self.features if name != WORKLOAD)


class PowerEstimator(BaseModel):
    """Every fitted subset, largest first; JSON-serializable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: dict[str, float]
    std: dict[str, float]
    workload_vocab: tuple[str, ...]
    fits: tuple[SubsetFit, ...]

    @classmethod
    def fit(cls, segments: Sequence[Segment], pipeline: FeaturePipeline) -> PowerEstimator:
        """Fit on `segments` (training rows only) with the inputs `pipeline` uses."""
        power = np.concatenate([s.power for s in segments])
        numeric = [name for name in pipeline.features if name in NUMERIC_FEATURES and pipeline.sees(name)]
        values = {name: np.concatenate([s.numeric[name] for s in segments]) for name in numeric}
        present = {name: np.isfinite(v) for name, v in values.items()}
        numeric = [name for name in numeric if present[name].sum() >= MIN_ROWS]
        mean = {name: float(values[name][present[name]].mean()) for name in numeric}
        std = {name: float(values[name][present[name]].std()) or 1.0 for name in numeric}
        vocab = pipeline.workload_vocab if WORKLOAD in pipeline.features else ()
        kinds = np.concatenate([s.workload for s in segments])
        codes = _codes(kinds, vocab)
        uses_workload = (False, True) if vocab else (False,)
        fits = []
        for size in range(len(numeric) + 1):
            for subset in combinations(numeric, size):
                for workload in uses_workload:
                    rows = np.ones(power.size, bool)
                    for name in subset:
                        rows &= present[name]
                    if workload:
                        rows &= codes >= 0
                    if rows.sum() < MIN_ROWS:
                        continue
                    columns = [(values[name][rows] - mean[name]) / std[name] for name in subset]
                    fits.append(_ridge(subset, columns, codes[rows] if workload else None, len(vocab), power[rows]))
        fits.sort(key=lambda f: (-len(f.features), f.scale))
        return cls(mean=mean, std=std, workload_vocab=vocab, fits=tuple(fits))

    @property
    def inputs(self) -> tuple[str, ...]:
        """The features any regression uses."""
        return tuple(sorted({name for f in self.fits for name in f.features}))

    def choose(self, available: set[str]) -> int:
        """Index of the regression for a step with these features: the largest fitted subset of them."""
        for index, fit in enumerate(self.fits):
            if set(fit.features) <= available:
                return index
        raise ValueError("the estimator has no regression without features")

    def estimate(self, numeric: Mapping[str, np.ndarray], workload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Estimated power [T] and the index of the regression used at every step [T]."""
        length = len(workload)
        present = {name: np.isfinite(np.asarray(numeric[name], float)) if name in numeric else np.zeros(length, bool)
                   for name in self.mean}
        codes = _codes(workload, self.workload_vocab)
        # a label outside the vocabulary is one the model never saw: no workload offset speaks for it
        present[WORKLOAD] = (codes >= 0) & (codes < len(self.workload_vocab))
        names = list(present)
        patterns = np.stack([present[name] for name in names], axis=1)
        chosen = np.zeros(length, int)
        power = np.zeros(length)
        for pattern in np.unique(patterns, axis=0):
            steps = np.flatnonzero((patterns == pattern).all(axis=1))
            index = self.choose({name for name, on in zip(names, pattern, strict=True) if on})
            chosen[steps] = index
            power[steps] = self._apply(self.fits[index], numeric, codes, steps)
        return np.maximum(power, 0.0), chosen

    def _apply(self, fit: SubsetFit, numeric: Mapping[str, np.ndarray], codes: np.ndarray,
               steps: np.ndarray) -> np.ndarray:
        power = np.full(steps.size, fit.intercept)
        for name, weight in zip(fit.numeric, fit.weights, strict=True):
            power += weight * (np.asarray(numeric[name], float)[steps] - self.mean[name]) / self.std[name]
        if fit.workload_offsets:
            power += np.asarray(fit.workload_offsets)[codes[steps]]
        return power


def _codes(kinds: np.ndarray, vocab: Sequence[str]) -> np.ndarray:
    """Workload index in the vocabulary (len(vocab) for any other), -1 where no workload is known."""
    index = {kind: i for i, kind in enumerate(vocab)}
    return np.array([index.get(k, len(vocab)) if isinstance(k, str) else -1 for k in kinds], dtype=int)


def _ridge(subset: tuple[str, ...], columns: list[np.ndarray], codes: np.ndarray | None, vocab_size: int,
           power: np.ndarray) -> SubsetFit:
    """Ridge regression with an unpenalized intercept; workload one-hot columns (vocabulary + other)."""
    n = power.size
    design = [np.ones(n), *columns]
    if codes is not None:
        design += list(np.eye(vocab_size + 1)[codes].T)
    x = np.stack(design, axis=1)
    penalty = np.eye(x.shape[1]) * RIDGE * n
    penalty[0, 0] = 0.0
    coefficients = np.linalg.solve(x.T @ x + penalty, x.T @ power)
    scale = float(np.abs(x @ coefficients - power).mean())
    weights = coefficients[1:1 + len(columns)]
    offsets = coefficients[1 + len(columns):]
    return SubsetFit(features=(*subset, WORKLOAD) if codes is not None else subset, intercept=float(coefficients[0]),
                     weights=tuple(float(w) for w in weights), workload_offsets=tuple(float(o) for o in offsets),
                     scale=max(scale, 1e-3), rows=int(n))

