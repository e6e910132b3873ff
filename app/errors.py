"""The one place where domain errors become HTTP answers.

Every error body has FastAPI's shape, `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`, so a
client finds the offending field the same way for pydantic's 422s and for ours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.power_api import MissingPowerHistory
from app.records import RecordNotFound
from core.actors import ActorUnavailable
from core.registry import ModelNotFoundError
from core.stores.base import StoreUnavailable
from training.power.inference import ForecastRequestError
from training.power.stored_history import NoStoredTelemetry, UnknownNode
from training.power.workload import WorkloadTelemetryMissing

logger = logging.getLogger("ray.serve")
MAX_BODY_BYTES = 4 * 1024 * 1024


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer: where and why."""

    detail: list[ErrorItem]


def responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI entries for the error statuses a route can answer."""
    reasons = {401: "missing or wrong API token", 404: "unknown id (model, batch, job or node)",
               413: "request body too large", 503: "model or dependency not available now"}
    return {status: {"model": ErrorBody, "description": reasons[status]} for status in statuses}


class ApiError(Exception):
    """An HTTP error with the field it is about."""

    def __init__(self, status: int, loc: list[str | int], message: str, kind: str = "value_error"):
        super().__init__(message)
        self.status, self.loc, self.message, self.kind = status, loc, message, kind


def error_body(loc: list[str | int], message: str, kind: str) -> dict:
    return {"detail": [{"loc": loc, "msg": message, "type": kind}]}


def unavailable(what: str, exc: BaseException) -> ApiError:
    """503 for a dependency (model replica, store) that cannot answer now; the cause goes to the log."""
    logger.warning("%s unavailable: %s", what, exc)
    return ApiError(503, [], f"{what} is not available right now: {type(exc).__name__}", "unavailable")


def _model_not_found(exc: ModelNotFoundError) -> ApiError:
    version = f" version {exc.version}" if exc.version is not None else ""
    logger.info("model lookup failed: %s", exc)  # the reason may name registry paths: log only
    return ApiError(404, ["path", "model_id"], f"model {exc.model_id!r}{version}: not found", "not_found")


def _store_unavailable(exc: StoreUnavailable) -> ApiError:
    if isinstance(exc, ActorUnavailable):  # the store client's own words: no addresses in them
        return ApiError(503, [], str(exc), "unavailable")
    return unavailable("the telemetry store", exc)  # a backend's message may hold its URL or path


# Domain error -> HTTP error, in one table. A subclass's entry wins over its base's (e.g. UnknownNode's over
# NoStoredTelemetry's); messages are the errors' own, written for people, never a traceback or an address.
DOMAIN_ERRORS: dict[type[Exception], Callable[[Any], ApiError]] = {
    ForecastRequestError: lambda exc: ApiError(422, ["body", exc.field], exc.message),
    MissingPowerHistory: lambda exc: ApiError(422, ["body", "features", "power_watts"], str(exc)),
    ModelNotFoundError: _model_not_found,
    RecordNotFound: lambda exc: ApiError(404, ["path"], str(exc), "not_found"),
    UnknownNode: lambda exc: ApiError(404, ["body", "node_id"], str(exc), "not_found"),
    NoStoredTelemetry: lambda exc: ApiError(503, ["body", "node_id"], str(exc), "unavailable"),
    WorkloadTelemetryMissing: lambda exc: ApiError(503, ["body", "workload_id"], str(exc), "unavailable"),
    StoreUnavailable: _store_unavailable,
    ActorUnavailable: lambda exc: ApiError(503, [], str(exc), "unavailable"),
}


def _render(exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(error_body(exc.loc, exc.message, exc.kind), status_code=exc.status, headers=headers)


def _handler(to_http: Callable[[Any], ApiError]) -> Callable[[Request, Exception], Any]:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return _render(to_http(exc))

    return handle


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Only location, message and type: echoing the input could hold NaN, which JSON cannot carry.
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": details}, status_code=422)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _render(exc)

    for kind, to_http in DOMAIN_ERRORS.items():  # Starlette picks the entry nearest along the error's MRO
        app.add_exception_handler(kind, _handler(to_http))


def install_body_limit(app: FastAPI, limit: int = MAX_BODY_BYTES) -> None:
    """413 for a declared body over `limit` bytes, before anything parses it."""

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return JSONResponse(error_body(["body"], f"request body over {limit} bytes", "too_large"), status_code=413)
        return await call_next(request)
