"""Job cost model: LightGBM corrections to the catalog's list price, with a calibrated interval.

The promised properties hold by construction, whatever the training data:

* Breakdown sums to the total: component c has its own booster f_c, fitted to log(actual c) with the
  list price as offset (init_score = log list_c), so cost_c = list_c * exp(f_c(x)) (0 where list_c is 0)
  and predicted_cost = sum of the cost_c.
* More GPUs, hours, cores, memory, storage or egress never cost less: every list_c is non-decreasing in
  them and f_c has ``monotone_constraints`` +1 on them and on the expected power (which rises with them).
  The categorical gpu_type is used only by f_gpu, whose list price is 0 without GPUs, so adding the
  first GPU cannot move another component to a different category branch.
* Energy follows the expected power (the catalog's, or a forecast passed to ``predict``): it sets the
  energy list price (the offset) and is a feature of f_energy only, so it never changes other components.
* Spot never costs more than on demand: f_c may learn the preemption overhead of spot runs (reruns draw
  more energy), and a spot job's components keep it; only where its total would pass the same job's on
  demand are all its components scaled down to that total. The total is min(spot, on demand), a min of
  monotone functions, so it stays monotone (capping each component instead understated a spot job's energy,
  about 3 % on the generated records, in the 80 % of jobs where the cap bound).
* Interval (nominal ``coverage`` c): quantile boosters (alpha (1-c)/2, (1+c)/2) on log(actual total) with
  offset log(list total), widened (or narrowed) by a split-conformal margin from a calibration split, then
  clipped so that lower <= predicted_cost <= upper. Spot and on-demand jobs each take a margin of their own where
  the calibration split holds GROUP_MIN_SCORES of them (Mondrian conformal): a spot run's preemption overhead is
  heavy-tailed, and one margin for all covered about 75 % of spot jobs at 80 %.
* confidence = estimated P(|actual - predicted_cost| <= ``tolerance`` * predicted_cost): the hit rate, on
  the calibration split, of jobs whose relative interval width (upper - lower) / predicted falls in the
  same width quintile (Laplace-smoothed, made non-increasing in width). A job outside the range the model
  trained on (more GPUs, hours, ... than any training job, or fewer, beyond ``RANGE_TOLERANCE``; a spot job where
  none was, or an on-demand one where all were), or naming a ``gpu_type`` or ``workload_type`` no training job
  had (a typo is priced at the catalog's default utilization), is named so (``outside_training_range``) and
  given at most the lowest of those hit rates: the boosters only extrapolate flat there, and no held-out job
  says how well that works.

Records are split at random 70/15/15 into train / calibration / test; ``fit`` returns test metrics.
On disk: one LightGBM text model per booster plus ``cost_model.json`` (features, vocabularies,
calibration and the price catalog the offsets come from).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from core.atomic_files import atomic_write_json
from training.conformal import conformal_quantile, points_for
from training.cost.catalog import (
    RECORD_COLUMNS,
    SAVED,
    PriceCatalog,
    default_catalog,
    expected_power,
    price_components,
    price_frame,
)
from training.cost.jobs import Jobs, normalized_frame, numbers, query_jobs
from training.cost.schema import COMPONENTS, CostBreakdown, CostEstimate, CostQuery
from training.metrics import interval_metrics, point_metrics
from training.settings import CostPredictorConfig

NUMERIC = ("cpu_cores", "memory_gb", "gpu_count", "storage_gb", "network_gb", "duration_hours", "spot_instance",
           "expected_power_watts")
CATEGORICAL = ("gpu_type", "workload_type")
FEATURES = (*NUMERIC, *CATEGORICAL)
INCREASING = frozenset(NUMERIC) - {"spot_instance"}
QUANTILES = ("lower", "upper")
UNSEEN = "<unseen>"  # every vocabulary's last entry: a category no training job had (a name no job can have; models
# saved before called it "other", so a workload of that name was read as unseen there, as they were trained)
RANGE_TOLERANCE = 5e-3  # relative to each end: a value this close to it lies in the range (records stored rounded)
MODEL_FILE = "cost_model.json"
GROUP_MIN_SCORES = 50  # the fewest calibration scores a group (spot, on demand) takes a margin of its own from
FORMAT = 1
MIN_RECORDS = 100
MIN_COMPONENT_ROWS = 20
PREDICT_THREADS = 1  # a request's few rows: OpenMP threads only wait on each other (and on a busy node's cores)


class CostModelError(ValueError):
    """A cost model folder that cannot be loaded; the message says which file and why."""


def component_features(component: str) -> tuple[str, ...]:
    """Features of a component's booster: ``gpu_type`` only for gpu, ``expected_power_watts`` only for energy."""
    left_out = {"gpu": {"expected_power_watts"}, "energy": {"gpu_type"}}.get(
        component, {"gpu_type", "expected_power_watts"})
    return tuple(f for f in FEATURES if f not in left_out)


