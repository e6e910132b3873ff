"""ApiIngress: the REST API (DESIGN.md §4) as a Ray Serve FastAPI ingress.

HTTP in, schemas validated, calls to the predictor deployments through handles, HTTP out. No model code.
"""


import asyncio
import hmac
import logging
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import AwareDatetime, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from app import tasks
from app.config import AppArgs, read_api_token
from app.errors import ApiError, install_body_limit, install_error_handlers, responses, unavailable
from app.power_api import to_history
from app.power_endpoint import POWER_ROUTE, power_api
from app.records import RecordStore
from app.schemas import (
    BatchRequest,
    BatchStatus,
    CostPredictionRequest,
    CostPredictionResponse,
    Health,
    ModelMetricsResponse,
    ModelPublic,
    ModelsResponse,
    ModelVersionPublic,
    RetrainJob,
    RetrainRequest,
    ScalingEventsResponse,
    ScalingPoliciesResponse,
    TelemetryNode,
    TelemetryNodesResponse,
)
from autoscaler.actor import ControllerUnavailable, RemoteController, start_controller
from autoscaler.policy_config import policies_from_config, policy_from
from autoscaler.schema import ScalingPolicy
from collectors.store_actor import RemoteStore
from collectors.supervisor import start_telemetry
from core.registry import ModelRegistry
from core.registry_metadata import MODEL_ID_PATTERN
from core.stores.base import StoreUnavailable

logger = logging.getLogger("ray.serve")

api = FastAPI(
    title="kcloud-opt-predictor",
    version="0.1.0",
    description="Power forecasts with calibrated intervals, job cost estimates, and model management.",
)
install_error_handlers(api)
install_body_limit(api)


def _openapi_with_power_route() -> dict:
    """The ingress's OpenAPI plus the power route, which PowerEndpoint serves one hop away."""
    if api.openapi_schema is None:
        schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
        power = power_api.openapi()
        schema["paths"][POWER_ROUTE] = power["paths"]["/"]
        schema.setdefault("components", {}).setdefault("schemas", {}).update(power["components"]["schemas"])
        api.openapi_schema = schema
    return api.openapi_schema


api.openapi = _openapi_with_power_route


def _batch_status(record: dict) -> BatchStatus:
    return BatchStatus(batch_id=record["id"], status=record["status"], created_at=record["created_at"],
                       updated_at=record["updated_at"], items=record["items_count"], completed=record["completed"],
                       results=record.get("results", []), error=record.get("error"))


def _job(record: dict) -> RetrainJob:
    return RetrainJob(job_id=record["id"], status=record["status"], model_id=record["model_id"],
                      created_at=record["created_at"], updated_at=record["updated_at"],
                      registered_version=record.get("registered_version"), message=record.get("message"))


