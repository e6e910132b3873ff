"""Routes that show the registered models and how the served ones perform (retraining: app/ingress.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path

from app.access import READ
from app.errors import responses
from app.ingress_state import Ingress, IngressState
from app.schemas import ModelLiveAccuracy, ModelMetricsResponse, ModelPublic, ModelsResponse, ModelVersionPublic
from core.actors import ActorUnavailable
from core.durations import format_duration
from core.registry import ActivePointerUnreadable, ModelRegistry, ModelUnreadable, NoActiveVersion
from core.registry_metadata import MODEL_ID_PATTERN, ModelMetadata

logger = logging.getLogger("ray.serve")
DESCRIBE_TIMEOUT_S = 10.0  # the power app's describe, for the live latency figures: the metrics answer without it
PIN_TIMEOUT_S = 2.0  # the same, for the version the default power model is pinned to: the list answers without it
router = APIRouter()


@router.get("/api/v1/models", response_model=ModelsResponse, dependencies=[READ], responses=responses(401))
async def list_models(replica: Ingress) -> ModelsResponse:
    """Registered models, their versions, which one is active and which one is served (the pinned one, if any);
    power models with the step, horizon and window of the served version (a forecast goes to the finest step whose
    horizon covers it) and whether it was trained on generated data."""
    registry = replica.registry
    serve_latest = {replica.args.power_model_id, replica.args.cost_model_id}
    served = await _served_by_power_app(replica, replica.args.power_model_id, PIN_TIMEOUT_S)
    pins = {replica.args.power_model_id: _version_number(served.model_version)} if served and served.pinned else {}
    return await asyncio.to_thread(_models, registry, serve_latest, pins)  # every version's metadata read: off the loop


async def _served_by_power_app(replica: IngressState, model_id: str, timeout_s: float) -> Any:
    """What the power app serves of `model_id` (its version and latency), or None when it does not answer."""
    async def describe() -> Any:
        return await (await replica.power()).describe.remote(model_id)

    try:
        return await asyncio.wait_for(describe(), timeout_s)
    except Exception as exc:  # noqa: BLE001 - the answer goes on without it
        logger.warning("what the power app serves of %s is unavailable: %s", model_id, exc)
        return None


def _version_number(model_version: str) -> int | None:
    """3 of "power_lstm/3" (None for a version not from the registry)."""
    number = model_version.rpartition("/")[2]
    return int(number) if number.isdigit() else None


def _served_metadata(registry: ModelRegistry, model_id: str, serve_latest: bool) -> tuple[Any, ModelMetadata]:
    """The served version's folder and metadata, as `_models` takes it (another power resolution: only an activated
    version; NoActiveVersion, a 404, before one is)."""
    if serve_latest:
        return registry.get(model_id)
    active = registry.active_version(model_id)
    if active is None:
        registry.get(model_id)  # an unknown model is its own 404
        raise NoActiveVersion(model_id, reason="no version activated yet (a resolution other than the default is "
                                               "served only once one is)")
    return registry.get(model_id, active)


def _models(registry: ModelRegistry, serve_latest: set[str],
            pins: dict[str, int | None] | None = None) -> ModelsResponse:
    """Every model with its versions. The active one: the ACTIVE pointer's, else the latest for the models in
    `serve_latest` (the default power model and the cost model) unless the pointer says none is active, else none
    (the other power resolutions are served only once a version is activated). The served one: the version a model
    is pinned to in the power app (`pins`: `user_config.model_version`), else the active one."""
    models = []
    for model_id in registry.model_folders():
        try:
            versions = registry.version_metadata(model_id)  # one read each; a version pruned meanwhile is left out
        except ModelUnreadable as exc:  # a storage error just now: the other models are listed all the same
            logger.warning("models listing: %s left out: %s", model_id, exc)
            continue
        if not versions:
            continue
        try:
            active = (registry.served_version(model_id, [m.version for m in versions]) if model_id in serve_latest
                      else registry.active_version(model_id))
        except ActivePointerUnreadable as exc:  # the others are listed all the same; this one as not known
            logger.warning("models listing: %s", exc)
            active = None
        readable = {m.version: m for m in versions}  # an active version whose metadata broke is not listed
        fallback = versions[-1].version if model_id in serve_latest and active is not None else None
        shown = active if active in readable else fallback
        pinned = (pins or {}).get(model_id)
        served = pinned if pinned in readable else shown
        models.append(ModelPublic(
            model_id=model_id, model_type=versions[-1].model_type, active_version=shown, served_version=served,
            versions=[ModelVersionPublic(
                version=m.version, created_at=m.created_at, metrics=m.metrics, active=m.version == shown,
                data_span=m.data_span.model_dump(mode="json") if m.data_span else None,
            ) for m in versions],
            **(_resolution(readable[served]) if served is not None else {}),
        ))
    return ModelsResponse(models=models)


def _resolution(metadata: ModelMetadata) -> dict[str, Any]:
    """Step, horizon and window of a power model's version (none for other models), and its data's provenance."""
    spec = metadata.feature_spec
    synthetic = metadata.trained_on_synthetic_data
    if not {"step_s", "horizon_steps"} <= set(spec):
        return {"trained_on_synthetic_data": synthetic}
    return {"step_seconds": spec["step_s"], "horizon_seconds": spec["step_s"] * spec["horizon_steps"],
            "sequence_length": spec.get("sequence_length"), "trained_on_synthetic_data": synthetic}


@router.get("/api/v1/models/{model_id}/metrics", response_model=ModelMetricsResponse, dependencies=[READ],
            responses=responses(401, 404, 503))
async def model_metrics(
    model_id: Annotated[str, Path(pattern=MODEL_ID_PATTERN, description="e.g. power_lstm")], replica: Ingress
) -> ModelMetricsResponse:
    """Held-out accuracy of the version served (as GET /api/v1/models says: the active one, or the latest for the
    default power model and the cost model), live inference latency, and live accuracy: the scaling controller's
    forecasts scored against the power measured since (null with `live_reason` when none)."""
    serve_latest = model_id in (replica.args.power_model_id, replica.args.cost_model_id)
    _, metadata = await asyncio.to_thread(_served_metadata, replica.registry, model_id, serve_latest)
    served, latency = None, {}
    if model_id == replica.args.cost_model_id:  # the cost route's own copy answers POST /predict/cost
        description = replica.cost_model.describe()
        served, latency = description.model_version, description.latency_ms
    elif metadata.model_type == "lstm" and (forecaster := await _served_by_power_app(replica, model_id,
                                                                                      DESCRIBE_TIMEOUT_S)):
        served, latency = forecaster.model_version, forecaster.latency_ms
    number = None if served is None else _version_number(served)
    if number is not None and number != metadata.version:  # pinned, or an older one loaded in its place: its own
        try:
            _, metadata = await asyncio.to_thread(replica.registry.get, model_id, number)
        except Exception as exc:  # noqa: BLE001 - the registry's served version's figures, as before
            logger.warning("metadata of the served %s unavailable: %s", served, exc)
    live, live_reason = await _live(replica, model_id)
    return ModelMetricsResponse(model_id=model_id, version=metadata.version, model_type=metadata.model_type,
                                held_out=metadata.metrics, served_version=served, inference_latency_ms=latency,
                                live=live, live_reason=live_reason)


async def _live(replica: IngressState, model_id: str) -> tuple[ModelLiveAccuracy | None, str | None]:
    """The model's live scores from the scaling controller, or None and why."""
    if model_id == replica.args.cost_model_id:
        return None, "live accuracy is measured for the power forecaster the scaling controller uses"
    try:
        report = await replica.controller.call_async("live_accuracy")
    except ActorUnavailable as exc:
        return None, f"no live accuracy: {exc}"
    except Exception as exc:  # noqa: BLE001 - e.g. a controller of an older version: the rest still answers
        logger.warning("live accuracy of %s unavailable: %s", model_id, exc)
        return None, "no live accuracy: the scaling controller could not report it"
    versions = [v for v in report.versions if v.model_version.rpartition("/")[0] == model_id]
    if not versions:
        return None, (f"no forecast of {model_id} scored in the last {format_duration(report.window_s)}: the "
                      "scaling controller scores its predictive policies' forecasts as their telemetry arrives")
    return ModelLiveAccuracy(window_s=report.window_s, hit_tolerance=report.hit_tolerance,
                             pending_forecasts=report.pending_forecasts, evicted_forecasts=report.evicted_forecasts,
                             versions=versions), None
