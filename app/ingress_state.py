"""What the main ingress replica holds for its routes: registry, records, clients, access rules, config defaults."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends
from ray import serve
from ray.serve.handle import DeploymentHandle

from app.access import Access
from app.batch_queue import BatchQueueClient
from app.replica import serving_replica
from app.retrain_jobs import RetrainJobs, ServedModels
from app.settings import AppArgs
from autoscaler.actor import controller_client
from core.handle_loop import deployment_handle
from core.names import POWER_DEPLOYMENT
from core.records import RecordStore
from core.registry import ModelRegistry
from core.stores.remote import RemoteStore
from deployments.cost import CostPredictor

logger = logging.getLogger("ray.serve")


class IngressState:
    """The ingress replica's state; routes reach it as `replica: Ingress`."""

    def __init__(self, cost: DeploymentHandle, args: AppArgs):
        self.args = args
        self.cost = cost
        self.model_path = args.model_path or args.with_absolute_paths().model_path
        self.state_path = args.state_path
        self.registry = ModelRegistry(self.model_path)
        self.cost_model = CostPredictor(self.model_path, args.cost_model_id)  # the cost route's: one hop, no handle
        self.access = Access.from_args(args)
        self.batches = RecordStore(self.state_path, "batches", retention_s=args.batches.retention)
        self.batch_queue = BatchQueueClient(self.state_path, args.batches, self.app_name(), args.power_app_name)
        self.batch_queue.start()  # batches an earlier run left unfinished resume through the queue
        config = args.service_config()
        served = ServedModels(power=tuple(dict.fromkeys([args.power_model_id, *(
            r.model_id for r in config.predictor.resolutions)])), cost=args.cost_model_id)
        self.retrains = RetrainJobs(self.state_path, self.model_path, args.config_path, args.retrain, served)
        self.retrains.fail_stopped()
        self.store = RemoteStore()
        self.stale_after_s = float(config.telemetry.stale_after)
        self.controller = controller_client(hint="" if args.autoscaler.enabled
                                            else " (enable it with args.autoscaler.enabled)")
        self.scaling_defaults = config.auto_scaling

    def app_name(self) -> str:
        return serve.get_replica_context().app_name

    async def power(self) -> DeploymentHandle:
        """PowerPredictor lives in its own application (see app/power_route.py)."""
        return await deployment_handle(POWER_DEPLOYMENT, self.args.power_app_name)


Ingress = Annotated[IngressState, Depends(serving_replica)]