@serve.ingress(api)
class ApiIngress:
    """HTTP front of the app; holds handles to CostPredictor and (in the power app) PowerPredictor."""

    def __init__(self, cost: DeploymentHandle, args: AppArgs):
        self.args = args
        self.cost = cost
        self.model_path = args.model_path or args.with_absolute_paths().model_path
        self.state_path = args.state_path
        self.registry = ModelRegistry(self.model_path)
        self.batches = RecordStore(self.state_path, "batches")
        self.jobs = RecordStore(self.state_path, "retrain")
        self.token = read_api_token(args.api_token_file)
        if self.token is None:
            logger.warning("ApiIngress: no API token configured (API_TOKEN / API_TOKEN_FILE): "
                           "mutating endpoints are open to every client")
        self._resume_interrupted_work()
        config = args.service_config()
        self.store = RemoteStore()
        self.stale_after_s = float(config.telemetry.stale_after)
        self.controller = RemoteController()
        self.scaling_defaults = config.auto_scaling
        if args.autoscaler.enabled:
            policies_from_config(config, args.config_path or "config")  # refuse a bad file early
            start_controller(args.controller_settings())
        if args.telemetry.enabled:
            telemetry = args.telemetry
            start_telemetry(config, selected=telemetry.sources,
                            replay=telemetry.replay.model_dump() if telemetry.replay else None,
                            store_settings=telemetry.store_settings)

    def _app_name(self) -> str:
        return serve.get_replica_context().app_name

    @property
    def power(self) -> DeploymentHandle:
        """PowerPredictor lives in its own application (see app/power_endpoint.py)."""
        return serve.get_deployment_handle("PowerPredictor", app_name=self.args.power_app_name)

    def _resume_interrupted_work(self) -> None:
        for record in self.batches.unfinished(("pending", "running")):
            tasks.run_batch.remote(self.state_path, record["id"], self._app_name(), self.args.power_app_name)
        for record in self.jobs.unfinished(("pending", "running")):
            self.jobs.update(record["id"], status="failed", message="interrupted by an app restart; submit again")

    def _authorize(self, authorization: str | None) -> None:
        if self.token is None:
            return
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip(), self.token):
            raise ApiError(401, ["header", "authorization"], "a valid 'Authorization: Bearer <token>' is required",
                           "unauthorized")

    @api.get("/healthz", response_model=Health)
    async def healthz(self) -> Health:
        """Liveness of the API."""
        return Health()

    @api.post("/api/v1/predict/cost", response_model=CostPredictionResponse, responses=responses(413, 503))
    async def predict_cost(self, request: CostPredictionRequest) -> CostPredictionResponse:
        """Estimate the cost of a resource request, with breakdown and interval."""
        try:
            estimate = await self.cost.predict.remote(request)
        except Exception as exc:  # noqa: BLE001
            raise unavailable("the cost model", exc) from exc
        return CostPredictionResponse.model_validate(estimate.model_dump())

    @api.post("/api/v1/predict/batch", response_model=BatchStatus, status_code=202, responses=responses(413))
    async def submit_batch(self, request: BatchRequest) -> BatchStatus:
        """Queue many power/cost requests; read the results back by batch id."""
        for index, item in enumerate(request.items):
            if item.type == "power":
                try:
                    to_history(item.request)
                except ApiError as exc:
                    raise ApiError(422, ["body", "items", index, "request", *exc.loc[1:]],
                                   "batch items need their recent power history in features.power_watts") from exc
        record = self.batches.create({
            "status": "pending", "items_count": len(request.items), "completed": 0, "results": [],
            "items": [item.model_dump(mode="json") for item in request.items],
        })
        tasks.run_batch.remote(self.state_path, record["id"], self._app_name(), self.args.power_app_name)
        return _batch_status(record)

    @api.get("/api/v1/predict/batch/{batch_id}", response_model=BatchStatus, responses=responses(404))
    async def get_batch(self, batch_id: str) -> BatchStatus:
        """Status of a batch and, once done, every item's result or error."""
        return _batch_status(self.batches.get(batch_id))

    @api.get("/api/v1/models", response_model=ModelsResponse)
    async def list_models(self) -> ModelsResponse:
        """Registered models, their versions and which one is active."""
        models = []
        for model_id in self.registry.model_ids():
            active = self.registry.active_version(model_id)
            versions = [self.registry.get(model_id, v)[1] for v in self.registry.versions(model_id)]
            models.append(ModelPublic(
                model_id=model_id, model_type=versions[-1].model_type,
                active_version=active if active is not None else versions[-1].version,
                versions=[ModelVersionPublic(
                    version=m.version, created_at=m.created_at, metrics=m.metrics,
                    active=m.version == (active if active is not None else versions[-1].version),
                    data_span=m.data_span.model_dump(mode="json") if m.data_span else None,
                ) for m in versions],
            ))
        return ModelsResponse(models=models)

    @api.get("/api/v1/models/{model_id}/metrics", response_model=ModelMetricsResponse, responses=responses(404))
    async def model_metrics(
        self, model_id: Annotated[str, Path(pattern=MODEL_ID_PATTERN, description="e.g. power_lstm")]
    ) -> ModelMetricsResponse:
        """Held-out accuracy of the active version and live inference latency."""
        _, metadata = self.registry.get(model_id)
        served, latency = None, {}
        handle = {self.args.power_model_id: self.power, self.args.cost_model_id: self.cost}.get(model_id)
        if handle is not None:
            try:
                description = await handle.describe.remote()
                served, latency = description["model_version"], description["latency_ms"]
            except Exception as exc:  # noqa: BLE001 - metrics still answer without the live part
                logger.warning("latency of %s unavailable: %s", model_id, exc)
        return ModelMetricsResponse(model_id=model_id, version=metadata.version, model_type=metadata.model_type,
                                    held_out=metadata.metrics, served_version=served, inference_latency_ms=latency)

    @api.get("/api/v1/telemetry/nodes", response_model=TelemetryNodesResponse, responses=responses(503))
    async def telemetry_nodes(self) -> TelemetryNodesResponse:
        """Nodes with stored telemetry, their latest power and its age."""
        try:
            latest = await asyncio.to_thread(self.store.latest)
        except StoreUnavailable as exc:
            raise unavailable("the telemetry store", exc) from exc
        return TelemetryNodesResponse(nodes=[
            TelemetryNode(node_id=n.node_id, timestamp=n.timestamp, power_watts=n.power_watts,
                          age_seconds=round(n.age_s, 1), stale=n.age_s > self.stale_after_s) for n in latest])

    async def _controller(self, method: str, *call_args):
        try:
            return await asyncio.to_thread(self.controller.call, method, *call_args)
        except ControllerUnavailable as exc:
            hint = "" if self.args.autoscaler.enabled else " (enable it with args.autoscaler.enabled)"
            raise ApiError(503, [], f"{exc}{hint}", "unavailable") from exc

    @api.get("/api/v1/scaling/policies", response_model=ScalingPoliciesResponse, responses=responses(503))
    async def list_policies(self) -> ScalingPoliciesResponse:
        """Every scaling policy, by name."""
        return ScalingPoliciesResponse(policies=await self._controller("policies"))

    @api.post("/api/v1/scaling/policies", response_model=ScalingPolicy, status_code=200,
              responses={201: {"model": ScalingPolicy, "description": "created"}, **responses(401, 413, 503)},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/ScalingPolicy"}}}}})
    async def put_policy(self, body: Annotated[dict[str, Any], Body()], response: Response,
                         authorization: str | None = Header(None)) -> ScalingPolicy:
        """Create (201) or replace (200) a policy by name. Keys left out take the config file's
        `auto_scaling` defaults; invalid combinations are refused with the reason (422)."""
        self._authorize(authorization)
        try:  # validated once, after the merge: a partial section is checked against the config's defaults
            policy = policy_from(body, self.scaling_defaults)
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
        created = await self._controller("put_policy", policy)
        response.status_code = 201 if created else 200
        return policy

    @api.get("/api/v1/scaling/policies/{name}", response_model=ScalingPolicy, responses=responses(404, 503))
    async def get_policy(self, name: Annotated[str, Path(max_length=63)]) -> ScalingPolicy:
        """One policy."""
        policy = await self._controller("policy", name)
        if policy is None:
            raise ApiError(404, ["path", "name"], f"no scaling policy named {name!r}", "not_found")
        return policy

    @api.delete("/api/v1/scaling/policies/{name}", status_code=204, responses=responses(401, 404, 503))
    async def delete_policy(self, name: Annotated[str, Path(max_length=63)],
                            authorization: str | None = Header(None)) -> Response:
        """Delete a policy (its past events stay)."""
        self._authorize(authorization)
        if not await self._controller("delete_policy", name):
            raise ApiError(404, ["path", "name"], f"no scaling policy named {name!r}", "not_found")
        return Response(status_code=204)

    @api.get("/api/v1/scaling/events", response_model=ScalingEventsResponse, responses=responses(503))
    async def scaling_events(
        self,
        policy: Annotated[str | None, Query(max_length=63, description="only this policy's events")] = None,
        since: Annotated[AwareDatetime | None, Query(description="only events at or after this time")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> ScalingEventsResponse:
        """Scaling decisions, holds included, newest first."""
        return ScalingEventsResponse(events=await self._controller("events", policy, since, limit))

    @api.post("/api/v1/models/retrain", response_model=RetrainJob, status_code=202,
              responses=responses(401, 413))
    async def retrain(self, request: RetrainRequest, authorization: str | None = Header(None)) -> RetrainJob:
        """Start a Ray Train retraining job; the new version is promoted only if it beats the active one."""
        self._authorize(authorization)
        data = request.data or self.args.retrain.data
        if data is None:
            raise ApiError(422, ["body", "data"], "no training data given and none configured (args.retrain.data)")
        argv = ["--data", data, "--model-id", request.model_id, "--model-path", self.model_path, "--quiet",
                "--num-workers", str(self.args.retrain.num_workers),
                "--cpus-per-worker", str(self.args.retrain.cpus_per_worker)]
        if self.args.config_path:
            argv += ["--config", self.args.config_path]
        if self.args.retrain.use_gpu:
            argv.append("--use-gpu")
        if request.prediction_horizon:
            argv += ["--horizon", request.prediction_horizon]
        if request.epochs:
            argv += ["--epochs", str(request.epochs)]
        record = self.jobs.create({"status": "pending", "model_id": request.model_id})
        tasks.run_retrain.remote(self.state_path, record["id"], request.model_id, self.model_path, argv)
        return _job(record)

    @api.get("/api/v1/models/retrain/{job_id}", response_model=RetrainJob, responses=responses(404))
    async def retrain_status(self, job_id: str) -> RetrainJob:
        """Status of a retraining job and the version it registered."""
        return _job(self.jobs.get(job_id))
