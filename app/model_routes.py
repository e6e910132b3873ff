"""Routes that show the registered models and how the served ones perform (retraining: app/ingress.py)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path

from app.access import READ
from app.errors import responses
from app.ingress_state import Ingress
from app.schemas import ModelMetricsResponse, ModelPublic, ModelsResponse, ModelVersionPublic
from core.registry_metadata import MODEL_ID_PATTERN

logger = logging.getLogger("ray.serve")
router = APIRouter()


@router.get("/api/v1/models", response_model=ModelsResponse, dependencies=[READ], responses=responses(401))
async def list_models(replica: Ingress) -> ModelsResponse:
    """Registered models, their versions and which one is active."""
    registry = replica.registry
    models = []
    for model_id in registry.model_ids():
        active = registry.active_version(model_id)
        versions = [registry.get(model_id, v)[1] for v in registry.versions(model_id)]
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


@router.get("/api/v1/models/{model_id}/metrics", response_model=ModelMetricsResponse, dependencies=[READ],
            responses=responses(401, 404))
async def model_metrics(
    model_id: Annotated[str, Path(pattern=MODEL_ID_PATTERN, description="e.g. power_lstm")], replica: Ingress
) -> ModelMetricsResponse:
    """Held-out accuracy of the active version and live inference latency."""
    _, metadata = replica.registry.get(model_id)
    served, latency = None, {}
    handle = {replica.args.power_model_id: replica.power, replica.args.cost_model_id: replica.cost}.get(model_id)
    if handle is not None:
        try:
            description = await handle.describe.remote()  # ServedModel or ServedCostModel
            served, latency = description.model_version, description.latency_ms
        except Exception as exc:  # noqa: BLE001 - metrics still answer without the live part
            logger.warning("latency of %s unavailable: %s", model_id, exc)
    return ModelMetricsResponse(model_id=model_id, version=metadata.version, model_type=metadata.model_type,
                                held_out=metadata.metrics, served_version=served, inference_latency_ms=latency)
