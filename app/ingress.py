"""ApiIngress: the REST API (docs/architecture.md, REST API) as a Ray Serve FastAPI ingress.

HTTP in, schemas validated, calls to the predictor deployments through handles, HTTP out. No model code.
Routes live by concern (app/predict_routes.py, model_routes.py, telemetry_routes.py, scaling_routes.py)
and reach the replica through `app.ingress_state.Ingress`; retraining is here. The power forecast is served
one hop away (app/power_route.py); the actors behind the API are started by app/bootstrap.py.
"""

# No `from __future__ import annotations` here: Serve pickles the route methods below by value (while the
# class is being decorated), and FastAPI must still resolve their annotations in the replica.

import asyncio
import logging
from contextlib import suppress
from typing import Annotated

from fastapi import FastAPI, Path, Query
from fastapi.openapi.utils import get_openapi
from pydantic import ValidationError
from ray import serve

from app import model_routes, predict_routes, scaling_routes, telemetry_routes
from app.access import READ, WRITE, TokenBeforeBody
from app.errors import ApiError, document_validation_errors, install_error_handlers, responses
from app.ingress_state import IngressState
from app.middleware import install_middleware
from app.power_route import power_api
from app.schemas import Health, RetrainJob, RetrainJobsResponse, RetrainRequest
from core.names import POWER_ROUTE_PREFIX
from core.registry_metadata import MODEL_ID_PATTERN

logger = logging.getLogger(__name__)
api = FastAPI(
    title="kcloud-opt-predictor",
    version="0.1.0",
    description="Power forecasts with calibrated intervals, job cost estimates, and model management.",
)
install_error_handlers(api)
install_middleware(api, before_body=[TokenBeforeBody])


def _openapi_with_power_route() -> dict:
    """The ingress's OpenAPI plus the power route, which the PowerPredictor serves one hop away."""
    if api.openapi_schema is None:
        schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
        power = power_api.openapi()
        schema["paths"][POWER_ROUTE_PREFIX] = power["paths"]["/"]
        for kind, entries in power["components"].items():  # schemas, and security schemes if it has any
            schema.setdefault("components", {}).setdefault(kind, {}).update(entries)
        api.openapi_schema = document_validation_errors(schema)
    return api.openapi_schema


api.openapi = _openapi_with_power_route


@api.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness of the API."""
    return Health()


for _routes in (predict_routes, model_routes, telemetry_routes, scaling_routes):  # the OpenAPI keeps this order
    api.include_router(_routes.router)


def _job(record: dict) -> RetrainJob:
    """A stored attempt as the API shows it. Raises ApiError (503): one that does not validate (written by another
    version of the service or of train_lstm sharing the state folder)."""
    try:
        return RetrainJob.model_validate({**record, "job_id": record["id"]})
    except ValidationError as exc:
        logger.warning("retrain attempt %s: its record does not validate: %s", record.get("id"), exc)
        raise ApiError(503, [], f"attempt {record.get('id')}'s record was written by another version of the service "
                                "and does not read as this one's", "unavailable") from None


def _jobs(records: list[dict]) -> list[RetrainJob]:
    """The stored attempts that validate (one that does not is logged and left out, as scaling events are)."""
    jobs = []
    for record in records:
        with suppress(ApiError):
            jobs.append(_job(record))
    return jobs


@serve.ingress(api)
class ApiIngress(IngressState):
    """HTTP front of the app (routes above); holds a handle to CostPredictor and reaches PowerPredictor."""

    @api.post("/api/v1/models/retrain", response_model=RetrainJob, status_code=202, dependencies=[WRITE],
              responses=responses(401, 403, 409, 413, 415, 503))
    async def retrain(self, request: RetrainRequest) -> RetrainJob:
        """Start retraining a model, one attempt at a time per model: the power forecaster (Ray Train) on a CSV
        in the server's args.retrain.data_dir (default: args.retrain.data) or on the telemetry store
        (`"source": "store"`); the cost model on a jobs CSV there (default: args.retrain.cost_data) or on jobs
        generated from the price catalog. The new version is promoted only if its MAE is no higher than the active
        one's on the same held-out data, and it answers every request the active one answers."""
        return _job(await asyncio.to_thread(self.retrains.submit, request))  # file reads and a flock: off the loop

    @api.get("/api/v1/models/retrain", response_model=RetrainJobsResponse, dependencies=[READ],
             responses=responses(401, 503))
    async def retrain_jobs(
        self,
        model_id: Annotated[str | None, Query(pattern=MODEL_ID_PATTERN, description="only this model's")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> RetrainJobsResponse:
        """Every retraining attempt, newest first: the API's jobs and the scheduler's (trigger "interval" or
        "degradation"), each with its data, the scores of both versions and the decision."""
        records = await asyncio.to_thread(self.retrains.newest, model_id, limit)  # a folder scan: off the loop
        return RetrainJobsResponse(jobs=_jobs(records))

    @api.get("/api/v1/models/retrain/{job_id}", response_model=RetrainJob, dependencies=[READ],
             responses=responses(401, 404, 503))
    async def retrain_status(self, job_id: Annotated[str, Path(max_length=64)]) -> RetrainJob:
        """One retraining attempt: its status, the version it registered and the decision."""
        return _job(await asyncio.to_thread(self.retrains.get, job_id))
