"""Direct multi-horizon LightGBM: the strongest baseline, and the LSTM's partner in the served forecast.

It reads the same input window as the LSTM (lags, recent level and spread, load features, workload,
calendar), the lead time is a feature (one direct model for every lead), and where the pipeline has
calendar inputs, the calendar position of the *target* time too (the origin's, rotated by the lead), so
a recurring spike can be anticipated. It predicts the change from the last value with an L1 objective
and early-stops on the calibration tail; `refit` then trains it again on the whole training part (the
calibration tail is the newest data) for as many rounds, scaled by the extra data. With a half-life, every
window weighs 0.5 ** (age / half-life) (training.power.recency), in the fit and the refit alike. Saved as
LightGBM's text model plus a small JSON.

Memory stays bounded on a cluster's worth of telemetry: a fit trains on at most `MAX_FIT_ROWS` (window, lead)
rows (a seeded sample of the windows beyond that; early stopping's windows too), and predictions build their rows
`PREDICT_ROWS` at a time.
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
from pydantic import BaseModel, ConfigDict

from training.power import calendar as cal
from training.power.features import FeaturePipeline
from training.power.recency import recency_weights
from training.power.windows import Windows

MODEL_FILE = "lightgbm.txt"
SPEC_FILE = "lightgbm.json"
_LAGS = 12
_SPANS = (6, 15, 30, 60)
MAX_FIT_ROWS = 2_000_000  # about 0.35 GiB of design matrix; every backtest suite case fits under it
PREDICT_ROWS = 500_000


def fit_sample(windows: int, horizon: int, seed: int) -> np.ndarray | None:
    """The windows a fit trains on when all of them would exceed `MAX_FIT_ROWS` rows: a seeded uniform sample,
    in order (None: all of them)."""
    keep = _trained_windows(windows, horizon)
    if keep == windows:
        return None
    return np.sort(np.random.default_rng(seed).choice(windows, size=keep, replace=False))


class GbmSpec(BaseModel):
    """What the rows need besides the window: the power scale, the step and where the calendar columns are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    power_std: float = 1.0
    step_s: int = 60
    calendar_columns: dict[str, tuple[int, int]] = {}  # calendar feature -> (sin, cos) input column
    half_life_steps: float | None = None  # recency weighting of the training windows (None: all weigh the same)

    @classmethod
    def of(cls, pipeline: FeaturePipeline) -> GbmSpec:
        inputs = zip(pipeline.calendar, pipeline.target_calendar, strict=True)
        columns = {name: (sin_at, cos_at) for name, (sin_at, cos_at, _) in inputs}
        return cls(power_std=pipeline.power_std, step_s=pipeline.step_s, calendar_columns=columns)


def lgbm_features(inputs: np.ndarray) -> np.ndarray:
    """One row per window [N, T, F]: recent lags relative to the origin, level, spread, the last step's inputs."""
    power = inputs[:, :, 0]  # scaled power [N, T]
    lags = min(_LAGS, power.shape[1])
    recent = power[:, -lags:] - power[:, -1:]
    spans = [s for s in _SPANS if s <= power.shape[1]]
    rolling = [power[:, -s:].mean(axis=1) - power[:, -1] for s in spans]
    spread = [power[:, -s:].std(axis=1) for s in spans]
    trend = [power[:, -1] - power[:, -s] for s in spans]
    last_step = inputs[:, -1, :]
    return np.column_stack([recent, *rolling, *spread, *trend, last_step]).astype(np.float32)


