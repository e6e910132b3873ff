"""What the main ingress replica holds for its routes: registry, records, clients, token, config defaults."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import Depends
from ray import serve
from ray.serve.handle import DeploymentHandle

from app import tasks
from app.errors import ApiError
from app.records import RecordStore
from app.replica import serving_replica
from app.settings import AppArgs, read_api_token
from autoscaler.actor import controller_client
from core.names import POWER_DEPLOYMENT
from core.registry import ModelRegistry
from core.stores.remote import RemoteStore

logger = logging.getLogger("ray.serve")


class IngressState:
    """The ingress replica's state; routes reach it as `replica: Ingress`."""

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
        self.controller = controller_client(hint="" if args.autoscaler.enabled
                                            else " (enable it with args.autoscaler.enabled)")
        self.scaling_defaults = config.auto_scaling

    def app_name(self) -> str:
        return serve.get_replica_context().app_name

    @property
    def power(self) -> DeploymentHandle:
        """PowerPredictor lives in its own application (see app/power_route.py)."""
        return serve.get_deployment_handle(POWER_DEPLOYMENT, app_name=self.args.power_app_name)

    def start_batch(self, batch_id: str) -> None:
        tasks.run_batch.remote(self.state_path, batch_id, self.app_name(), self.args.power_app_name)

    def _resume_interrupted_work(self) -> None:
        for record in self.batches.unfinished(("pending", "running")):
            self.start_batch(record["id"])
        for record in self.jobs.unfinished(("pending", "running")):
            self.jobs.update(record["id"], status="failed", message="interrupted by an app restart; submit again")

    def authorize(self, authorization: str | None) -> None:
        """401 unless the request carries the configured bearer token (no token configured: open)."""
        if self.token is None:
            return
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip(), self.token):
            raise ApiError(401, ["header", "authorization"], "a valid 'Authorization: Bearer <token>' is required",
                           "unauthorized")


Ingress = Annotated[IngressState, Depends(serving_replica)]
