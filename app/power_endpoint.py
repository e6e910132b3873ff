"""PowerEndpoint: the PowerPredictor deployment with its own HTTP route, for one hop per forecast.

`POST /api/v1/predict/power` is the hot path. Serve's proxy sends it straight to the PowerPredictor
replicas (an application of its own at that route prefix), instead of ingress -> handle -> predictor:
one hop, like `/healthz`. The main ingress documents the route in its OpenAPI and reaches the same
replicas through a handle for batches.
"""

import asyncio

from fastapi import FastAPI
from ray import serve

from app.errors import ApiError, install_body_limit, install_error_handlers, responses
from app.power_api import stored_nodes, sum_forecasts, to_history, to_response
from app.schemas import PowerPredictionRequest, PowerPredictionResponse
from collectors.store_actor import RemoteStore
from core.durations import parse_duration
from core.stores.base import StoreUnavailable
from deployments.power import PowerPredictor
from training.power.stored_history import NoStoredTelemetry, StoredHistory, UnknownNode, stored_history

POWER_ROUTE = "/api/v1/predict/power"

power_api = FastAPI(title="kcloud-opt-predictor power forecasts", version="0.1.0")
install_error_handlers(power_api)
install_body_limit(power_api)


class _ServeAtPrefix:
    """Answer the route prefix itself (`.../power`, no trailing slash) without a redirect."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == scope.get("root_path", ""):
            scope = {**scope, "path": scope["path"] + "/"}
        await self.app(scope, receive, send)


power_api.add_middleware(_ServeAtPrefix)


@serve.ingress(power_api)
class PowerEndpoint(PowerPredictor):
    """PowerPredictor plus the HTTP route of the power forecast."""

    def __init__(self, model_path: str, model_id: str = "power_lstm", stale_after_s: float = 120.0,
                 workloads: dict[str, list[str]] | None = None):
        super().__init__(model_path, model_id)
        self.stale_after_s = stale_after_s
        self.workloads = workloads or {}
        self.store = RemoteStore()

    @power_api.post("/", response_model=PowerPredictionResponse, summary="Predict Power",
                    responses=responses(404, 413, 503))
    async def predict_power(self, request: PowerPredictionRequest) -> PowerPredictionResponse:
        """Forecast power for every step of the horizon, with interval and confidence.

        Without `features.power_watts`, the window comes from stored telemetry: the `node_id`'s, or, for a
        `workload_id` listed in the config's `workloads`, each of its nodes' (their forecasts are summed).
        """
        nodes = stored_nodes(request, self.workloads)
        if nodes is None:
            return to_response(request, await self.forecast(to_history(request)))
        stored = [await asyncio.to_thread(self._stored_history, request, node) for node in nodes]
        forecasts = await asyncio.gather(*(self.forecast(s.history) for s in stored))
        age = max(s.age_s for s in stored)
        response = to_response(request, sum_forecasts(forecasts))
        return response.model_copy(update={"history_source": "store", "data_age_seconds": round(age, 1),
                                           "stale": age > self.stale_after_s,
                                           "nodes": nodes if request.node_id is None else None})

    def _stored_history(self, request: PowerPredictionRequest, node_id: str) -> StoredHistory:
        """The model's window for the node, ending at its newest stored sample."""
        forecaster = self._require()
        try:
            return stored_history(self.store, node_id, step_s=forecaster.pipeline.step_s,
                                  sequence_length=forecaster.sequence_length,
                                  horizon_s=parse_duration(request.prediction_horizon),
                                  workload_type=request.features.workload_type if request.features else None)
        except NoStoredTelemetry as exc:
            if request.node_id is None:  # a node of a configured workload: the data is missing, not the id
                raise ApiError(503, ["body", "workload_id"], f"{exc} (workload {request.workload_id!r})",
                               "unavailable") from exc
            if isinstance(exc, UnknownNode):
                raise ApiError(404, ["body", "node_id"], str(exc), "not_found") from exc
            raise ApiError(503, ["body", "node_id"], str(exc), "unavailable") from exc
        except StoreUnavailable as exc:
            raise ApiError(503, [], f"telemetry store not available: {exc}", "unavailable") from exc
