"""The default price catalog follows its file: an added GPU type is known without a restart; a saved model's catalog
from before a check existed still loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from tests.paths import REPO_ROOT
from tests.unit.deploy.project import pyproject
from training.cost import catalog
from training.cost.catalog import (
    DEFAULT_CATALOG_PATH,
    PACKAGED_CATALOG_PATH,
    SAVED,
    CatalogError,
    PriceCatalog,
    _FileCache,
    default_catalog_path,
    expected_power,
    generate_job_records,
    load_catalog,
)
from training.cost.jobs import job_columns
from training.cost.model import MODEL_FILE, CostModel
from training.cost.schema import CostQuery, Resources
from training.settings import CostPredictorConfig


def test_an_edited_catalog_is_read_again_and_a_broken_edit_keeps_the_last_good_one(tmp_path, caplog):
    """Regression: the catalog was read once per process, so a type added to prices.yaml (and a cost model
    retrained on it) was still refused as unknown by the running service's request checks."""
    path = tmp_path / "prices.yaml"
    original = DEFAULT_CATALOG_PATH.read_text(encoding="utf-8")
    path.write_text(original, encoding="utf-8")
    cache = _FileCache(path)
    first = cache.get()
    assert cache.get() is first  # unchanged: not read again
    assert first.gpu_type_name("MI300X") is None
    added = original.replace("\n  types:", "\n  types:\n    MI300X: {hour: 6.0, tdp_watts: 750}", 1)
    assert added != original
    path.write_text(added, encoding="utf-8")
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    assert cache.get().gpu_type_name("mi300x") == "MI300X"
    path.write_text("gpu: [", encoding="utf-8")
    assert cache.get().gpu_type_name("MI300X") == "MI300X" and "last good one" in caplog.text
    with pytest.raises(CatalogError):
        _FileCache(path).get()  # nothing good read yet: the error stands



def test_the_default_catalog_resolves_from_the_package_without_a_checkout(tmp_path):
    """Regression: the default was configs/prices.yaml beside the package, which `pip install .` does not
    install; the package ships a copy, used where configs/ is absent."""
    assert default_catalog_path(REPO_ROOT) == REPO_ROOT / "configs" / "prices.yaml"  # a checkout: the file to edit
    assert default_catalog_path(tmp_path) == PACKAGED_CATALOG_PATH
    assert PACKAGED_CATALOG_PATH.parent == Path(catalog.__file__).resolve().parent
    assert load_catalog(default_catalog_path(tmp_path)) == load_catalog(REPO_ROOT / "configs" / "prices.yaml")
    assert "prices.yaml" in pyproject()["tool"]["setuptools"]["package-data"]["training.cost"]


def test_the_packaged_catalog_is_a_copy_of_configs_prices_yaml():
    assert PACKAGED_CATALOG_PATH.read_bytes() == (REPO_ROOT / "configs" / "prices.yaml").read_bytes()


def test_gpu_types_that_differ_only_in_case_are_refused(tmp_path):
    """Names match case-insensitively, so "h100" beside "H100" validated and could never be priced."""
    original = DEFAULT_CATALOG_PATH.read_text(encoding="utf-8")
    path = tmp_path / "prices.yaml"
    path.write_text(original.replace("\n  types:", "\n  types:\n    h100: {hour: 1.0, tdp_watts: 700}", 1),
                    encoding="utf-8")
    with pytest.raises(CatalogError, match="'H100' and 'h100' differ only in case|'h100' and 'H100' differ only"):
        load_catalog(path)


def test_workload_types_are_kept_in_lower_case_as_they_are_looked_up(tmp_path):
    """A utilization key written "Training" never matched a job's workload (looked up in lower case)."""
    original = DEFAULT_CATALOG_PATH.read_text(encoding="utf-8")
    path = tmp_path / "prices.yaml"
    path.write_text(original.replace("    training:", "    Training:", 1), encoding="utf-8")
    assert load_catalog(path).utilization("training") == load_catalog().utilization("training")
    path.write_text(original.replace("    inference:", "    Training:", 1), encoding="utf-8")
    with pytest.raises(CatalogError, match="differ only in case"):
        load_catalog(path)


