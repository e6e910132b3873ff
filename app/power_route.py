"""The HTTP route of the power forecast, served by the PowerPredictor replicas themselves.

`POST /api/v1/predict/power` is the hot path. Serve's proxy sends it straight to the PowerPredictor
replicas (the `kcloud-power` application at that route prefix), instead of ingress -> handle -> predictor:
one hop, like `/healthz`. The main ingress documents the route in its OpenAPI and reaches the same
replicas through a handle for batches. This module adds only HTTP around deployments/power.py: the route,
and `PowerRoute`, the PowerPredictor with the API's access rules (a forecast is a read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

from fastapi import Depends, FastAPI

from app.access import READ, Access, TokenBeforeBody
from app.errors import install_error_handlers, responses
from app.middleware import install_middleware
from app.power_api import has_feature_lists, stored_nodes, to_history, to_response
from app.replica import serving_replica
from app.schemas import PowerPredictionRequest, PowerPredictionResponse
from app.settings import AppArgs
from core.durations import parse_duration
from core.forecasts import ForecastRequestError
from core.stores.base import StoreUnavailable
from deployments.power import PowerPredictor
from training.power.stored_history import PowerStopped, UnknownNode

power_api = FastAPI(title="kcloud-opt-predictor power forecasts", version="0.1.0")
install_error_handlers(power_api)
install_middleware(power_api, before_body=[TokenBeforeBody])


class PowerRoute(PowerPredictor):
    """The power application's deployment: a PowerPredictor that also knows who may read its forecasts."""

    def __init__(self, args: AppArgs, stale_after_s: float, workloads: Mapping[str, Sequence[str]],
                 resolutions: Sequence[str] = ()):
        self.access = Access.from_args(args)
        super().__init__(args.model_path, args.power_model_id, stale_after_s, workloads, resolutions=resolutions)


class _ServeAtPrefix:
    """Answer the route prefix itself (`.../power`, no trailing slash) without a redirect."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == scope.get("root_path", ""):
            scope = {**scope, "path": scope["path"] + "/"}
        await self.app(scope, receive, send)


power_api.add_middleware(_ServeAtPrefix)


@power_api.post("/", response_model=PowerPredictionResponse, summary="Predict Power", dependencies=[READ],
                responses=responses(401, 404, 413, 415, 503))
async def predict_power(request: PowerPredictionRequest,
                        replica: Annotated[PowerPredictor, Depends(serving_replica)]) -> PowerPredictionResponse:
    """Forecast power for every step of the horizon, with interval and confidence, by the served model of the
    finest step whose horizon covers `prediction_horizon` (GET /api/v1/models lists each one's step and horizon).

    With a `node_id`, a `power_watts` list shorter than the model's window is completed at the front from that
    node's stored telemetry (`store_filled_steps`). Without `features.power_watts`, the window comes from stored
    telemetry: the `node_id`'s, or, for a
    `workload_id` listed in the config's `workloads`, each of its nodes' (their forecasts are summed). Without
    those (or for a `node_id` the store does not know, or a store that cannot answer now), its power is estimated
    from the request's other features (`history_source`: features_only).
    """
    nodes = stored_nodes(request, replica.workloads)
    if nodes is None:
        history = to_history(request)
        if request.node_id is None or not history.power_watts:
            return to_response(request, await replica.forecast(history))
        forecast, from_store = await replica.forecast_filled(history, request.node_id)
        return to_response(request, forecast).model_copy(update={"store_filled_steps": from_store})
    try:
        stored = await replica.forecast_stored(
            nodes, parse_duration(request.prediction_horizon), step_s=request.step_s,
            workload_type=request.features.workload_type if request.features else None,
            workload_id=request.workload_id if request.node_id is None else None)
    except (UnknownNode, PowerStopped, StoreUnavailable) as unknown:
        if not has_feature_lists(request):  # nothing to estimate its power from: the missing power is the answer
            raise
        try:
            return to_response(request, await replica.forecast(to_history(request)))
        except ForecastRequestError:  # e.g. a model without the features-only mode
            raise unknown from None
    return to_response(request, stored.forecast).model_copy(update={
        "history_source": "store", "data_age_seconds": round(stored.age_s, 1), "stale": stored.stale,
        "nodes": nodes if request.node_id is None else None})

