"""The cost route answers from the model in the ingress replica itself: one hop, no handle call (issue 12)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.access import Access
from app.ingress import api
from app.replica import serving_replica
from deployments.cost import ServedCostModel
from training.cost.catalog import UnknownGpuType, generate_job_records, load_catalog
from training.cost.model import CostModel
from training.settings import CostPredictorConfig

REQUEST = {"resources": {"cpu_cores": 16, "memory_gb": 128, "gpu_count": 2, "gpu_type": "A100-80GB"},
           "duration_hours": 6, "workload_type": "training"}


class NoHandle:
    """The CostPredictor deployment's handle: the route must not need it."""

    def __getattr__(self, name):
        raise AssertionError(f"the cost route called the CostPredictor deployment ({name})")


class InProcess:
    def __init__(self, model: CostModel):
        self.model, self.queries = model, []

    async def predict(self, query):
        self.queries.append(query)
        return self.model.predict(query)


@pytest.fixture(scope="module")
def model() -> CostModel:
    fitted = CostModel()
    fitted.fit(generate_job_records(400, seed=2), CostPredictorConfig(n_estimators=10, num_leaves=7))
    return fitted


@pytest.fixture
def replica(model):
    class Replica:
        access = Access(None)  # reads are open without a token
        cost = NoHandle()
        cost_model = InProcess(model)

    api.dependency_overrides[serving_replica] = lambda: Replica
    yield Replica
    api.dependency_overrides.clear()


def test_the_cost_route_uses_the_model_in_its_replica(replica, http, model):
    response = http(api).post("/api/v1/predict/cost", json=REQUEST)
    assert response.status_code == 200, response.text
    [query] = replica.cost_model.queries
    assert response.json() == model.predict(query).model_dump(mode="json")


def test_a_failing_model_is_503(replica, http):
    async def broken(query):
        raise RuntimeError("no model loaded")

    replica.cost_model.predict = broken
    response = http(api).post("/api/v1/predict/cost", json=REQUEST)
    assert response.status_code == 503 and "the cost model" in response.text


def test_no_cost_model_loaded_is_503_saying_so_and_how_to_train_one(replica, http):
    """Review: the body said "the cost model is not available right now: RuntimeError", as for any passing failure,
    where no version could be loaded at all; why (with the model's path) stays in the log."""
    from deployments.cost import CostModelNotLoaded

    async def unloaded(query):
        raise CostModelNotLoaded("no cost model loaded: /srv/models/cost_gbm/3/cost_model.json: cannot load")

    replica.cost_model.predict = unloaded
    replica.args = SimpleNamespace(cost_model_id="cost_gbm_eu", power_model_id="power_lstm")
    response = http(api).post("/api/v1/predict/cost", json=REQUEST)
    assert response.status_code == 503, response.text
    message = response.json()["detail"][0]["msg"]
    assert "no version of the cost model cost_gbm_eu could be loaded" in message
    assert "training.train_gbm --model-id cost_gbm_eu) or activate one that loads" in message
    assert "/srv" not in response.text


def test_a_gpu_type_the_active_model_cannot_price_is_422_naming_the_field(replica, http):
    async def refuses(query):
        raise UnknownGpuType("A100-80GB", load_catalog())

    replica.cost_model.predict = refuses
    response = http(api).post("/api/v1/predict/cost", json=REQUEST)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "resources", "gpu_type"] and "'A100-80GB'" in detail["msg"]
    assert "the one the active cost model was trained with" in detail["msg"]


def test_the_cost_models_metrics_report_the_copy_that_answers_the_route(replica, http):
    replica.args = SimpleNamespace(cost_model_id="cost_gbm", power_model_id="power_lstm")
    held_out = SimpleNamespace(version=3, model_type="lightgbm", metrics={"mae": 1.5})
    replica.registry = SimpleNamespace(get=lambda model_id: (None, held_out))
    served = ServedCostModel(model_version="cost_gbm/3", latency_ms={"p50": 2.5, "count": 4})
    replica.cost_model.describe = lambda: served
    response = http(api).get("/api/v1/models/cost_gbm/metrics")  # the NoHandle deployment is never asked
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["served_version"], body["inference_latency_ms"]) == ("cost_gbm/3", {"p50": 2.5, "count": 4})


def test_the_cost_models_metrics_are_those_of_the_version_the_route_serves(replica, http):
    """Regression (review): with version 3 active but unloadable, the route served 2 and the answer named 2 beside
    3's held-out figures."""
    replica.args = SimpleNamespace(cost_model_id="cost_gbm", power_model_id="power_lstm")
    versions = {3: SimpleNamespace(version=3, model_type="lightgbm", metrics={"mae": 1.5}),
                2: SimpleNamespace(version=2, model_type="lightgbm", metrics={"mae": 2.5})}
    replica.registry = SimpleNamespace(get=lambda model_id, version=None: (None, versions[version or 3]))
    replica.cost_model.describe = lambda: ServedCostModel(model_version="cost_gbm/2", latency_ms={})
    body = http(api).get("/api/v1/models/cost_gbm/metrics").json()
    assert (body["served_version"], body["version"], body["held_out"]) == ("cost_gbm/2", 2, {"mae": 2.5})


def test_a_gpu_type_is_not_checked_against_the_catalog_file_but_by_the_model(replica, http):
    """The request was checked against configs/prices.yaml as it is now: a type the active model can price but the
    edited file dropped was refused at the door (and the file's new default type imposed on untyped requests)."""
    seen = []

    async def prices(query):
        seen.append(query.resources.gpu_type)
        raise UnknownGpuType(query.resources.gpu_type, load_catalog())

    replica.cost_model.predict = prices
    body = {**REQUEST, "resources": {**REQUEST["resources"], "gpu_count": 1, "gpu_type": "Retired-GPU"}}
    assert http(api).post("/api/v1/predict/cost", json=body).status_code == 422
    untyped = {**REQUEST, "resources": {k: v for k, v in REQUEST["resources"].items() if k != "gpu_type"}}
    http(api).post("/api/v1/predict/cost", json={**untyped, "resources": {**untyped["resources"], "gpu_count": 1}})
    assert seen == ["Retired-GPU", None]  # the model decides, in its own catalog


def test_a_job_shorter_than_a_second_is_422_naming_duration_hours(replica, http):
    """Regression: 5e-324 h took a log of zero and was priced at 0 with an interval of [0, 0]."""
    response = http(api).post("/api/v1/predict/cost", json={**REQUEST, "duration_hours": 5e-324})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "duration_hours"]


@pytest.mark.parametrize("field", ["cpu_cores", "memory_gb"])
def test_resources_under_a_millicore_or_a_megabyte_are_422_naming_the_field(replica, http, field):
    """Regression: 5e-324 cores and GB were priced at 0 with an interval of [0, 0] and a confidence of 0.71."""
    body = {**REQUEST, "resources": {**REQUEST["resources"], "gpu_count": 0, "gpu_type": None, field: 5e-324}}
    response = http(api).post("/api/v1/predict/cost", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "resources", field]
    at_the_floor = {**body, "resources": {**body["resources"], field: 0.001}}
    assert http(api).post("/api/v1/predict/cost", json=at_the_floor).status_code == 200
