"""Routes of the scaling controller: policies and the decisions it recorded (autoscaler/actor.py runs it)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, ValidationError

from app.access import READ, WRITE
from app.errors import ApiError, responses
from app.ingress_state import Ingress, IngressState
from app.schemas import ScalingEventsResponse, ScalingPoliciesResponse
from autoscaler.policy_config import policy_from
from autoscaler.schema import ScalingEvent, ScalingPolicy
from autoscaler.state import policy_tag
from core.public_text import without_addresses

router = APIRouter()
PolicyName = Annotated[str, Path(max_length=63)]


async def _controller(replica: IngressState, method: str, *call_args: Any) -> Any:
    """The controller actor's answer; ActorUnavailable (503, app/errors.py) when it is not there."""
    return await replica.controller.call_async(method, *call_args)


def _no_policy(name: str) -> ApiError:
    return ApiError(404, ["path", "name"], f"no scaling policy named {name!r}", "not_found")


@router.get("/api/v1/scaling/policies", response_model=ScalingPoliciesResponse, dependencies=[READ],
            responses=responses(401, 503))
async def list_policies(replica: Ingress) -> ScalingPoliciesResponse:
    """Every scaling policy, by name, and the stored ones that no longer validate (with the reason)."""
    stored = await _controller(replica, "stored_policies")
    return ScalingPoliciesResponse(policies=stored.policies, invalid=[
        entry.model_copy(update={"reason": without_addresses(entry.reason)}) for entry in stored.invalid])


@router.post("/api/v1/scaling/policies", response_model=ScalingPolicy, status_code=200, dependencies=[WRITE],
             responses={201: {"model": ScalingPolicy, "description": "created"},
                        **responses(400, 401, 403, 409, 412, 413, 415, 503)},
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/ScalingPolicy"}}}}})
async def put_policy(body: Annotated[dict[str, Any], Body()], response: Response, replica: Ingress,
                     if_match: Annotated[str | None, Header(max_length=64)] = None) -> ScalingPolicy:
    """Create (201) or replace (200) a policy by name. Keys left out take the config file's
    `auto_scaling` defaults; invalid combinations are refused with the reason (422). With `If-Match` (the ETag a GET
    answered, or `*`: any), only the policy as it was read is replaced: 412 when it changed or is gone since."""
    try:  # validated once, after the merge: a partial section is checked against the config's defaults
        policy = policy_from(body, replica.scaling_defaults)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    created = await _controller(replica, "put_policy", policy, _entity_tag(if_match))
    response.status_code = 201 if created else 200
    response.headers["ETag"] = f'"{policy_tag(policy)}"'
    return policy


def _entity_tag(header: str | None) -> str | None:
    """The tag an If-Match header names ("*", or one quoted tag); 400 naming the header for anything else."""
    if header is None or header.strip() == "*":
        return None if header is None else "*"
    tag = header.strip()
    if len(tag) < 3 or tag[0] != '"' or tag[-1] != '"' or '"' in tag[1:-1] or "," in tag:
        raise ApiError(400, ["header", "if-match"], 'give one ETag as a GET answered it, quoted ("..."), or *')
    return tag[1:-1]


@router.get("/api/v1/scaling/policies/{name}", response_model=ScalingPolicy, dependencies=[READ],
            responses=responses(401, 404, 409, 503))
async def get_policy(name: PolicyName, replica: Ingress, response: Response) -> ScalingPolicy:
    """One policy, its version in the ETag header (for a POST's If-Match); 409 with the reason when the stored
    policy no longer validates."""
    stored = await _controller(replica, "stored_policy", name)
    if isinstance(stored, ScalingPolicy):
        response.headers["ETag"] = f'"{policy_tag(stored)}"'
        return stored
    if stored is not None:
        raise ApiError(409, ["path", "name"], f"stored policy {name!r} no longer validates "
                       f"({without_addresses(stored.reason)}); replace it (POST) or delete it", "conflict")
    raise _no_policy(name)


@router.delete("/api/v1/scaling/policies/{name}", status_code=204, dependencies=[WRITE],
               responses=responses(401, 403, 404, 503))
async def delete_policy(name: PolicyName, replica: Ingress) -> Response:
    """Delete a policy (its past events stay)."""
    if not await _controller(replica, "delete_policy", name):
        raise _no_policy(name)
    return Response(status_code=204)


@router.get("/api/v1/scaling/events", response_model=ScalingEventsResponse, dependencies=[READ],
            responses=responses(401, 503))
async def scaling_events(
    replica: Ingress,
    policy: Annotated[str | None, Query(min_length=1, max_length=63, description="only this policy's events")] = None,
    since: Annotated[AwareDatetime | None, Query(description="only events at or after this time")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="only events older than this one: the "
                                           "next page, from the last page's next_before_id")] = None,
) -> ScalingEventsResponse:
    """Scaling decisions, holds included, newest first (addresses and paths in their reasons cut out: the
    controller's log keeps them), a page of at most `limit`; `next_before_id` pages on while older ones match."""
    events, next_before_id = await _controller(replica, "events_page", policy, since, limit, before_id)
    return ScalingEventsResponse(events=[_public(event) for event in events], next_before_id=next_before_id)


def _public(event: ScalingEvent) -> ScalingEvent:
    actuation = event.actuation.model_copy(update={"detail": without_addresses(event.actuation.detail)})
    return event.model_copy(update={"reason": without_addresses(event.reason), "actuation": actuation})