def test_a_saved_models_catalog_with_case_twins_still_loads(tmp_path):
    """A cost model saved before types (and workload keys) differing only in case were refused stopped loading: its
    catalog no longer validated. Read back from a saved model, the spellings no lookup reached are dropped."""
    data = load_catalog().model_dump(mode="json")
    data["gpu"]["types"] = {**data["gpu"]["types"], "h100": {"hour": 1.0, "tdp_watts": 1.0}}  # after "H100"
    data["power"]["utilization"] = {"Training": {"accelerator": 0.01, "cpu": 0.01}, **data["power"]["utilization"]}
    with pytest.raises(ValidationError, match="differ only in case"):
        PriceCatalog.model_validate(data)

    saved = PriceCatalog.model_validate(data, context={SAVED: True})
    assert saved.gpu_type_name("h100") == saved.gpu_type_name("H100") == "H100"  # a named type: the first spelling
    assert saved.utilization("training") == load_catalog().utilization("training")  # the key lookups reached
    twin = PriceCatalog.model_validate({**data, "gpu": {**data["gpu"], "default_type": "h100"}}, context={SAVED: True})
    assert twin.gpu.types[twin.gpu.default_type].hour == 1.0  # the default: its own spelling, as it was priced

    model = CostModel(load_catalog())
    model.fit(generate_job_records(300, seed=2), CostPredictorConfig(n_estimators=10, num_leaves=7), seed=0)
    model.save(tmp_path)
    spec = json.loads((tmp_path / MODEL_FILE).read_text())
    (tmp_path / MODEL_FILE).write_text(json.dumps({**spec, "catalog": data}))
    assert CostModel.load(tmp_path).catalog == saved


def test_a_job_is_charged_its_share_of_the_node_base_power(tmp_path):
    """The whole idle-server draw was charged to every job: a 1-core job paid as much base power as an 8-GPU one,
    and a job spanning two servers paid for one."""
    catalog = load_catalog()
    power = catalog.power
    assert (power.node_cores, power.node_accelerators) == (128, 8)
    base = power.base_watts(np.array([4.0, 12.0, 64.0, 192.0, 192.0]), np.array([0.0, 1.0, 8.0, 8.0, 16.0]))
    np.testing.assert_allclose(base, power.node_base_watts * np.array([4 / 128, 1 / 8, 1.0, 1.5, 2.0]))
    jobs = job_columns([CostQuery(resources=Resources(cpu_cores=4, memory_gb=16), duration_hours=1),
                        CostQuery(resources=Resources(cpu_cores=64, memory_gb=512, gpu_count=8, gpu_type="H100"),
                                  duration_hours=1, workload_type="training")])
    small, server = expected_power(jobs, catalog)
    assert small == pytest.approx(power.node_base_watts * 4 / 128 + 4 * power.per_core_watts * 0.5)
    assert server == pytest.approx(power.node_base_watts + 64 * power.per_core_watts * 0.5 + 8 * 700 * 0.85)

    data = catalog.model_dump(mode="json")
    del data["power"]["node_cores"], data["power"]["node_accelerators"]
    before = PriceCatalog.model_validate(data, context={SAVED: True})  # a model saved before the shares
    np.testing.assert_allclose(expected_power(jobs, before) - expected_power(jobs, catalog),
                               [power.node_base_watts * (1 - 4 / 128), 0.0])
    original = DEFAULT_CATALOG_PATH.read_text(encoding="utf-8")
    path = tmp_path / "prices.yaml"
    for edit, error in (("node_cores: 128", "node_cores: 0"),  # a size must be a whole number of at least 1
                        ("  node_cores: 128", "  # node_cores: 128")):  # one size alone left CPU-only jobs no base
        path.write_text(original.replace(edit, error), encoding="utf-8")
        with pytest.raises(CatalogError, match="node_cores"):
            load_catalog(path)


def test_a_coverage_the_calibration_split_is_too_small_for_is_refused_by_name():
    """Regression: 100 records leave 15 calibration scores, whose conformal margin at 95 % (19 needed) was the
    largest, covering 15/16 = 94 %."""
    records = generate_job_records(120, seed=2)
    config = CostPredictorConfig(n_estimators=5, num_leaves=7)
    with pytest.raises(ValueError, match=r"^need at least 124 job records at an interval coverage of 0.95, got 120$"):
        CostModel(load_catalog(), coverage=0.95).fit(records, config)
    CostModel(load_catalog(), coverage=0.95).fit(generate_job_records(124, seed=2), config)  # 19 scores
    CostModel(load_catalog(), coverage=0.8).fit(records, config)  # 18 scores: enough at 80 %
