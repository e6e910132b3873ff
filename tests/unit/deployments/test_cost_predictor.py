"""CostPredictor's batches: concurrent estimates are priced in one model call, and a query the model refuses
fails alone (Serve gives a batch function's exception to every request of the batch)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import deployments.cost as cost_module
from core.registry import ModelRegistry
from deployments.cost import CostPredictor, price_batch
from deployments.latency import LatencyRecorder
from training.cost.catalog import UnknownGpuType, generate_job_records, load_catalog
from training.cost.model import CostModel
from training.cost.schema import CostQuery, Resources
from training.settings import CostPredictorConfig


def query(gpus: int, gpu_type: str | None = None) -> CostQuery:
    return CostQuery(resources=Resources(cpu_cores=8, memory_gb=64, gpu_count=gpus, gpu_type=gpu_type),
                     duration_hours=4)


@pytest.fixture(scope="module")
def t4_only_model() -> CostModel:
    """A model whose saved catalog has only the T4, while configs/prices.yaml has more types."""
    model = CostModel()
    model.fit(generate_job_records(400, seed=3), CostPredictorConfig(n_estimators=10, num_leaves=7))
    data = load_catalog().model_dump()
    data["gpu"] = {"default_type": "T4", "types": {"T4": data["gpu"]["types"]["T4"]}}
    model.catalog = type(load_catalog()).model_validate(data)
    return model


class CountingModel:
    """The model, counting its calls; it refuses a job of 13 hours (as it would any query it cannot price)."""

    def __init__(self, model: CostModel):
        self.model, self.calls, self.catalog = model, [], model.catalog

    def predict_many(self, queries):
        self.calls.append(len(queries))
        if any(q.duration_hours == 13 for q in queries):
            raise ValueError("cannot price a 13-hour job")
        return self.model.predict_many(queries)


def test_a_batch_is_priced_in_one_model_call(t4_only_model):
    queries = [query(0), query(1, "T4"), query(2, "T4")]
    counting = CountingModel(t4_only_model)
    estimates = price_batch(counting, queries)
    assert counting.calls == [3]
    assert [e.predicted_cost for e in estimates] == [t4_only_model.predict_many([q])[0].predicted_cost
                                                      for q in queries]


def test_a_gpu_type_the_models_catalog_lacks_fails_alone_without_a_call_per_query(t4_only_model):
    """Requests are no longer checked against the catalog file: anyone could send "gpu_type": "X" and make every
    concurrent request of the batch be priced alone. A made-up type without GPUs is refused too."""
    good, refused, none_but_named, other = query(1, "T4"), query(2, "H100"), query(0, "Voodoo2"), query(0)
    counting = CountingModel(t4_only_model)
    priced, failed, failed_too, priced_too = price_batch(counting, [good, refused, none_but_named, other])
    assert counting.calls == [2]
    assert priced.predicted_cost == t4_only_model.predict_many([good])[0].predicted_cost
    assert priced_too.predicted_cost == t4_only_model.predict_many([other])[0].predicted_cost
    assert isinstance(failed, UnknownGpuType) and "'H100'" in str(failed)
    assert isinstance(failed_too, UnknownGpuType) and "'Voodoo2'" in str(failed_too)
    counting.calls.clear()
    no_type, gpus_of_none = query(0, "none"), query(2, "none")  # "none" names no type only without GPUs
    priced, failed = price_batch(counting, [no_type, gpus_of_none])
    assert counting.calls == [1] and isinstance(failed, UnknownGpuType)


def test_a_query_the_model_refuses_fails_alone_and_the_others_are_priced(t4_only_model):
    good, refused, other = query(1, "T4"), query(2, "T4").model_copy(update={"duration_hours": 13}), query(0)
    counting = CountingModel(t4_only_model)
    priced, failed, priced_too = price_batch(counting, [good, refused, other])
    assert counting.calls == [3, 1, 1, 1]  # the batch, then each query alone
    assert priced.predicted_cost == t4_only_model.predict_many([good])[0].predicted_cost
    assert priced_too.predicted_cost == t4_only_model.predict_many([other])[0].predicted_cost
    assert isinstance(failed, ValueError) and "13-hour" in str(failed)


def test_describe_s_latency_is_the_served_version_s_alone(monkeypatch, t4_only_model):
    """Regression: after a new version loaded, describe() named it with the former version's latency figures."""
    monkeypatch.setattr(cost_module.CostModel, "load", lambda folder, model_version: t4_only_model)
    version = {"value": 1}
    replica = object.__new__(CostPredictor)
    replica.model_id, replica.version, replica.latency = "cost_gbm", None, LatencyRecorder("cost_gbm")
    replica.registry = SimpleNamespace(get=lambda model_id, wanted: (
        None, SimpleNamespace(version=version["value"], trained_on_synthetic_data=False)))
    replica._load(None)
    replica.latency.record(40.0, count=2)
    replica._load(None)  # the same version again: its figures stay
    assert replica.latency.requests == 2
    version["value"] = 2
    replica._load(None)
    assert replica.describe().model_version == "cost_gbm/2"
    assert replica.describe().latency_ms == {"calls": 0, "requests": 0}


def test_an_estimate_says_when_its_model_learned_from_generated_jobs(tmp_path, t4_only_model):
    """Regression (review): `make run`'s cost model learns from 8,000 jobs generated from the catalog, and its
    answers looked like quotes; only the model list said so."""
    registry = ModelRegistry(tmp_path / "models")
    for synthetic in (True, False):
        t4_only_model.save(tmp_path / "folder")
        registry.publish("cost_gbm", tmp_path / "folder", model_type="lightgbm", training={"synthetic_data": synthetic})
    replica = object.__new__(CostPredictor)
    replica.model_id, replica.version, replica.latency = "cost_gbm", None, LatencyRecorder("cost_gbm")
    replica.registry = registry
    for version, synthetic in ((1, True), (2, False)):
        replica._load(version)
        assert [e.trained_on_synthetic_data for e in price_batch(replica.model, [query(1, "T4")])] == [synthetic]


def test_a_replica_without_a_loadable_version_says_so_to_every_request_and_its_health_check(tmp_path):
    """The ingress's own copy answers POST /predict/cost with a 503 naming the cause (app/predict_routes.py) only
    when it raises CostModelNotLoaded, as it does on an empty registry."""
    import asyncio

    async def on_an_empty_registry():
        replica = CostPredictor(str(tmp_path / "models"))
        with pytest.raises(cost_module.CostModelNotLoaded):
            replica.check_health()
        with pytest.raises(cost_module.CostModelNotLoaded):  # the batch function, as Serve calls it in a replica
            await CostPredictor._batched.__wrapped__(replica, [query(1, "T4")])
        replica._follower.cancel()

    asyncio.run(on_an_empty_registry())
