"""CostPredictor: the active LightGBM cost model, following the registry.

It is the Serve deployment that prediction batches use, and the main ingress holds one in process for
`POST /api/v1/predict/cost` (app/ingress_state.py): a prediction takes under a millisecond, less than a
handle call to another replica, so the route answers in one hop like the power route. Concurrent calls are
priced together (`@serve.batch`, no waiting): most of a prediction is the fixed cost of its seven LightGBM
calls, so a batch of 8 costs about a quarter of a query each.
"""

from __future__ import annotations

import logging
import time

from pydantic import BaseModel, ConfigDict
from ray import serve

from core.registry import ModelRegistry
from deployments.latency import LatencyRecorder
from deployments.registry_follower import RegistryFollower
from training.cost.catalog import UnknownGpuType
from training.cost.jobs import NONE
from training.cost.model import CostModel
from training.cost.schema import CostEstimate, CostQuery

logger = logging.getLogger("ray.serve")
REGISTRY_POLL_S = 10.0


class CostModelNotLoaded(RuntimeError):
    """No version of the cost model could be loaded (the log says why): nothing to price with."""


class ServedCostModel(BaseModel):
    """What a CostPredictor replica serves, and its live latency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_version: str | None  # None while no version is loaded
    latency_ms: dict[str, float | int]


def price_batch(model: CostModel, queries: list[CostQuery]) -> list[CostEstimate | ValueError]:
    """Every query's estimate in one model call; a query naming a GPU type the model's catalog lacks (whatever its
    count) gets UnknownGpuType without costing the others a call each; when the model refuses another, each is
    priced alone, so only that one gets its reason instead of an estimate."""
    refused = {i: UnknownGpuType(query.resources.gpu_type, model.catalog) for i, query in enumerate(queries)
               if _unknown_type(model, query)}
    priceable = [query for i, query in enumerate(queries) if i not in refused]
    try:
        estimates = iter(model.predict_many(priceable))
    except ValueError:
        estimates = iter([_price_alone(model, query) for query in priceable])
    return [refused[i] if i in refused else next(estimates) for i in range(len(queries))]


def _unknown_type(model: CostModel, query: CostQuery) -> bool:
    """A named GPU type the model's catalog lacks ("none" only without GPUs)."""
    name = query.resources.gpu_type
    if name is None or (name.lower() == NONE and query.resources.gpu_count == 0):
        return False
    return model.catalog.gpu_type_name(name) is None


def _price_alone(model: CostModel, query: CostQuery) -> CostEstimate | ValueError:
    try:
        return model.predict_many([query])[0]
    except ValueError as exc:
        return exc


class CostPredictor(RegistryFollower):
    """Serve replica holding one CostModel; follows the registry's active version."""

    def __init__(self, model_path: str, model_id: str = "cost_gbm"):
        self.registry = ModelRegistry(model_path)
        self.model_id = model_id
        self.latency = LatencyRecorder(model_id)
        self.version: int | None = None
        self.model: CostModel | None = None
        # none loads: the ingress's own copy (no health check) answers /predict/cost with a 503 until a version
        # does; as a deployment, its health check fails with the reason
        self._unloadable = self._load_default()
        self._start_following(lambda: REGISTRY_POLL_S)

    def _load(self, version: int | None) -> None:
        folder, metadata = self.registry.get(self.model_id, version)
        model = CostModel.load(folder, model_version=f"{self.model_id}/{metadata.version}")
        model.synthetic = metadata.trained_on_synthetic_data
        self.model = model
        if self.version != metadata.version:
            self.latency.restart()  # describe() reports the version it names
        self.version = metadata.version
        logger.info("CostPredictor: serving %s version %d", self.model_id, metadata.version)

    async def predict(self, query: CostQuery) -> CostEstimate:
        """Price one job: breakdown, interval and confidence (priced together with concurrent calls)."""
        estimate = await self._batched(query)
        if isinstance(estimate, Exception):
            raise estimate
        return estimate

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _batched(self, queries: list[CostQuery]) -> list[CostEstimate | ValueError]:
        if self.model is None:
            raise CostModelNotLoaded(f"no cost model loaded: {self._unloadable}")
        started = time.perf_counter()
        estimates = price_batch(self.model, queries)
        self.latency.record((time.perf_counter() - started) * 1000.0, count=len(queries))
        return estimates

    def describe(self) -> ServedCostModel:
        version = None if self.version is None else f"{self.model_id}/{self.version}"
        return ServedCostModel(model_version=version, latency_ms=self.latency.percentiles())

    def check_health(self) -> None:
        if self.model is None:
            raise CostModelNotLoaded(f"no cost model loaded: {self._unloadable}")
