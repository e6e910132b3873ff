"""The LightGBM job cost model: its guarantees, interval, persistence, query validation and training CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from core.registry import ModelRegistry
from training.cost.catalog import RECORD_COLUMNS, generate_job_records, list_price, load_catalog
from training.cost.model import CostModel
from training.cost.schema import COMPONENTS, CostQuery, Resources
from training.settings import CostPredictorConfig
from training.train_gbm import main as train_gbm

pytestmark = pytest.mark.slow

SMALL = CostPredictorConfig(n_estimators=80, learning_rate=0.1, num_leaves=15)
HOURS = (0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0, 48.0)
MIXES = [  # (cpu_cores, memory_gb, gpu_type, storage_gb, network_gb, workload_type, spot)
    (8, 64, "A100-80GB", 0, 0, "training", False),
    (32, 256, "H100", 500, 20, "inference", False),
    (4, 16, "L4", 50, 1, "batch", True),
    (16, 128, None, 100, 0, None, True),
    (12, 96, "Ascend-910B", 200, 5, "idle", False),
]


def query(cores: float, memory: float, gpus: int = 0, gpu_type: str | None = None, hours: float = 4.0,
          spot: bool = False, workload: str | None = "training", storage: float = 0, network: float = 0) -> CostQuery:
    return CostQuery(resources=Resources(cpu_cores=cores, memory_gb=memory, gpu_count=gpus, gpu_type=gpu_type,
                                         storage_gb=storage, network_gb=network),
                     duration_hours=hours, spot_instance=spot, workload_type=workload)


TYPICAL = [query(8, 64, 1, "A100-80GB", 6), query(64, 512, 8, "H100", 24, storage=2000, network=50),
           query(4, 16, 0, None, 1, workload="batch"), query(16, 64, 2, "L4", 3, workload="inference"),
           query(32, 256, 4, "A100-40GB", 12, storage=500), query(2, 8, 0, None, 0.5, workload=None)]


@pytest.fixture(scope="module")
def fitted() -> tuple[CostModel, dict]:
    model = CostModel(load_catalog())
    metrics = model.fit(generate_job_records(3000, seed=0), SMALL, seed=0)
    return model, metrics


def test_breakdown_sums_to_total_and_interval_contains_point(fitted):
    model, _ = fitted
    for estimate in model.predict_many(TYPICAL + [q.model_copy(update={"spot_instance": True}) for q in TYPICAL]):
        parts = estimate.cost_breakdown.model_dump()
        assert set(parts) == set(COMPONENTS)
        assert abs(sum(parts.values()) - estimate.predicted_cost) <= 1e-6
        assert estimate.lower <= estimate.predicted_cost <= estimate.upper
        assert 0.0 <= estimate.confidence <= 1.0 and estimate.interval_coverage == 0.8
        assert estimate.currency == "USD" and estimate.energy_kwh > 0 and estimate.expected_power_watts > 0


@pytest.mark.parametrize("mix", MIXES, ids=lambda m: f"{m[2]}-{m[5]}-{'spot' if m[6] else 'od'}")
def test_more_gpus_or_hours_never_cost_less(fitted, mix):
    model, _ = fitted
    cores, memory, gpu_type, storage, network, workload, spot = mix
    grid = [query(cores, memory, g, gpu_type, h, spot, workload, storage, network)
            for g, h in itertools.product(range(9), HOURS)]
    cost = np.array([e.predicted_cost for e in model.predict_many(grid)]).reshape(9, len(HOURS))
    assert (np.diff(cost, axis=0) >= -1e-9).all(), "more GPUs cost less"
    assert (np.diff(cost, axis=1) >= -1e-9).all(), "more hours cost less"
    assert cost[8, -1] > cost[0, 0]


def test_spot_is_never_dearer_and_typically_cheaper(fitted):
    model, _ = fitted
    grid = [query(c, m, g, t, h, False, w, s, n) for (c, m, t, s, n, w, _), g, h
            in itertools.product(MIXES, range(0, 9, 2), HOURS)]
    on_demand = model.predict_many(grid)
    spot = model.predict_many([q.model_copy(update={"spot_instance": True}) for q in grid])
    for od, sp in zip(on_demand, spot, strict=True):
        assert sp.predicted_cost <= od.predicted_cost + 1e-9
        for name in COMPONENTS:
            assert getattr(sp.cost_breakdown, name) <= getattr(od.cost_breakdown, name) + 1e-9
    cheaper = np.mean([sp.predicted_cost < 0.8 * od.predicted_cost for od, sp in zip(on_demand, spot, strict=True)])
    assert cheaper > 0.9


def test_typical_jobs_are_priced_near_the_list_price(fitted):
    model, _ = fitted
    for q, estimate in zip(TYPICAL, model.predict_many(TYPICAL), strict=True):
        listed = sum(list_price(q, model.catalog).values())
        assert abs(estimate.predicted_cost - listed) <= 0.25 * listed, (q, estimate.predicted_cost, listed)


def test_held_out_metrics(fitted):
    _, metrics = fitted
    assert 0.65 <= metrics["coverage"] <= 0.95
    assert metrics["nominal_coverage"] == 0.8
    assert metrics["mape"] < 15.0 and metrics["mae"] > 0
    assert metrics["n_test"] == metrics["n_calibration"] == 450
    assert abs(metrics["mean_confidence"] - metrics["hit_rate"]) < 0.15


def test_power_override_drives_the_energy_cost(fitted):
    model, _ = fitted
    q = TYPICAL[0]
    default, low, high = model.predict(q), model.predict(q, expected_power_watts=300.0), model.predict(q, 3000.0)
    assert high.expected_power_watts == 3000.0
    assert low.cost_breakdown.energy < default.cost_breakdown.energy < high.cost_breakdown.energy
    assert low.cost_breakdown.gpu == default.cost_breakdown.gpu == high.cost_breakdown.gpu
    with pytest.raises(ValueError, match="expected_power_watts"):
        model.predict_many([q], [float("nan")])


def test_save_load_round_trip(fitted, tmp_path):
    model, _ = fitted
    folder = tmp_path / "cost_gbm" / "7"
    model.save(folder)
    loaded = CostModel.load(folder)
    assert loaded.model_version == "cost_gbm/7"
    queries = TYPICAL + [q.model_copy(update={"spot_instance": True}) for q in TYPICAL]
    for a, b in zip(model.predict_many(queries), loaded.predict_many(queries), strict=True):
        assert a.model_dump(exclude={"model_version"}) == b.model_dump(exclude={"model_version"})


def test_unknown_gpu_type_is_refused_naming_the_field():
    with pytest.raises(ValidationError) as caught:
        CostQuery.model_validate({"resources": {"cpu_cores": 8, "memory_gb": 32, "gpu_count": 1,
                                                "gpu_type": "RTX-9999"}, "duration_hours": 2})
    assert caught.value.errors()[0]["loc"] == ("resources", "gpu_type")
    assert "gpu_type" in str(caught.value) and "RTX-9999" in str(caught.value)
    ok = CostQuery.model_validate({"resources": {"cpu_cores": 8, "memory_gb": 32, "gpu_count": 2, "gpu_type": "h100"},
                                   "duration_hours": 2})
    assert ok.resources.gpu_type == "H100"
    default = query(8, 32, 1)
    assert default.resources.gpu_type == load_catalog().gpu.default_type
    data = load_catalog().model_dump()
    data["gpu"] = {"default_type": "T4", "types": {"T4": data["gpu"]["types"]["T4"]}}
    only_t4 = {"catalog": type(load_catalog()).model_validate(data)}
    with pytest.raises(ValidationError, match="gpu_type"):
        CostQuery.model_validate(ok.model_dump(), context=only_t4)
    assert CostQuery.model_validate(default.model_dump(exclude={"resources": {"gpu_type"}}),
                                    context=only_t4).resources.gpu_type == "T4"


@pytest.fixture
def small_config(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("MODEL_PATH", raising=False)
    path = tmp_path / "config.yaml"
    path.write_text("models:\n  cost_predictor:\n    n_estimators: 20\n    num_leaves: 7\n", encoding="utf-8")
    return path


def test_train_gbm_cli_publishes_version_1(tmp_path, small_config, capsys):
    root = tmp_path / "registry"
    rc = train_gbm(["--records", "400", "--seed", "3", "--model-path", str(root), "--config", str(small_config)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "no job records given: training on 400 records generated from the price catalog configs/prices.yaml" in err
    folder, metadata = ModelRegistry(root).get("cost_gbm")
    assert metadata.version == 1 and metadata.model_type == "lightgbm"
    assert ModelRegistry(root).active_version("cost_gbm") == 1
    assert {"mae", "mape", "coverage"} <= set(metadata.metrics)
    assert CostModel.load(folder).predict(TYPICAL[0]).model_version == "cost_gbm/1"

    csv = tmp_path / "jobs.csv"
    generate_job_records(300, seed=5).to_csv(csv, index=False)
    rc = train_gbm(["--data", str(csv), "--model-path", str(root), "--config", str(small_config)])
    assert rc == 0, capsys.readouterr().err
    assert ModelRegistry(root).active_version("cost_gbm") == 2


def test_train_gbm_refuses_a_csv_missing_a_column(tmp_path, small_config, capsys):
    csv = tmp_path / "jobs.csv"
    generate_job_records(200, seed=1).drop(columns=["duration_hours"]).to_csv(csv, index=False)
    rc = train_gbm(["--data", str(csv), "--model-path", str(tmp_path / "r"), "--config", str(small_config)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "duration_hours" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_train_gbm_names_the_line_of_a_bad_value(tmp_path, small_config, capsys):
    frame = generate_job_records(200, seed=1).astype({"gpu_count": object})
    frame.loc[1, "gpu_count"] = "two"
    assert list(frame.columns) == list(RECORD_COLUMNS)
    csv = tmp_path / "jobs.csv"
    frame.to_csv(csv, index=False)
    rc = train_gbm(["--data", str(csv), "--model-path", str(tmp_path / "r"), "--config", str(small_config)])
    err = capsys.readouterr().err
    assert rc == 2 and "line 3" in err and "gpu_count" in err and "'two'" in err