class CostModel:
    """Predicts a job's cost, its breakdown, an interval and a confidence (see module docstring)."""

    def __init__(self, catalog: PriceCatalog | None = None, *, coverage: float = 0.8, tolerance: float = 0.1) -> None:
        if not (0 < coverage < 1 and 0 < tolerance < 1):
            raise ValueError(f"coverage ({coverage}) and tolerance ({tolerance}) must lie between 0 and 1")
        self.catalog = catalog or default_catalog()
        self.coverage, self.tolerance = coverage, tolerance
        self.vocab: dict[str, list[str]] = {name: [UNSEEN] for name in CATEGORICAL}
        self.boosters: dict[str, lgb.Booster | None] = {}
        self.margin = 0.0
        self.spot_margins: dict[bool, float] = {}  # spot_instance -> its own margin (else `margin`)
        self.width_edges: list[float] = []
        self.hit_rates: list[float] = [0.5]
        self.training_ranges: dict[str, tuple[float, float]] = {}  # numeric feature -> (min, max) of training jobs
        # (spot_instance as 0/1; a model saved before it was kept does not flag it)
        self.metrics: dict[str, Any] = {}
        self.kwh_price: float | None = None  # what the records paid per kWh they measured (PUE in it); None: unknown
        self.synthetic = False  # learned from generated jobs (its registry metadata says; set by whoever loads it)
        self.model_version = "unregistered"

    # --- features and raw predictions -------------------------------------------------------------
    def _matrix(self, frame: Jobs, power: np.ndarray, names: Sequence[str]) -> np.ndarray:
        columns = []
        for name in names:
            if name in CATEGORICAL:
                *seen, _ = self.vocab[name]  # the last entry stands for every category not seen
                index = {value: i for i, value in enumerate(seen)}
                columns.append(np.array([index.get(str(v).lower(), len(seen)) for v in frame[name]], float))
            else:
                columns.append(power if name == "expected_power_watts" else numbers(frame, name))
        return np.column_stack(columns)

    def _components(self, frame: Jobs, power: np.ndarray) -> np.ndarray:
        listed = price_components(frame, self.catalog, power)
        out = np.zeros_like(listed)
        for j, name in enumerate(COMPONENTS):
            booster = self.boosters.get(name)
            matrix = self._matrix(frame, power, component_features(name)) if booster else None
            factor = np.exp(booster.predict(matrix, num_threads=PREDICT_THREADS)) if booster else 1.0
            out[:, j] = np.where(listed[:, j] > 0, listed[:, j] * factor, 0.0)
        return out

    def _log_bounds(self, frame: Jobs, power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_list = np.log(price_components(frame, self.catalog, power).sum(axis=1))
        matrix = self._matrix(frame, power, FEATURES)
        return tuple(log_list + self.boosters[key].predict(matrix, num_threads=PREDICT_THREADS)  # type: ignore[return-value]
                     for key in QUANTILES)

    def _arrays(self, frame: Jobs, power: np.ndarray) -> tuple[Any, ...]:
        """(components, point, lower, upper, confidence, outside, energy) of normalized job rows; outside: the names
        of the features of each that lie outside the training range (`outside_training_range`); energy: the energy
        cost before a spot job's cap (what its energy is: the cap is on money, a spot run draws no less)."""
        if not self.boosters:
            raise ValueError("the cost model is not fitted")
        components = self._components(frame, power)
        energy = components[:, COMPONENTS.index("energy")].copy()
        spot = np.asarray(frame["spot_instance"], dtype=bool)
        if spot.any():
            on_demand = (frame.assign(spot_instance=False) if isinstance(frame, pd.DataFrame)
                         else {**frame, "spot_instance": np.zeros_like(spot)})
            total, cap = components.sum(axis=1), self._components(on_demand, power).sum(axis=1)
            components = components * np.where(total > cap, cap / np.maximum(total, 1e-12), 1.0)[:, None]
        point = components.sum(axis=1)
        lo, hi = self._log_bounds(frame, power)
        margin = self._margins(frame)
        lower = np.minimum(np.exp(np.minimum(lo, hi) - margin), point)
        upper = np.maximum(np.exp(np.maximum(lo, hi) + margin), point)
        width = (upper - lower) / np.maximum(point, 1e-12)
        confidence = np.asarray(self.hit_rates)[np.searchsorted(self.width_edges, width, side="right")]
        names, flags = self.outside_training_range(frame, power)
        confidence = np.where(flags.any(axis=1), np.minimum(confidence, min(self.hit_rates)), confidence)
        outside = [tuple(name for name, out in zip(names, row, strict=True) if out) for row in flags]
        return components, point, lower, upper, confidence, outside, energy

    def outside_training_range(self, frame: Jobs, power: np.ndarray) -> tuple[list[str], np.ndarray]:
        """The features checked and [rows, features]: which of each job lie outside the training jobs' range (the
        numeric ones; none for a model saved before the ranges were kept), and which categories it names that no
        training job had (a workload or accelerator type; "none", not named or no accelerator, where no training job
        was such a one: the boosters read it as they read a typo)."""
        names, columns = [], []
        for name, (low, high) in self.training_ranges.items():
            values = power if name == "expected_power_watts" else numbers(frame, name)
            names.append(name)
            columns.append((values < low - RANGE_TOLERANCE * abs(low)) | (values > high + RANGE_TOLERANCE * abs(high)))
        for name in CATEGORICAL:
            seen = set(self.vocab[name][:-1])  # "none" (not named, no accelerator) too when training jobs had it
            names.append(name)
            columns.append(np.array([str(value).lower() not in seen for value in frame[name]], bool))
        return names, np.column_stack(columns)

    # --- training ---------------------------------------------------------------------------------
    def _train(self, matrix: np.ndarray, target: np.ndarray, offset: np.ndarray, names: Sequence[str],
               params: dict[str, Any], rounds: int, monotone: bool) -> lgb.Booster:
        if monotone:  # LightGBM refuses the key (even all zeros) with a quantile objective
            params = {**params, "monotone_constraints": [int(name in INCREASING) for name in names]}
        data = lgb.Dataset(matrix, target, init_score=offset, feature_name=list(names),
                           categorical_feature=[i for i, n in enumerate(names) if n in CATEGORICAL])
        return lgb.train(params, data, num_boost_round=rounds)

    def fit(self, records: pd.DataFrame, config: CostPredictorConfig, seed: int = 0) -> dict[str, Any]:
        """Train on past jobs (``RECORD_COLUMNS``); returns MAE, MAPE, coverage, ... on the held-out test split."""
        missing = [c for c in RECORD_COLUMNS if c not in records.columns]
        if missing:
            raise ValueError(f"job records lack column(s) {', '.join(missing)}")
        needed = _records_needed(self.coverage)
        if len(records) < needed:
            why = "" if needed == MIN_RECORDS else f" at an interval coverage of {self.coverage:g}"
            raise ValueError(f"need at least {needed} job records{why}, got {len(records)}")
        numeric = [c for c in RECORD_COLUMNS if c not in CATEGORICAL]
        bad = [c for c in numeric if not np.isfinite(pd.to_numeric(records[c], errors="coerce")).all()]
        if bad or not (records["cost"] > 0).all():
            raise ValueError(f"job records: column(s) {', '.join(bad or ['cost'])} need finite (cost: positive) values")
        frame = normalized_frame(records, self.catalog)
        n = len(frame)
        order = np.random.default_rng(seed).permutation(n)
        k = _split_size(n)
        test, calibration, train = order[:k], order[k:2 * k], order[2 * k:]
        self.vocab = {c: sorted(set(frame[c].iloc[train].str.lower())) + [UNSEEN] for c in CATEGORICAL}
        power = expected_power(frame, self.catalog)
        listed = price_frame(frame, self.catalog, power)
        params = {"learning_rate": config.learning_rate, "num_leaves": config.num_leaves, "min_data_in_leaf": 20,
                  "min_data_per_group": 20, "cat_smooth": 10.0, "seed": seed, "deterministic": True,
                  "force_col_wise": True, "num_threads": 1, "verbosity": -1}
        in_train = np.zeros(n, bool)
        in_train[train] = True
        self.training_ranges = {
            name: (float(values.min()), float(values.max()))
            for name in sorted(NUMERIC)
            if len(values := (power[train] if name == "expected_power_watts" else numbers(frame.iloc[train], name)))}
        self.boosters = {}
        for name in COMPONENTS:
            rows = in_train & (listed[name].to_numpy() > 0) & (frame[name].to_numpy(float) > 0)
            names = component_features(name)
            self.boosters[name] = None if rows.sum() < MIN_COMPONENT_ROWS else self._train(
                self._matrix(frame[rows], power[rows], names), np.log(frame[name].to_numpy(float)[rows]),
                np.log(listed[name].to_numpy()[rows]), names, {**params, "objective": "regression"},
                config.n_estimators, monotone=True)
        matrix = self._matrix(frame.iloc[train], power[train], FEATURES)
        log_cost, log_list = np.log(frame["cost"].to_numpy(float)), np.log(listed.sum(axis=1).to_numpy())
        for key, alpha in zip(QUANTILES, ((1 - self.coverage) / 2, (1 + self.coverage) / 2), strict=True):
            self.boosters[key] = self._train(matrix, log_cost[train], log_list[train], FEATURES,
                                             {**params, "objective": "quantile", "alpha": alpha},
                                             config.n_estimators, monotone=False)
        self.kwh_price = _measured_kwh_price(frame.iloc[train])
        self._calibrate(frame.iloc[calibration].reset_index(drop=True), power[calibration])
        self.metrics = self._evaluate(frame.iloc[test].reset_index(drop=True), power[test])
        self.metrics.update(n_train=len(train), n_calibration=len(calibration), n_test=len(test),
                            conformal_margin=self.margin)
        return dict(self.metrics)

    def _margins(self, frame: Jobs) -> np.ndarray:
        """Each job's conformal margin: its group's (spot or on demand) where calibrated, else the overall one."""
        spot = np.asarray(frame["spot_instance"], dtype=bool)
        return np.where(spot, self.spot_margins.get(True, self.margin), self.spot_margins.get(False, self.margin))

    def _calibrate(self, frame: pd.DataFrame, power: np.ndarray) -> None:
        actual = frame["cost"].to_numpy(float)
        lo, hi = self._log_bounds(frame, power)
        scores = np.maximum(np.minimum(lo, hi) - np.log(actual), np.log(actual) - np.maximum(lo, hi))
        self.margin, self.width_edges, self.hit_rates = conformal_quantile(scores, self.coverage), [], [0.5]
        spot = frame["spot_instance"].to_numpy(bool)
        self.spot_margins = {group: conformal_quantile(scores[spot == group], self.coverage)
                             for group in (False, True)
                             if (spot == group).sum() >= max(GROUP_MIN_SCORES, points_for(self.coverage))}
        _, point, lower, upper, _, _, _ = self._arrays(frame, power)
        width = (upper - lower) / point
        hits = np.abs(actual - point) <= self.tolerance * point
        self.width_edges = np.unique(np.quantile(width, [0.2, 0.4, 0.6, 0.8])).tolist()
        bins = np.searchsorted(self.width_edges, width, side="right")
        rates = [(hits[bins == b].sum() + 1) / ((bins == b).sum() + 2) for b in range(len(self.width_edges) + 1)]
        self.hit_rates = np.minimum.accumulate(rates).tolist()

    def _evaluate(self, frame: pd.DataFrame, power: np.ndarray) -> dict[str, Any]:
        actual = frame["cost"].to_numpy(float)
        _, point, lower, upper, confidence, _, _ = self._arrays(frame, power)
        mask = np.ones(len(actual), bool)
        metrics: dict[str, Any] = point_metrics(point, actual, mask)
        metrics.update(interval_metrics(lower, upper, point, confidence, actual, mask,
                                        nominal=self.coverage, tolerance=self.tolerance))
        list_total = price_frame(frame, self.catalog, power).sum(axis=1).to_numpy()
        metrics["list_price_mape"] = point_metrics(list_total, actual, mask)["mape"]
        spot, inside = frame["spot_instance"].to_numpy(bool), (lower <= actual) & (actual <= upper)
        for name, group in (("coverage_spot", spot), ("coverage_on_demand", ~spot)):
            if group.any():  # each group has a margin of its own: each coverage is reported
                metrics[name] = float(inside[group].mean())
        return metrics

    def evaluate(self, records: pd.DataFrame) -> dict[str, Any]:
        """MAE, MAPE, coverage, ... on past jobs (``RECORD_COLUMNS``), e.g. ones held out of its training."""
        frame = normalized_frame(records, self.catalog)
        return self._evaluate(frame, expected_power(frame, self.catalog))

    # --- prediction -------------------------------------------------------------------------------
    def predict(self, query: CostQuery, expected_power_watts: float | None = None) -> CostEstimate:
        """Estimate one job; ``expected_power_watts`` replaces the catalog's expected power (e.g. a forecast)."""
        power = None if expected_power_watts is None else [expected_power_watts]
        return self.predict_many([query], power)[0]

    def predict_many(self, queries: Sequence[CostQuery],
                     expected_power_watts: Sequence[float] | None = None) -> list[CostEstimate]:
        """Estimate many jobs at once (one power override per query, or none)."""
        if not queries:
            return []
        frame = query_jobs(queries, self.catalog)
        if expected_power_watts is None:
            power = expected_power(frame, self.catalog)
        else:
            power = np.asarray(expected_power_watts, float)
            if power.shape != (len(queries),) or not (np.isfinite(power) & (power >= 0)).all():
                raise ValueError("expected_power_watts needs one finite, non-negative value per query")
        components, _, lower, upper, confidence, outside, energy = self._arrays(frame, power)
        listed_per_kwh = self.catalog.energy.tariff_kwh * self.catalog.energy.pue
        learned = self.boosters.get("energy") is not None  # else the energy cost is the catalog's list price
        per_kwh = (self.kwh_price or listed_per_kwh) if listed_per_kwh and learned else listed_per_kwh
        estimates = []
        for i in range(len(queries)):
            breakdown = CostBreakdown(**{name: float(components[i, j]) for j, name in enumerate(COMPONENTS)})
            total = breakdown.total()
            estimates.append(CostEstimate(
                predicted_cost=total, lower=min(float(lower[i]), total), upper=max(float(upper[i]), total),
                interval_coverage=self.coverage, confidence=float(confidence[i]), cost_breakdown=breakdown,
                expected_power_watts=float(power[i]), energy_kwh=_energy_kwh(energy[i], per_kwh, power[i],
                                                                             queries[i].duration_hours),
                currency=self.catalog.currency, model_version=self.model_version,
                trained_on_synthetic_data=self.synthetic, outside_training_range=outside[i]))
        return estimates

    # --- persistence ------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write the boosters (LightGBM text) and ``cost_model.json`` into ``folder``."""
        if not self.boosters:
            raise ValueError("the cost model is not fitted")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, str | None] = {}
        for key, booster in self.boosters.items():
            files[key] = f"{key}.txt" if booster is not None else None
            if booster is not None:
                booster.save_model(str(folder / f"{key}.txt"))
        atomic_write_json(folder / MODEL_FILE, {
            "format": FORMAT, "features": FEATURES, "categorical": CATEGORICAL, "vocab": self.vocab,
            "component_features": {c: component_features(c) for c in COMPONENTS}, "increasing": sorted(INCREASING),
            "boosters": files, "coverage": self.coverage, "tolerance": self.tolerance, "conformal_margin": self.margin,
            "spot_margins": {str(group).lower(): margin for group, margin in self.spot_margins.items()},
            "width_edges": self.width_edges, "hit_rates": self.hit_rates, "training_ranges": self.training_ranges,
            "metrics": self.metrics, "kwh_price": self.kwh_price,
            "model_version": self.model_version, "catalog": self.catalog.model_dump(mode="json")})

    @classmethod
    def load(cls, folder: str | Path, model_version: str | None = None) -> CostModel:
        """Load a saved model; its version defaults to ``<id>/<n>`` for a registry folder ``.../<id>/<n>``."""
        folder = Path(folder)
        path = folder / MODEL_FILE
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            if spec.get("format") != FORMAT or tuple(spec["features"]) != FEATURES:
                raise ValueError(f"format {spec.get('format')} with features {spec.get('features')} is not supported")
            model = cls(PriceCatalog.model_validate(spec["catalog"], context={SAVED: True}), coverage=spec["coverage"],
                        tolerance=spec["tolerance"])
            model.vocab = {name: list(spec["vocab"][name]) for name in CATEGORICAL}
            if not all(model.vocab.values()):
                raise ValueError("a vocabulary is empty (it ends with the entry for unseen categories)")
            # read here, not by LightGBM: its "could not open" says nothing of why, and a file that cannot be read
            # just now (an OSError, kept as the cause) is no damaged model
            model.boosters = {key: lgb.Booster(model_str=(folder / file).read_text(encoding="utf-8")) if file else None
                              for key, file in spec["boosters"].items()}
            if any(model.boosters.get(key) is None for key in QUANTILES):
                raise ValueError("interval boosters missing")
            model.margin, model.width_edges = float(spec["conformal_margin"]), list(spec["width_edges"])
            model.spot_margins = {group == "true": float(margin)  # none in a model saved before: the overall one
                                  for group, margin in spec.get("spot_margins", {}).items()}
            model.hit_rates, model.metrics = list(spec["hit_rates"]), dict(spec["metrics"])
            kwh_price = spec.get("kwh_price")  # a model saved before it was kept: the catalog's price
            model.kwh_price = None if kwh_price is None else float(kwh_price)
            model.training_ranges = {name: (float(low), float(high))
                                     for name, (low, high) in spec.get("training_ranges", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, lgb.basic.LightGBMError) as exc:
            raise CostModelError(f"{path}: cannot load cost model: {exc}") from exc
        registry_ref = f"{folder.parent.name}/{folder.name}" if folder.name.isdigit() else None
        model.model_version = model_version or registry_ref or spec.get("model_version", "unregistered")
        return model


def _energy_kwh(energy_cost: float, per_kwh: float, power_watts: float, hours: float) -> float:
    """The IT energy behind the energy cost (before a spot job's cap) at the price per kWh the records paid; with
    free power (a tariff of 0, on premises) the expected power over the job's hours, where the cost says nothing."""
    return energy_cost / per_kwh if per_kwh else float(power_watts) * hours / 1000.0


def _measured_kwh_price(records: pd.DataFrame) -> float | None:
    """The median price the records paid per kWh they measured (energy cost / (avg_power_watts x hours)), PUE
    included; None without a record that paid for measured energy. The learned energy cost follows what the bills
    say, so a catalog tariff other than the one billed would otherwise read as more or fewer kWh."""
    kwh = records["avg_power_watts"].to_numpy(float) * records["duration_hours"].to_numpy(float) / 1000.0
    paid = records["energy"].to_numpy(float)
    usable = (kwh > 0) & (paid > 0)
    return float(np.median(paid[usable] / kwh[usable])) if usable.any() else None


def _split_size(records: int) -> int:
    """The test split's size, and the calibration split's (15 % each)."""
    return max(1, round(0.15 * records))


def _records_needed(coverage: float) -> int:
    """The fewest records to train on: MIN_RECORDS, and enough for the calibration split to hold the scores its
    conformal margin needs at `coverage` (training.conformal.points_for)."""
    needed = MIN_RECORDS
    while _split_size(needed) < points_for(coverage):
        needed += 1
    return needed
