"""The route that lists the nodes with stored telemetry."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from app.access import READ
from app.errors import responses
from app.ingress_state import Ingress
from app.schemas import TelemetryNode, TelemetryNodesResponse

router = APIRouter()


@router.get("/api/v1/telemetry/nodes", response_model=TelemetryNodesResponse, dependencies=[READ],
            responses=responses(401, 503))
async def telemetry_nodes(replica: Ingress) -> TelemetryNodesResponse:
    """Nodes with stored telemetry, their latest power and its age."""
    latest = await asyncio.to_thread(replica.store.latest)  # StoreUnavailable: 503 (app/errors.py)
    return TelemetryNodesResponse(nodes=[
        TelemetryNode(node_id=n.node_id, timestamp=n.timestamp, power_watts=n.power_watts,
                      age_seconds=round(n.age_s, 1), stale=n.age_s > replica.stale_after_s) for n in latest])
