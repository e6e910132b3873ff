"""The power estimator of the features-only mode: one ridge regression per feature subset (no Ray)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.telemetry_csv import NUMERIC_FEATURES
from training.power.estimator import PowerEstimator
from training.power.features import FeaturePipeline, Segment

FEATURES = ("cpu_utilization", "gpu_utilization", "temperature", "workload_type")


def segment(n: int = 400, seed: int = 0, gpu_missing: bool = False) -> Segment:
    """Power = 100 + 2 W per % CPU + 5 W per % GPU (+ 50 W for training), temperature follows the power."""
    rng = np.random.default_rng(seed)
    cpu, gpu = rng.uniform(0, 100, n), rng.uniform(0, 100, n)
    kinds = np.where(rng.uniform(size=n) < 0.5, "training", "inference").astype(object)
    power = 100 + 2 * cpu + 5 * gpu + 50 * (kinds == "training") + rng.normal(0, 2, n)
    numeric = {name: np.full(n, np.nan) for name in NUMERIC_FEATURES}
    numeric.update(cpu_utilization=cpu, gpu_utilization=np.full(n, np.nan) if gpu_missing else gpu,
                   temperature=30 + power / 20)
    return Segment("n1", pd.Timestamp("2026-01-05", tz="UTC"), 60, power, numeric, kinds, np.zeros(n, bool))


@pytest.fixture(scope="module")
def estimator() -> PowerEstimator:
    parts = [segment()]
    return PowerEstimator.fit(parts, FeaturePipeline.fit(parts, FEATURES, 60))


def test_every_subset_of_the_seen_features_gets_a_regression_largest_first(estimator):
    assert estimator.inputs == ("cpu_utilization", "gpu_utilization", "temperature", "workload_type")
    assert len(estimator.fits) == 2 ** 4  # 3 numeric features, with and without the workload
    assert [len(fit.features) for fit in estimator.fits] == sorted((len(f.features) for f in estimator.fits),
                                                                   reverse=True)
    assert estimator.fits[-1].features == ()  # the training mean: used only where nothing else is known


def test_a_step_uses_the_largest_subset_of_the_features_it_has(estimator):
    both = estimator.fits[estimator.choose({"cpu_utilization", "gpu_utilization", "workload_type"})]
    assert set(both.features) == {"cpu_utilization", "gpu_utilization", "workload_type"}
    assert both.scale < 3.0  # the true relation, up to the noise
    cpu_only = estimator.fits[estimator.choose({"cpu_utilization", "npu_utilization"})]
    assert cpu_only.features == ("cpu_utilization",) and cpu_only.scale > 40.0  # the GPU's share is unexplained


def test_estimates_follow_the_relation_the_training_rows_show(estimator):
    test = segment(seed=1)
    power, chosen = estimator.estimate(test.numeric, test.workload)
    assert np.abs(power - test.power).mean() < 3.0
    assert {estimator.fits[i].features for i in chosen} == {FEATURES}
    blank = {"cpu_utilization": test.numeric["cpu_utilization"]}
    power, chosen = estimator.estimate(blank, np.full(len(test), None, dtype=object))
    assert {estimator.fits[i].features for i in chosen} == {("cpu_utilization",)}
    # its scale says how far off such an estimate typically is
    assert np.abs(power - test.power).mean() == pytest.approx(estimator.fits[chosen[0]].scale, rel=0.15)


def test_features_the_training_rows_never_had_are_ignored():
    parts = [segment(gpu_missing=True)]
    estimator = PowerEstimator.fit(parts, FeaturePipeline.fit(parts, FEATURES, 60))
    assert "gpu_utilization" not in estimator.inputs
    assert "gpu_utilization" not in estimator.fits[estimator.choose({"cpu_utilization", "gpu_utilization"})].features


def test_it_round_trips_as_json(estimator):
    again = PowerEstimator.model_validate_json(estimator.model_dump_json())
    test = segment(seed=2)
    np.testing.assert_allclose(again.estimate(test.numeric, test.workload)[0],
                               estimator.estimate(test.numeric, test.workload)[0])
