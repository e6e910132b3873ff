"""PowerEndpoint: the PowerPredictor deployment with its own HTTP route, for one hop per forecast.

`POST /api/v1/predict/power` is the hot path. Serve's proxy sends it straight to the PowerPredictor
replicas (an application of its own at that route prefix), instead of ingress -> handle -> predictor:
one hop, like `/healthz`. The main ingress documents the route in its OpenAPI and reaches the same
replicas through a handle for batches.
"""

from fastapi import FastAPI
from ray import serve

from app.errors import install_body_limit, install_error_handlers, responses
from app.power_api import to_history, to_response
from app.schemas import PowerPredictionRequest, PowerPredictionResponse
from deployments.power import PowerPredictor

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

    @power_api.post("/", response_model=PowerPredictionResponse, summary="Predict Power", responses=responses(413, 503))
    async def predict_power(self, request: PowerPredictionRequest) -> PowerPredictionResponse:
        """Forecast power for every step of the horizon, with interval and confidence."""
        return to_response(request, await self.forecast(to_history(request)))