class DirectLightGBM:
    """One LightGBM model for all leads (lead is a feature), predicting the change from the last value."""

    def __init__(self, n_estimators: int = 600, learning_rate: float = 0.03, num_leaves: int = 31, seed: int = 0):
        self.params = {
            "objective": "regression_l1",
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_data_in_leaf": 40,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "seed": seed,
            "deterministic": True,
            "num_threads": 2,
            "verbose": -1,
        }
        self.n_estimators = n_estimators
        self.booster: lgb.Booster | None = None
        self.spec = GbmSpec()
        self.fit_windows: int | None = None  # windows it was trained on (None: loaded, or not fitted yet)

    def rows(self, inputs: np.ndarray, horizon: int) -> np.ndarray:
        """Design matrix: one row per (window, lead), window-major."""
        base = lgbm_features(inputs)
        n = len(inputs)
        leads = np.tile(np.arange(1, horizon + 1), n)
        columns = [np.repeat(base, horizon, axis=0), leads[:, None].astype(np.float32)]
        for name, (sin_at, cos_at) in self.spec.calendar_columns.items():
            sin, cos = cal.shift(np.repeat(inputs[:, -1, sin_at], horizon), np.repeat(inputs[:, -1, cos_at], horizon),
                                 leads * self.spec.step_s, name)
            columns.append(np.column_stack([sin, cos]).astype(np.float32))
        return np.column_stack(columns)

    def _supervised(self, windows: Windows, ages: np.ndarray | None = None,
                    reference: lgb.Dataset | None = None) -> lgb.Dataset:
        """The scored (window, lead) rows; weighted by their window's age when `ages` is given and the spec has a
        half-life."""
        horizon = windows.targets.shape[1]
        chosen = fit_sample(len(windows), horizon, self.params["seed"])
        inputs, last, targets, mask = windows.inputs, windows.last_power, windows.targets, windows.mask
        if chosen is not None:
            inputs, last, targets, mask = inputs[chosen], last[chosen], targets[chosen], mask[chosen]
            ages = None if ages is None else ages[chosen]
        change = ((targets - last[:, None]) / self.spec.power_std).reshape(-1)
        keep = mask.reshape(-1)
        weight = None
        if ages is not None and self.spec.half_life_steps is not None:
            weight = np.repeat(recency_weights(ages, self.spec.half_life_steps), horizon)[keep]
        return lgb.Dataset(self.rows(inputs, horizon)[keep], change[keep], weight=weight, reference=reference)

    def fit(self, train: Windows, valid: Windows, power_std: float, pipeline: FeaturePipeline | None = None, *,
            ages: np.ndarray | None = None, half_life: float | None = None) -> DirectLightGBM:
        """Fit on `train`, early-stop on `valid` (unweighted); `pipeline` (the windows' own) adds target-time calendar
        rows; with a `half_life` (steps) each training window weighs 0.5 ** (age / half_life), `ages` [N] in steps."""
        if half_life is not None and (ages is None or len(ages) != len(train)):
            raise ValueError("a recency-weighted fit needs the age of every training window")
        self.spec = GbmSpec.of(pipeline) if pipeline is not None else GbmSpec(power_std=power_std)
        self.spec = self.spec.model_copy(update={"power_std": power_std, "half_life_steps": half_life})
        train_set = self._supervised(train, ages)
        valid_set = self._supervised(valid, reference=train_set)
        self.booster = lgb.train(self.params, train_set, num_boost_round=self.n_estimators, valid_sets=[valid_set],
                                 callbacks=[lgb.early_stopping(50, verbose=False)])
        self.fit_windows = _trained_windows(len(train), train.targets.shape[1])
        return self

    def refit(self, windows: Windows, ages: np.ndarray | None = None) -> DirectLightGBM:
        """A copy trained on `windows` (the fitting windows and the early-stopping ones together) for the rounds
        early stopping chose, scaled by how many more windows it now has than the fit had (`fit_windows`), with
        the fit's recency weighting (`ages` [N] in steps: needed when the spec has a half-life)."""
        if self.booster is None or self.fit_windows is None:
            raise RuntimeError("fit the model first")
        if self.spec.half_life_steps is not None and (ages is None or len(ages) != len(windows)):
            raise ValueError("a recency-weighted refit needs the age of every window")
        chosen = self.booster.best_iteration or self.booster.current_iteration()
        trained = _trained_windows(len(windows), windows.targets.shape[1])
        rounds = max(1, round(chosen * trained / max(self.fit_windows, 1)))
        model = DirectLightGBM(n_estimators=rounds)
        model.params, model.spec, model.fit_windows = dict(self.params), self.spec, trained
        model.booster = lgb.train(model.params, model._supervised(windows, ages), num_boost_round=rounds)
        return model

    def predict_arrays(self, inputs: np.ndarray, last_power: np.ndarray, horizon: int) -> np.ndarray:
        """[N, H] watts for windows [N, T, F] whose last observed power is `last_power` [N]."""
        if self.booster is None:
            raise RuntimeError("fit the model first")
        per_call = max(1, PREDICT_ROWS // horizon)
        iteration = self.booster.best_iteration or None
        change = [self.booster.predict(self.rows(inputs[begin:begin + per_call], horizon), num_iteration=iteration)
                  for begin in range(0, len(inputs), per_call)]
        change = np.concatenate(change) if change else np.zeros(0)
        return last_power[:, None] + change.reshape(len(inputs), horizon) * self.spec.power_std

    def predict(self, windows: Windows) -> np.ndarray:
        """[N, H] watts."""
        return self.predict_arrays(windows.inputs, windows.last_power, windows.targets.shape[1])

    def save(self, folder: Path) -> None:
        if self.booster is None:
            raise RuntimeError("fit the model first")
        iteration = self.booster.best_iteration or None
        (folder / MODEL_FILE).write_text(self.booster.model_to_string(num_iteration=iteration))
        (folder / SPEC_FILE).write_text(self.spec.model_dump_json(indent=2))

    @classmethod
    def load(cls, folder: Path) -> DirectLightGBM:
        model = cls()
        model.spec = GbmSpec.model_validate_json((folder / SPEC_FILE).read_text())
        model.booster = lgb.Booster(model_str=(folder / MODEL_FILE).read_text())
        return model


def _trained_windows(windows: int, horizon: int) -> int:
    """How many windows a fit on `windows` trains on (`fit_sample`)."""
    return min(windows, MAX_FIT_ROWS // max(horizon, 1))
